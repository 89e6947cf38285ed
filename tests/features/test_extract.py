"""The frame level (usher2.features.extract): one frame prepared, one chunk of cases.

The cohort run is tested in ``test_cohort.py``, the settings in ``test_config.py``, the column subsets in
``test_subset.py``; ``from usher2.features.extract import X`` still gives every name the module held before.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import usher2.features.extract as extract
from usher2.features.config import ID_COLUMNS, ExtractConfig
from usher2.io.errors import InputError

#: Lesion radiomics only: quick, no network.
PARAMS = {"imageType": {"Original": {}}, "setting": {"binWidth": 8}}
CFG = ExtractConfig(params=PARAMS, backbones=(), regions=("lesion",))


def _frame() -> tuple[np.ndarray, np.ndarray]:
    px = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    m = np.zeros((64, 64), bool)
    m[20:40, 16:48] = True
    return px, m


def test_the_names_it_held_before_the_split_are_still_importable():
    from usher2.features import cohort, config, masks, perturb, regions

    assert extract.extract_cohort is cohort.extract_cohort and extract.ExtractConfig is config.ExtractConfig
    assert extract.predicted_masks is masks.predicted_masks and extract.contour_error is perturb.contour_error
    assert extract.region_masks is regions.region_masks
    assert all(hasattr(extract, name) for name in extract.__all__)


def test_prepare_pixels_keeps_a_given_mask_and_names_a_missing_or_empty_one():
    px, m = _frame()
    out = extract.prepare_pixels(CFG, px, m)
    assert out["pixels"] is px and out["mask"] is m and np.isnan(out["uncertainty"])
    with pytest.raises(InputError, match="--masks predicted"):
        extract.prepare_pixels(CFG, px, None, where="case x")
    with pytest.raises(InputError, match="at least one lesion pixel"):
        extract.prepare_pixels(CFG, px, np.zeros_like(m))


def test_extract_chunk_gives_a_row_per_good_case_and_a_failure_per_bad_one(tmp_path: Path):
    px, m = _frame()
    cv2.imwrite(str(tmp_path / "a.png"), (px * 255).astype(np.uint8))
    cv2.imwrite(str(tmp_path / "a_mask.png"), m.astype(np.uint8) * 255)
    cases = [
        {"case_id": "a", "patient_id": "p", "label": 1, "image_path": str(tmp_path / "a.png"),
         "mask_path": str(tmp_path / "a_mask.png")},
        {"case_id": "gone", "patient_id": "q", "label": 0, "image_path": str(tmp_path / "gone.png"),
         "mask_path": None},
    ]  # fmt: skip
    out = extract.extract_chunk(CFG, cases)
    assert [r["case_id"] for r in out["rows"]] == ["a"] and out["perturbations"] == []
    row = out["rows"][0]
    assert list(row)[:6] == ID_COLUMNS[:6] and row["mask_area_px"] == int(m.sum())
    assert row["radiomics_original_shape2D_PixelSurface"] == pytest.approx(m.sum())
    assert [(f["case_id"], f["stage"]) for f in out["failures"]] == [("gone", "features")]
