"""The JSON response models of POST /v1/score (usher2.service.responses)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from usher2.service.responses import RLE, ScoreResponse

NOT_SCORED = {
    "request_id": "0123456789abcdef",
    "probability": None,
    "label": None,
    "threshold": 0.5,
    "flags": ["no_lesion"],
    "error": "empty predicted mask",
    "mask_uncertainty": None,
    "mask_area_px": None,
    "mask_png": None,
    "mask_rle": None,
    "heatmap_png": None,
    "overlay_png": "iVBORw0KGgo=",
    "frame": {"height": 96, "width": 112, "index": 0, "spacing_mm": None},
    "model": {"name": None, "version": None, "sha256": "0" * 64},
    "timings": {"total_s": 0.25},
}


def test_a_frame_without_a_lesion_is_a_valid_response():
    r = ScoreResponse.model_validate(NOT_SCORED)
    assert r.probability is None and r.frame.width == 112 and r.model.sha256 == "0" * 64


def test_the_rle_is_column_major_by_default():
    rle = RLE(size=[2, 3], counts=[1, 4, 1])
    assert rle.order == "F" and sum(rle.counts) == 2 * 3


@pytest.mark.parametrize("missing", ["overlay_png", "frame", "model", "timings"])
def test_a_required_field_cannot_be_left_out(missing):
    with pytest.raises(ValidationError, match=missing):
        ScoreResponse.model_validate({k: v for k, v in NOT_SCORED.items() if k != missing})


def test_the_schema_documents_the_images():
    props = ScoreResponse.model_json_schema()["properties"]
    assert "255 on the lesion" in props["mask_png"]["description"]
    assert "0 outside the ROI box" in props["heatmap_png"]["description"]
