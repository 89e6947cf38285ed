"""The scoring adapter (usher2.service.scoring): upload -> scorer -> the response's fields and encodings."""

from __future__ import annotations

import asyncio
import base64
import threading
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from usher2.io.limits import PixelLimits
from usher2.service.api_errors import ApiError
from usher2.service.backpressure import Runner
from usher2.service.responses import ScoreResponse
from usher2.service.rle import rle_decode
from usher2.service.scoring import UploadScorer, png_b64, result_fields
from usher2.service.settings import make_settings

INFO = {"name": "stand-in", "version": "1", "sha256": "ab" * 32, "clinical": ["age"], "clinical_ranges": {}}


def _decode(b64: str) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB) if arr.ndim == 3 else arr


def _png_bytes(h: int, w: int, value: int) -> bytes:
    return cv2.imencode(".png", np.full((h, w), value, np.uint8))[1].tobytes()


def _result(mask: np.ndarray | None, heat: np.ndarray | None, **kw: Any) -> SimpleNamespace:
    fields = {
        "probability": 0.75,
        "label": 1,
        "threshold": 0.5,
        "flags": lambda: ["clinical_missing"],
        "error": None,
        "mask_uncertainty": 0.125,
        "pixels": None,
        "mask": mask,
        "heat": heat,
        "no_lesion": False,
        "seconds": {"prepare": 0.5, "model": 0.25},
    }
    return SimpleNamespace(**{**fields, **kw})


class StandIn:
    """Returns a fixed result and records the frames it saw."""

    def __init__(self, result: SimpleNamespace) -> None:
        self.model_info = INFO
        self.result = result
        self.frames: list[Any] = []

    def score_frame(self, frame: Any, clinical: Any = None) -> SimpleNamespace:
        self.frames.append((frame, clinical))
        return self.result


def test_png_round_trip_keeps_grey_values_and_rgb_order():
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    assert np.array_equal(_decode(png_b64(grey)), grey)
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red stays red: the BGR swap is undone on the way out
    assert np.array_equal(_decode(png_b64(rgb)), rgb)


def test_png_of_an_unsupported_dtype_names_shape_and_dtype():
    with pytest.raises((RuntimeError, cv2.error)):
        png_b64(np.zeros((2, 2), np.complex64))


def test_fields_of_a_scored_frame():
    mask = np.zeros((16, 20), bool)
    mask[4:10, 5:12] = True  # 6 x 7 = 42 pixels
    heat = np.zeros((16, 20))
    heat[4:10, 5:12] = 0.5
    frame = SimpleNamespace(pixels=np.full((16, 20), 0.2, np.float32), shape=(16, 20), index=0, spacing=(0.1, 0.2))
    out = result_fields(_result(mask, heat), frame, {"name": "m", "version": "1", "sha256": "0" * 64})
    assert out["mask_area_px"] == 42 and np.array_equal(rle_decode(out["mask_rle"]), mask)
    assert np.array_equal(_decode(out["mask_png"]), np.where(mask, 255, 0).astype(np.uint8))
    assert set(np.unique(_decode(out["heatmap_png"]))) == {0, 128}  # round(255 * 0.5) = 128
    assert _decode(out["overlay_png"]).shape == (16, 20, 3)
    assert out["frame"] == {"height": 16, "width": 20, "index": 0, "spacing_mm": [0.1, 0.2]}
    assert out["flags"] == ["clinical_missing"] and out["mask_uncertainty"] == 0.125


def test_fields_of_a_frame_without_a_lesion():
    pixels = np.full((10, 12), 0.2, np.float32)
    frame = SimpleNamespace(pixels=pixels, shape=(10, 12), index=3, spacing=None)
    r = _result(None, None, probability=None, label=None, no_lesion=True, mask_uncertainty=float("nan"))
    out = result_fields(r, frame, {})
    assert out["mask_png"] is out["mask_rle"] is out["heatmap_png"] is out["mask_area_px"] is None
    assert out["mask_uncertainty"] is None  # NaN never reaches the JSON
    assert np.array_equal(_decode(out["overlay_png"]), np.full((10, 12, 3), 51, np.uint8))  # round(0.2 * 255)


def _score(adapter: UploadScorer, data: bytes, clinical: Any = None) -> dict[str, Any]:
    runner = Runner(make_settings(20, 64, "", 2, 4))
    try:
        return asyncio.run(runner.run(lambda ticket: adapter.score_upload(ticket, data, 0, clinical, False)))
    finally:
        runner.pool.shutdown(wait=True)
        adapter.batcher.close()


def test_score_upload_reads_scores_and_times():
    scorer = StandIn(_result(None, None, probability=None, label=None, no_lesion=True, flags=lambda: ["no_lesion"]))
    adapter = UploadScorer(scorer, PixelLimits())
    out = _score(adapter, _png_bytes(12, 14, 51), {"age": 50.0})
    frame, clinical = scorer.frames[0]
    assert frame.shape == (12, 14) and clinical == {"age": 50.0}
    assert out["model"] == {"name": "stand-in", "version": "1", "sha256": "ab" * 32}
    t = out["timings"]
    assert t["prepare_s"] == 0.5 and t["model_s"] == 0.25 and t["batch_size"] == 1  # alone in its batch
    assert {"queue_s", "read_s", "model_wait_s", "score_s", "encode_s"} <= set(t) and "total_s" not in t
    assert min(t.values()) >= 0
    ScoreResponse.model_validate({**out, "request_id": "x", "timings": {**t, "total_s": 1.0}})


def test_a_frame_that_cannot_be_scored_is_422():
    adapter = UploadScorer(StandIn(_result(None, None, probability=None, error="no features")), PixelLimits())
    with pytest.raises(ApiError) as info:
        _score(adapter, _png_bytes(12, 14, 51))
    assert info.value.status_code == 422
    assert info.value.detail == "file: expected a frame whose features can be computed, got no features"


def test_the_model_runs_only_in_the_batchers_worker_thread():
    """Thread safety by construction: requests from 4 threads, every scorer call in the one worker."""
    seen: list[str] = []

    class Recording(StandIn):
        def score_frame(self, frame: Any, clinical: Any = None) -> SimpleNamespace:
            seen.append(threading.current_thread().name)
            return super().score_frame(frame, clinical)

    scorer = Recording(_result(None, None))
    adapter = UploadScorer(scorer, PixelLimits(), max_batch=4, max_wait_ms=1)
    try:
        futures = []
        threads = [
            threading.Thread(target=lambda k=k: futures.append(adapter.batcher.submit((k, None)))) for k in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert [f.result(timeout=30).value.probability for f in futures] == [0.75] * 4
        worker = adapter.batcher.thread
    finally:
        adapter.batcher.close()
    assert seen == ["usher2-model"] * 4 and not worker.is_alive()
    assert adapter.clinical == ["age"] and adapter.clinical_ranges == {}
