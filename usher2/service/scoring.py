"""The scoring adapter: one upload -> a micro-batch through the scorer -> the response's fields.

:class:`UploadScorer` reads the upload (:func:`~usher2.service.upload.read_upload`) on a pool
thread, submits the frame to its :class:`~usher2.service.batching.MicroBatcher`, whose one
worker thread scores the frames that arrived together in one call of the scorer
(:func:`~usher2.service.batch_score.score_batch`), and encodes the frame's own result on a pool
thread with :func:`result_fields`: the mask as a grey PNG and as COCO RLE
(:mod:`usher2.service.rle`), the Grad-CAM map as a grey PNG, the overlay drawn by
:func:`~usher2.explain.render.render_overlay`, all base64 (:func:`png_b64`). The field names are
those of :class:`~usher2.service.responses.ScoreResponse`.
"""

from __future__ import annotations

import base64
import functools
from typing import Any

import cv2
import numpy as np

from usher2.explain.render import render_overlay
from usher2.io.limits import PixelLimits
from usher2.service.api_errors import ApiError
from usher2.service.backpressure import Ticket
from usher2.service.batch_score import score_batch
from usher2.service.batching import MicroBatcher
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
    """Reads, scores and encodes one upload; the model runs in the micro-batcher's one worker thread.

    Reading and encoding run on the runner's pool threads, in parallel; scoring goes through
    :attr:`batcher` (:class:`~usher2.service.batching.MicroBatcher` over
    :func:`~usher2.service.batch_score.score_batch`), whose single worker thread is the only one
    that touches the networks, so concurrent Grad-CAMs on the shared backbone cannot collide.

    Args:
        scorer: A :class:`~usher2.score.engine.FrameScorer` (anything with ``model_info`` and
            ``score_frame``, or a batched ``score``).
        limits: Decoded-size limits of an upload.
        max_batch: Most frames in one batch.
        max_wait_ms: Longest wait, from a frame's arrival, for others to join its batch.
    """

    def __init__(self, scorer: Any, limits: PixelLimits, *, max_batch: int = 16, max_wait_ms: float = 5.0) -> None:
        self.scorer = scorer
        self.limits = limits
        self.batcher = MicroBatcher(
            functools.partial(score_batch, scorer), max_batch=max_batch, max_wait_ms=max_wait_ms, name="usher2-model"
        )
        info = scorer.model_info
        self.clinical = list(info.get("clinical") or [])
        self.clinical_ranges = dict(info.get("clinical_ranges") or {})
        self.model_ref = {"name": info.get("name"), "version": info.get("version"), "sha256": info.get("sha256")}

    def encode(self, r: Any, frame: Any) -> dict[str, Any]:
        """The response's fields of a scored frame (:func:`result_fields`).

        Raises:
            ApiError: 422 for a frame whose features cannot be computed.
        """
        if r.probability is None and not r.no_lesion:
            raise ApiError(422, "file", "a frame whose features can be computed", r.error or "a scoring failure")
        return result_fields(r, frame, self.model_ref)

    async def score_upload(
        self, ticket: Ticket, data: bytes, index: int, clinical: dict[str, float | None] | None, dicom_hint: bool
    ) -> dict[str, Any]:
        """Read, score and encode one upload (see :func:`~usher2.service.upload.read_form` for the arguments).

        Args:
            ticket: The request's place (:meth:`~usher2.service.backpressure.Runner.run`), whose
                pool reads and encodes.

        Returns:
            The response's fields but ``request_id``, with ``timings`` in seconds (``total_s``
            left to the caller): ``queue_s`` (waiting for a pool thread), ``read_s``,
            ``model_wait_s`` (from joining the batch queue to the batch's start), ``score_s``
            (the batch's run, shared by its frames), ``batch_size``, the frame's stages
            (``prepare_s``, ``features_s``, ``model_s``, ``heatmap_s``: a batch stage's time
            divided by its frames) and ``encode_s``.

        Raises:
            ApiError: From :func:`~usher2.service.upload.read_upload`, or 422 for a frame whose
                features cannot be computed.
        """
        frame, read_s = await ticket.call(read_upload, data, index, dicom_hint, self.limits)
        batched = await ticket.wait(self.batcher.submit((frame, clinical)))
        r = batched.value
        out, encode_s = await ticket.call(self.encode, r, frame)
        timings = {
            "queue_s": ticket.queue_s,
            "read_s": read_s,
            "model_wait_s": batched.wait_s,
            "score_s": batched.run_s,
            "batch_size": float(batched.size),
        }
        timings.update({f"{k}_s": float(v) for k, v in r.seconds.items()})
        timings["encode_s"] = encode_s
        out["timings"] = timings
        return out
