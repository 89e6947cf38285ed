"""The scoring adapter: one upload -> :meth:`FrameScorer.score_frame` -> the response's fields.

:class:`UploadScorer` reads the upload (:func:`~usher2.service.upload.read_upload`), runs the scorer
(:class:`~usher2.score.engine.FrameScorer`, or anything with ``score_frame`` and ``model_info``)
under the model lock, and encodes the result with :func:`result_fields`: the mask as a grey PNG and
as COCO RLE (:mod:`usher2.service.rle`), the Grad-CAM map as a grey PNG, the overlay drawn by
:func:`~usher2.explain.render.render_overlay`, all base64 (:func:`png_b64`). The field names are
those of :class:`~usher2.service.responses.ScoreResponse`.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from typing import Any

import cv2
import numpy as np

from usher2.explain.render import render_overlay
from usher2.io.limits import PixelLimits
from usher2.service.api_errors import ApiError
from usher2.service.rle import rle_encode
from usher2.service.upload import read_upload

__all__ = ["UploadScorer", "png_b64", "result_fields"]


def png_b64(img: np.ndarray) -> str:
    """``img`` as a base64 PNG: ``(H, W)`` grey, or ``(H, W, 3)`` RGB; uint8.

    Example:
        >>> png_b64(np.zeros((2, 2), np.uint8))[:12]
        'iVBORw0KGgoA'
    """
    arr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    ok, buf = cv2.imencode(".png", arr)
    if not ok:  # cv2 only fails here for unsupported dtypes, which this module never passes
        raise RuntimeError(f"PNG encoding failed for an array of shape {img.shape} and dtype {img.dtype}")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def result_fields(r: Any, frame: Any, model_ref: dict[str, Any]) -> dict[str, Any]:
    """The response's fields (all but ``timings`` and ``request_id``) for one scored frame.

    Args:
        r: The scorer's result (:class:`~usher2.score.engine.FrameScore`-like).
        frame: The :class:`~usher2.types.Frame` that was scored.
        model_ref: ``{"name", "version", "sha256"}`` of the model.
    """
    pixels = r.pixels if r.pixels is not None else frame.pixels
    mask = r.mask
    heat = r.heat
    unc = r.mask_uncertainty
    return {
        "probability": r.probability,
        "label": r.label,
        "threshold": float(r.threshold),
        "flags": r.flags(),
        "error": r.error,
        "mask_uncertainty": float(unc) if unc is not None and np.isfinite(unc) else None,
        "mask_area_px": None if mask is None else int(mask.sum()),
        "mask_png": None if mask is None else png_b64(np.where(mask, np.uint8(255), np.uint8(0))),
        "mask_rle": None if mask is None else rle_encode(mask),
        "heatmap_png": None if heat is None else png_b64(np.uint8(np.clip(heat, 0, 1) * 255.0 + 0.5)),
        "overlay_png": png_b64(render_overlay(pixels, mask, heat)),
        "frame": {
            "height": frame.shape[0],
            "width": frame.shape[1],
            "index": int(frame.index),
            "spacing_mm": None if frame.spacing is None else [float(s) for s in frame.spacing],
        },
        "model": model_ref,
    }


class UploadScorer:
    """Reads, scores and encodes one upload; model execution is serialised unless the scorer is thread-safe.

    The networks are shared by the whole process and Grad-CAM hooks into the shared backbone, so
    :attr:`model_lock` is a lock unless the scorer declares ``thread_safe = True``.

    Args:
        scorer: A :class:`~usher2.score.engine.FrameScorer` (anything with ``score_frame`` and
            ``model_info``).
        limits: Decoded-size limits of an upload.
    """

    def __init__(self, scorer: Any, limits: PixelLimits) -> None:
        self.scorer = scorer
        self.limits = limits
        self.thread_safe = bool(getattr(scorer, "thread_safe", False))
        self.model_lock: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if self.thread_safe else threading.Lock()
        )
        info = scorer.model_info
        self.clinical = list(info.get("clinical") or [])
        self.clinical_ranges = dict(info.get("clinical_ranges") or {})
        self.model_ref = {"name": info.get("name"), "version": info.get("version"), "sha256": info.get("sha256")}

    def score_upload(
        self, data: bytes, index: int, clinical: dict[str, float | None] | None, dicom_hint: bool, queue_s: float
    ) -> dict[str, Any]:
        """Read, score and encode one upload (see :func:`~usher2.service.upload.read_form` for the arguments).

        Returns:
            The response's fields but ``request_id``, with ``timings`` in seconds (``total_s`` left
            to the caller).

        Raises:
            ApiError: From :func:`~usher2.service.upload.read_upload`, or 422 for a frame whose
                features cannot be computed.
        """
        t0 = time.perf_counter()
        frame = read_upload(data, index, dicom_hint, self.limits)
        t1 = time.perf_counter()
        with self.model_lock:
            t_model = time.perf_counter()
            r = self.scorer.score_frame(frame, clinical)
        t2 = time.perf_counter()
        if r.probability is None and not r.no_lesion:
            raise ApiError(422, "file", "a frame whose features can be computed", r.error or "a scoring failure")
        out = result_fields(r, frame, self.model_ref)
        t3 = time.perf_counter()
        timings = {"queue_s": queue_s, "read_s": t1 - t0, "model_wait_s": t_model - t1, "score_s": t2 - t_model}
        timings.update({f"{k}_s": float(v) for k, v in r.seconds.items()})
        timings["encode_s"] = t3 - t2
        out["timings"] = timings
        return out
