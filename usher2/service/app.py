"""The scoring service: a FastAPI app around :class:`~usher2.score.engine.FrameScorer`.

**Endpoints**

================  ======================================================================================
``POST /v1/score`` multipart form: ``file`` (PNG, JPEG, TIFF, BMP or DICOM; one frame), optional
                   ``clinical`` (a JSON object of the model's clinical columns, numbers or null) and
                   ``frame`` (frame index of a multi-frame DICOM, default 0). Returns
                   :class:`ScoreResponse`. A frame where no lesion is found is a 200 with
                   ``probability`` null and the flag ``no_lesion``.
``GET /v1/model``  the model's :attr:`~usher2.score.engine.FrameScorer.model_info`.
``GET /healthz``   ``{"status": "ok", "model_loaded": true, ...}``; never needs the token.
``GET /``          a self-contained web page (:mod:`usher2.service.page`) to score one frame.
``/docs``          FastAPI's OpenAPI UI (it loads its JavaScript from a CDN); ``/openapi.json``.
================  ======================================================================================

**Images in the response** are base64 PNGs: ``mask_png`` (grey, 255 on the lesion), ``heatmap_png``
(grey, ``round(255 * heat)``; 0 outside the ROI box) and ``overlay_png`` (RGB: the frame as scored,
the Grad-CAM map blended inside the ROI box, the lesion contour in green, drawn by
:func:`~usher2.explain.render.render_overlay` as ``usher2 score DIR`` draws it). ``mask_rle`` is COCO
uncompressed RLE, column-major (see :mod:`usher2.service.rle`; :func:`~usher2.service.rle.rle_decode`
reads it back).

**Errors** are JSON ``{"detail", "field", "expected", "got", "fix", "request_id"}`` where ``detail``
reads ``"<field>: expected <what>, got <what arrived>"``:

* 400: no ``file`` field, an empty file, ``clinical`` that is not valid JSON (or nested too deeply), a
  malformed multipart body;
* 401: the bearer token is missing or wrong (with ``WWW-Authenticate: Bearer``);
* 413: the request body is larger than the upload limit (Content-Length is checked before the
  body is read; a body without it is counted as it streams in and cut off at the limit), or a
  ``clinical`` field longer than :data:`MAX_CLINICAL_CHARS`, or a file whose header declares more
  than ``max_megapixels`` per frame (checked before decoding, see :mod:`usher2.io.limits`; a
  multi-frame upload may hold four such frames' worth of samples in all, as one frame is read);
* 415: content that is neither an image nor DICOM (or a video);
* 422: a recognised file that cannot be read (corrupt, too small, a frame index out of range),
  ``clinical`` that is not an object or has unknown keys or non-numeric values or a value far
  outside the model's training range (:mod:`usher2.fusion.clinical`), or a frame
  whose features cannot be computed;
* 503: more than ``max_queue`` requests waiting (with ``Retry-After`` in seconds).

**Privacy.** The uploaded filename and DICOM tags are never logged or returned: the upload is
written to a private temporary file and read with :func:`usher2.io.frames.read_frame`, which
keeps only allow-listed, de-identified DICOM metadata (:func:`usher2.io.dicom.safe_metadata`),
and the response carries none of it. Each request logs one line to the ``usher2.service``
logger: request id, method, path, status, bytes received and seconds. Every response carries
``X-Request-ID``.

**Concurrency.** Scoring runs in a thread pool of ``max_concurrent`` threads; up to ``max_queue``
more requests wait for a thread, and beyond that the service answers 503 at once. The networks
are shared by the whole process and Grad-CAM hooks into the shared backbone, so model execution
itself is serialised by a lock (reading, decoding and PNG encoding run in parallel) unless the
scorer declares ``thread_safe = True``. ``torch.set_num_threads`` is never changed per request.

Example:
    >>> from fastapi.testclient import TestClient
    >>> app = create_app("runs/demo/bundles/combined")  # doctest: +SKIP
    >>> TestClient(app).get("/healthz").json()["model_loaded"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hmac
import json
import logging
import math
import os
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from usher2.explain.render import render_overlay
from usher2.fusion.clinical import check_clinical
from usher2.io.errors import InputError
from usher2.io.limits import DecodedSizeError, PixelLimits
from usher2.service.page import render_page
from usher2.service.rle import rle_encode

__all__ = ["TOKEN_ENV", "ApiError", "ScoreResponse", "create_app", "parse_clinical", "serve"]

logger = logging.getLogger("usher2.service")

TOKEN_ENV = "USHER2_API_TOKEN"
"""Environment variable holding the bearer token when ``create_app(token=None)``."""

MIB = 1024 * 1024
_FORM_SLACK = 64 * 1024  # multipart boundaries, part headers and the small form fields
_DICOM_TYPES = ("application/dicom", "application/dicom+binary")
_DICOM_SUFFIXES = (".dcm", ".dicom")
_FORMATS = "a PNG, JPEG, TIFF or BMP image or a DICOM file"
_RID_KEY = "usher2.request_id"
MAX_CLINICAL_CHARS = 4096
"""Longest ``clinical`` form field: a flat object of a few numbers is far shorter."""
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


# ---------------------------------------------------------------------------------------- errors
class ApiError(HTTPException):
    """An error answer: an HTTP status and an :class:`~usher2.io.errors.InputError`-style message.

    It subclasses FastAPI's ``HTTPException`` so that one raised while the body streams in (the
    size cap) reaches the handler instead of becoming a generic 400.

    Example:
        >>> e = ApiError(422, "clinical.age", "a number or null", "a string")
        >>> e.status_code, e.detail
        (422, 'clinical.age: expected a number or null, got a string')
    """

    def __init__(
        self,
        status_code: int,
        where: str,
        expected: str,
        got: str,
        *,
        fix: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.error = InputError(where, expected, got, fix)
        super().__init__(status_code, detail=str(self.error), headers=dict(headers) if headers else None)

    def content(self, request_id: str | None) -> dict[str, Any]:
        """The JSON body."""
        e = self.error
        return {
            "detail": self.detail,
            "field": e.where,
            "expected": e.expected,
            "got": e.got,
            "fix": e.fix,
            "request_id": request_id,
        }


def _error_response(exc: ApiError, request_id: str | None) -> JSONResponse:
    return JSONResponse(exc.content(request_id), status_code=exc.status_code, headers=exc.headers)


def _json_kind(value: Any) -> str:
    """The JSON type of a value, for messages (values themselves are never echoed)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def parse_clinical(text: str | None, columns: list[str]) -> dict[str, float | None] | None:
    """Check the ``clinical`` form field: a JSON object of the model's clinical columns.

    Values are numbers, or null for a missing value (the model imputes it and the response
    flags ``clinical_missing``); a column left out is missing too. Messages name the key and
    the JSON type that arrived, never the value.

    Args:
        text: The field as sent (None or blank: no clinical values).
        columns: The model's clinical columns.

    Returns:
        ``{column: float | None}``, or None when nothing was sent.

    Raises:
        ApiError: 400 for invalid JSON; 422 for a non-object, an unknown key, or a value that is
            not a finite number or null.

    Example:
        >>> parse_clinical('{"age": 54, "er": null}', ["age", "er", "grade"])
        {'age': 54.0, 'er': None}
        >>> try:
        ...     parse_clinical('{"age": "54"}', ["age"])
        ... except ApiError as exc:
        ...     print(exc.status_code, exc.detail)
        422 clinical.age: expected a number or null, got a string
    """
    if text is None or not text.strip():
        return None
    example = '{"' + (columns[0] if columns else "age") + '": 54}'
    if len(text) > MAX_CLINICAL_CHARS:
        raise ApiError(
            413, "clinical", f"a JSON object of at most {MAX_CLINICAL_CHARS} characters", f"{len(text)} characters"
        )
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, "clinical", f"a JSON object such as {example}", f"invalid JSON ({exc.msg} at character {exc.pos})"
        ) from exc
    except RecursionError as exc:  # deeply nested arrays/objects: json's recursive parser gives up
        raise ApiError(400, "clinical", f"a flat JSON object such as {example}", "deeply nested JSON") from exc
    if not isinstance(obj, dict):
        raise ApiError(422, "clinical", f"a JSON object such as {example}", _json_kind(obj))
    out: dict[str, float | None] = {}
    for key, value in obj.items():
        if key not in columns:
            shown = key if len(key) <= 40 else key[:40] + "..."
            raise ApiError(
                422,
                "clinical",
                f"keys among the model's clinical columns ({', '.join(columns) or 'none'})",
                f"the unknown key {shown!r}",
            )
        if value is None:
            out[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            fix = "send 0/1 for yes/no" if isinstance(value, bool) else None
            raise ApiError(422, f"clinical.{key}", "a number or null", _json_kind(value), fix=fix)
        if not math.isfinite(value):
            raise ApiError(422, f"clinical.{key}", "a finite number or null", "NaN or infinity")
        out[key] = float(value)
    return out


def _parse_frame(text: str | None) -> int:
    if text is None or not text.strip():
        return 0
    try:
        index = int(text.strip())
    except ValueError:
        index = -1
    if index < 0:
        raise ApiError(422, "frame", "a frame index: an integer >= 0", f"{text.strip()[:20]!r}")
    return index


# ----------------------------------------------------------------------------- response models
class RLE(BaseModel):
    """COCO uncompressed run-length encoding of the mask (see :mod:`usher2.service.rle`)."""

    size: list[int] = Field(description="[H, W]")
    counts: list[int] = Field(description="Alternating run lengths, starting with background (0s).")
    order: str = Field("F", description="F: column-major (COCO's order).")


class FrameInfo(BaseModel):
    """The frame that was scored."""

    height: int
    width: int
    index: int = Field(description="Frame index inside a multi-frame DICOM (0 for an image).")
    spacing_mm: list[float] | None = Field(description="(row, column) pixel spacing in mm, when the file says.")


class ModelRef(BaseModel):
    """The model that scored the frame."""

    name: str | None
    version: str | None
    sha256: str


class ScoreResponse(BaseModel):
    """The result for one frame."""

    request_id: str
    probability: float | None = Field(description="P(positive); null when the frame could not be scored.")
    label: int | None = Field(description="1 when probability >= threshold; null when not scored.")
    threshold: float
    flags: list[str] = Field(
        description="Among no_lesion, low_segmentation_confidence, clinical_missing, clinical_out_of_range."
    )
    error: str | None = Field(description="Why the frame was not scored (no lesion found), else null.")
    mask_uncertainty: float | None = Field(description="The segmenter's mean binary entropy.")
    mask_area_px: int | None
    mask_png: str | None = Field(description="Base64 PNG, grey: 255 on the lesion, 0 elsewhere.")
    mask_rle: RLE | None
    heatmap_png: str | None = Field(description="Base64 PNG, grey: round(255 * Grad-CAM); 0 outside the ROI box.")
    overlay_png: str = Field(description="Base64 PNG, RGB: frame + Grad-CAM inside the ROI box + lesion contour.")
    frame: FrameInfo
    model: ModelRef
    timings: dict[str, float] = Field(
        description="Seconds: queue_s (waiting for a thread), read_s, model_wait_s (waiting for the model), "
        "score_s (and its stages: prepare_s, features_s, model_s, heatmap_s), encode_s, total_s."
    )


# ---------------------------------------------------------------------------------- image output
def _png_b64(img: np.ndarray) -> str:
    arr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    ok, buf = cv2.imencode(".png", arr)
    if not ok:  # cv2 only fails here for unsupported dtypes, which this module never passes
        raise RuntimeError(f"PNG encoding failed for an array of shape {img.shape} and dtype {img.dtype}")
    return base64.b64encode(buf.tobytes()).decode("ascii")


# ------------------------------------------------------------------------------- the runner
@dataclass
class _Settings:
    max_upload_bytes: int
    max_upload_mb: float
    token: str | None
    max_concurrent: int
    max_queue: int
    pixel_limits: PixelLimits


class _Runner:
    """Reads, scores and encodes uploads in a bounded thread pool with a bounded wait queue."""

    def __init__(self, scorer: Any, settings: _Settings) -> None:
        self.scorer = scorer
        self.settings = settings
        self.pool = ThreadPoolExecutor(settings.max_concurrent, thread_name_prefix="usher2-score")
        self.capacity = settings.max_concurrent + settings.max_queue
        self.pending = 0
        self._lock = threading.Lock()
        self._mean_s = 1.0  # running mean of a job's own seconds (without waiting), for Retry-After
        thread_safe = bool(getattr(scorer, "thread_safe", False))
        self.model_lock: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if thread_safe else threading.Lock()
        )
        self.parallel = settings.max_concurrent if thread_safe else 1  # jobs that really run at once
        self.clinical = list(scorer.model_info.get("clinical") or [])
        self.clinical_ranges = dict(scorer.model_info.get("clinical_ranges") or {})
        info = scorer.model_info
        self.model_ref = {"name": info.get("name"), "version": info.get("version"), "sha256": info.get("sha256")}

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained by one request (1 to 120)."""
        return int(min(max(math.ceil(self._mean_s * self.pending / self.parallel), 1), 120))

    async def run(self, fn: Callable[[float], dict[str, Any]]) -> dict[str, Any]:
        """Run ``fn(queue_seconds)`` on the pool, or raise a 503 when the queue is full."""
        with self._lock:
            if self.pending >= self.capacity:
                s = self.settings
                raise ApiError(
                    503,
                    "service",
                    f"at most {s.max_queue} waiting and {s.max_concurrent} running requests",
                    "a full queue",
                    fix="retry after the Retry-After seconds",
                    headers={"Retry-After": str(self.retry_after())},
                )
            self.pending += 1
        submitted = time.perf_counter()

        def job() -> dict[str, Any]:
            start = time.perf_counter()
            out = fn(start - submitted)
            busy = time.perf_counter() - start - out["timings"]["model_wait_s"]
            self._mean_s = 0.8 * self._mean_s + 0.2 * busy
            return out

        fut: Future[dict[str, Any]] = self.pool.submit(job)
        fut.add_done_callback(self._release)  # also when the client went away and the await was cancelled
        return await asyncio.wrap_future(fut)

    def _release(self, _: Future[dict[str, Any]]) -> None:
        with self._lock:
            self.pending -= 1

    # ------------------------------------------------------------------------- one upload
    def score_upload(
        self, data: bytes, index: int, clinical: dict[str, float | None] | None, dicom_hint: bool, queue_s: float
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        frame = _read_upload(data, index, dicom_hint, self.settings.pixel_limits)
        t1 = time.perf_counter()
        with self.model_lock:
            t_model = time.perf_counter()
            r = self.scorer.score_frame(frame, clinical)
        t2 = time.perf_counter()
        if r.probability is None and not r.no_lesion:
            raise ApiError(422, "file", "a frame whose features can be computed", r.error or "a scoring failure")
        pixels = r.pixels if r.pixels is not None else frame.pixels
        mask = r.mask
        heat = r.heat
        unc = r.mask_uncertainty
        out = {
            "probability": r.probability,
            "label": r.label,
            "threshold": float(r.threshold),
            "flags": r.flags(),
            "error": r.error,
            "mask_uncertainty": float(unc) if unc is not None and np.isfinite(unc) else None,
            "mask_area_px": None if mask is None else int(mask.sum()),
            "mask_png": None if mask is None else _png_b64(np.where(mask, np.uint8(255), np.uint8(0))),
            "mask_rle": None if mask is None else rle_encode(mask),
            "heatmap_png": None if heat is None else _png_b64(np.uint8(np.clip(heat, 0, 1) * 255.0 + 0.5)),
            "overlay_png": _png_b64(render_overlay(pixels, mask, heat)),
            "frame": {
                "height": frame.shape[0],
                "width": frame.shape[1],
                "index": int(frame.index),
                "spacing_mm": None if frame.spacing is None else [float(s) for s in frame.spacing],
            },
            "model": self.model_ref,
        }
        t3 = time.perf_counter()
        timings = {"queue_s": queue_s, "read_s": t1 - t0, "model_wait_s": t_model - t1, "score_s": t2 - t_model}
        timings.update({f"{k}_s": float(v) for k, v in r.seconds.items()})
        timings["encode_s"] = t3 - t2
        out["timings"] = timings
        return out


def _read_upload(data: bytes, index: int, dicom_hint: bool, limits: PixelLimits) -> Any:
    """The upload as a :class:`~usher2.types.Frame`, read by the project's readers from a private temp file."""
    from usher2.io.frames import frame_kind, read_frame

    with tempfile.TemporaryDirectory(prefix="usher2-upload-") as tmp:
        # Only a DICOM file without its 128-byte preamble needs the suffix; everything else is
        # recognised by content. The client's filename is never used as a path.
        path = Path(tmp) / ("upload.dcm" if dicom_hint else "upload")
        path.write_bytes(data)
        try:
            kind = frame_kind(path)
        except InputError as exc:
            raise ApiError(
                415,
                "file",
                _FORMATS,
                f"unrecognised content ({len(data)} bytes)",
                fix="send a DICOM file without its preamble as application/dicom or with a .dcm name",
            ) from exc
        if kind == "video":
            raise ApiError(415, "file", f"{_FORMATS} (one frame)", "a video", fix="score videos with `usher2 score`")
        try:
            return read_frame(path, index, limits=limits)
        except DecodedSizeError as exc:  # refused from the header, before decoding
            got = exc.got.replace(str(path), "the upload")
            fix = "downscale the frame (the server's limit is usher2 serve --max-megapixels)"
            raise ApiError(413, "file", exc.expected, got, fix=fix) from exc
        except InputError as exc:
            field = "frame" if "frame index" in exc.expected else "file"
            got = exc.got.replace(str(path), "the upload")
            raise ApiError(422, field, exc.expected, got, fix=exc.fix) from exc


# ------------------------------------------------------------------------------ the ASGI gate
class _Gate:
    """Outermost layer: request id, one log line per request, bearer token, body-size cap.

    It runs before FastAPI reads the body, so a request without the token or with a
    Content-Length over the limit is answered without reading its body.
    """

    def __init__(self, app: Any, settings: _Settings) -> None:
        self.app = app
        self.settings = settings

    def _auth(self, scope: dict[str, Any]) -> ApiError | None:
        token = self.settings.token
        if not token or not scope["path"].startswith("/v1/"):
            return None
        header = _header(scope, b"authorization")
        expected = "a bearer token in the header 'Authorization: Bearer <token>'"
        if header is None:
            return ApiError(
                401, "Authorization", expected, "no Authorization header", headers={"WWW-Authenticate": "Bearer"}
            )
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            return ApiError(
                401,
                "Authorization",
                expected,
                "a token that does not match" if scheme.lower() == "bearer" else f"the scheme {scheme[:20]!r}",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return None

    def _too_large(self, got: str) -> ApiError:
        s = self.settings
        return ApiError(
            413, "request body", f"at most {s.max_upload_mb:g} MiB (the upload limit)", got, fix="send a smaller file"
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex[:16]
        scope[_RID_KEY] = rid
        t0 = time.perf_counter()
        state = {"status": 0, "bytes": 0, "started": False}
        limit = self.settings.max_upload_bytes

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
                headers = [*message.get("headers", []), (b"x-request-id", rid.encode())]
                headers.append((b"x-content-type-options", b"nosniff"))
                if scope["path"].startswith("/v1/"):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        async def receive_capped() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                state["bytes"] += len(message.get("body", b""))
                if state["bytes"] > limit:
                    raise self._too_large(f"more than that ({state['bytes'] / MIB:.1f} MiB and counting)")
            return message

        try:
            error = self._auth(scope)
            length = _header(scope, b"content-length")
            if error is None and length is not None and length.isdigit() and int(length) > limit:
                error = self._too_large(f"{int(length) / MIB:.1f} MiB (Content-Length)")
            if error is not None:
                await _error_response(error, rid)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive_capped, send_with_id)
        except ApiError as exc:  # the cap tripped outside FastAPI's handlers
            if not state["started"]:
                await _error_response(exc, rid)(scope, receive, send_with_id)
        except Exception:
            logger.exception("request_id=%s unhandled error", rid)
            if not state["started"]:
                body = {"detail": f"internal error (request id {rid})", "request_id": rid}
                await JSONResponse(body, status_code=500)(scope, receive, send_with_id)
        finally:
            logger.info(
                "request_id=%s method=%s path=%s status=%s bytes_in=%d seconds=%.3f",
                rid,
                scope.get("method"),
                scope.get("path"),
                state["status"],
                state["bytes"],
                time.perf_counter() - t0,
            )


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _request_id(request: Request) -> str | None:
    return request.scope.get(_RID_KEY)


# --------------------------------------------------------------------- settings and model
def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def _make_settings(
    max_upload_mb: float, max_megapixels: float, token: str | None, max_concurrent: int, max_queue: int
) -> _Settings:
    """Check :func:`create_app`'s limits and resolve its token (None: ``USHER2_API_TOKEN``).

    Raises:
        InputError: A limit out of range.
    """
    if not isinstance(max_concurrent, int) or max_concurrent < 1:
        raise InputError("max_concurrent", "an integer >= 1", repr(max_concurrent))
    if not isinstance(max_queue, int) or max_queue < 0:
        raise InputError("max_queue", "an integer >= 0", repr(max_queue))
    if not isinstance(max_upload_mb, int | float) or not max_upload_mb > 0:
        raise InputError("max_upload_mb", "a size in MiB > 0", repr(max_upload_mb))
    frame_pixels = PixelLimits.from_megapixels(max_megapixels).frame_pixels
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    return _Settings(
        max_upload_bytes=int(max_upload_mb * MIB) + _FORM_SLACK,
        max_upload_mb=float(max_upload_mb),
        pixel_limits=PixelLimits(frame_pixels=frame_pixels, file_samples=4 * frame_pixels),
        token=token or None,
        max_concurrent=max_concurrent,
        max_queue=max_queue,
    )


def _load_scorer(bundle: str | Path | Any, cam: str | None, device: str | None, verify_key: bytes | None) -> Any:
    """``bundle`` itself when it is a scorer, else a :class:`~usher2.score.engine.FrameScorer` of the bundle.

    Raises:
        InputError: A bad bundle, or one whose signature does not match ``verify_key``.
    """
    if hasattr(bundle, "score_frame") and hasattr(bundle, "model_info"):
        return bundle
    from usher2.fusion.bundle import Bundle, load_bundle
    from usher2.score.engine import FrameScorer

    if verify_key is not None and not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle, verify_key=verify_key)
    return FrameScorer(bundle, cam=cam, device=device)


# ------------------------------------------------------------------------------ error handlers
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return _error_response(exc, _request_id(request))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (a malformed multipart body, an unknown path) in the service's error format."""
    if isinstance(exc, ApiError):
        return _error_response(exc, _request_id(request))
    status = exc.status_code
    if status in (404, 405):
        err = ApiError(status, "path", "one of the service's endpoints (see /docs)", str(exc.detail))
    else:
        err = ApiError(
            status,
            "request body",
            "a well-formed multipart/form-data body",
            str(exc.detail)[:200],
            fix="send the frame as a multipart form field named 'file' (e.g. curl -F file=@frame.png)",
        )
    return _error_response(err, _request_id(request))


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]  # FastAPI's own message, without the "input" it would echo
    field = ".".join(str(x) for x in first.get("loc", ()) if x not in ("body", "query")) or "request"
    if field == "file":  # a plain text field named "file" instead of a file part
        err = ApiError(422, "file", f"an uploaded file part (with a filename) holding {_FORMATS}", "a text field")
    else:
        err = ApiError(422, field, "a valid value", str(first.get("msg", "an invalid one")))
    return _error_response(err, _request_id(request))


def _add_error_handlers(app: FastAPI) -> None:
    """Answer every error in the service's JSON error format (see the module docstring)."""
    app.exception_handler(ApiError)(_api_error)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(RequestValidationError)(_invalid)


# ------------------------------------------------------------------------------------ endpoints
_BEARER = HTTPBearer(auto_error=False, description=f"Set {TOKEN_ENV} on the server to require it.")

_SCORE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "No file, an empty file, or invalid clinical JSON"},
    401: {"description": "Missing or wrong bearer token"},
    413: {"description": "Request body over the upload limit, or a file over the decoded-size limit"},
    415: {"description": "Not an image or DICOM file"},
    422: {"description": "Unreadable file, bad frame index or clinical values"},
    503: {"description": "Queue full; see Retry-After"},
}


async def _declare_bearer(_: Any = Depends(_BEARER)) -> None:
    """Declares the bearer scheme in OpenAPI; the check itself is in :class:`_Gate`, before the body is read."""


class _Service:
    """One app's state (the runner, the model's metadata, the web page) and its endpoints.

    The endpoint methods have no docstrings on purpose: FastAPI would publish them in OpenAPI.
    """

    def __init__(self, runner: _Runner, model_info: dict[str, Any]) -> None:
        self.runner = runner
        self.model_info = model_info
        settings = runner.settings
        self.page, self.csp = render_page(
            model_info, token_required=bool(settings.token), max_upload_mb=settings.max_upload_mb
        )

    def register(self, app: FastAPI) -> None:
        """Add the endpoints to ``app``."""
        app.get("/healthz", summary="Liveness and readiness (no token needed)")(self.healthz)
        app.get("/v1/model", summary="The model's metadata", dependencies=[Depends(_declare_bearer)])(self.model)
        app.get("/", response_class=HTMLResponse, include_in_schema=False)(self.index)
        app.post(
            "/v1/score",
            response_model=ScoreResponse,
            summary="Score one frame",
            dependencies=[Depends(_declare_bearer)],
            responses=_SCORE_RESPONSES,
        )(self.score)

    @contextlib.asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        """The app's lifespan: the thread pool stops when the app does."""
        yield
        self.runner.pool.shutdown(wait=False, cancel_futures=True)

    async def healthz(self) -> dict[str, Any]:
        runner = self.runner
        return {
            "status": "ok",
            "model_loaded": runner.scorer is not None,
            "pending": runner.pending,
            "capacity": runner.capacity,
        }

    async def model(self) -> dict[str, Any]:
        return self.model_info

    async def index(self) -> HTMLResponse:
        return HTMLResponse(self.page, headers={"Content-Security-Policy": self.csp})

    async def score(
        self,
        request: Request,
        file: UploadFile | None = File(None, description="PNG, JPEG, TIFF, BMP or DICOM; one frame."),
        clinical: str | None = Form(None, description='JSON object, e.g. {"age": 54, "er": 1}; null: missing.'),
        frame: str | None = Form(None, description="Frame index of a multi-frame DICOM (default 0)."),
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        data, index, values, dicom_hint = await self._read_form(file, clinical, frame)
        out = await self.runner.run(functools.partial(self.runner.score_upload, data, index, values, dicom_hint))
        out["timings"]["total_s"] = time.perf_counter() - t0
        out["request_id"] = _request_id(request)
        return out

    async def _read_form(
        self, file: UploadFile | None, clinical: str | None, frame: str | None
    ) -> tuple[bytes, int, dict[str, float | None] | None, bool]:
        """Check the score form: the file's bytes, the frame index, the clinical values and whether it is DICOM.

        Raises:
            ApiError: 400 without a file or with an empty one; 400, 413 or 422 for bad clinical values
                (:func:`parse_clinical`, then the bundle's training ranges); 422 for a bad frame index.
        """
        if file is None:
            raise ApiError(400, "file", f"a multipart/form-data field 'file' with {_FORMATS}", "no file field")
        data = await file.read()
        if not data:
            raise ApiError(400, "file", f"a non-empty file ({_FORMATS})", "0 bytes")
        runner = self.runner
        values = parse_clinical(clinical, runner.clinical)
        if values is not None:
            try:  # the bundle's training ranges: far outside is refused here, before the frame is read
                check_clinical(values, runner.clinical, runner.clinical_ranges)
            except InputError as exc:
                raise ApiError(422, exc.where, exc.expected, exc.got, fix=exc.fix) from exc
        index = _parse_frame(frame)
        name = (file.filename or "").lower()  # only its suffix is looked at; it is never logged or echoed
        dicom_hint = (file.content_type or "").lower() in _DICOM_TYPES or name.endswith(_DICOM_SUFFIXES)
        await file.close()
        return data, index, values, dicom_hint


# -------------------------------------------------------------------------------- the app
def create_app(
    bundle: str | Path | Any,
    *,
    max_upload_mb: float = 20,
    max_megapixels: float = 64,
    token: str | None = None,
    max_concurrent: int = 2,
    max_queue: int = 16,
    cam: str | None = "gradcam",
    device: str | None = None,
    verify_key: bytes | None = None,
) -> FastAPI:
    """The scoring service for one bundle (see the module docstring).

    Args:
        bundle: A bundle folder (from ``usher2 fit``), or a loaded
            :class:`~usher2.score.engine.FrameScorer` (anything with ``score_frame`` and
            ``model_info``).
        max_upload_mb: Largest request body in MiB (the file plus a 64 KiB allowance for the
            form fields); larger requests get 413.
        max_megapixels: Largest decoded frame in megapixels (2**20 pixels), checked from the
            file's header before decoding; larger files get 413. A multi-frame upload may hold
            at most four such frames' worth of samples in all.
        token: Bearer token required on ``/v1/*``; None reads ``USHER2_API_TOKEN``; an empty
            string (or an unset variable) turns authentication off.
        max_concurrent: Requests processed at once (threads).
        max_queue: Requests that may wait for a thread; more get 503.
        cam: CAM method of the heat maps (``gradcam``, ...), or None for none. Ignored when
            ``bundle`` is a scorer.
        device: Torch device of the networks (None: CUDA when available). Ignored when
            ``bundle`` is a scorer.
        verify_key: Key of the bundle's signature (:func:`usher2.fusion.bundle.read_key`): a
            bundle folder without a matching ``signature.json`` is refused. Ignored when
            ``bundle`` is a scorer.

    Returns:
        The FastAPI app. The model is loaded here, so the first request is not slow.

    Raises:
        InputError: A bad bundle (one that fails :func:`usher2.fusion.bundle.load_bundle`'s checks,
            or its signature with ``verify_key``), or limits out of range.

    Example:
        >>> try:
        ...     create_app("runs/demo/bundles/combined", max_concurrent=0)
        ... except InputError as exc:
        ...     print(exc)
        max_concurrent: expected an integer >= 1, got 0
    """
    settings = _make_settings(max_upload_mb, max_megapixels, token, max_concurrent, max_queue)
    scorer = _load_scorer(bundle, cam, device, verify_key)
    service = _Service(_Runner(scorer, settings), _jsonable(scorer.model_info))
    app = FastAPI(
        title="usher2 scoring service",
        version=str(service.model_info.get("version") or "unknown"),
        description="HER2 status from one breast-ultrasound frame: probability, lesion mask and Grad-CAM.",
        lifespan=service.lifespan,
    )
    app.state.runner = service.runner
    app.state.settings = settings
    _add_error_handlers(app)
    service.register(app)
    app.add_middleware(_Gate, settings=settings)
    return app


def serve(bundle: str | Path | Any, host: str = "127.0.0.1", port: int = 8000, **settings: Any) -> None:
    """Load a bundle and serve it with uvicorn (one process) until interrupted.

    Args:
        bundle: A bundle folder or a loaded scorer (see :func:`create_app`).
        host: Interface to bind; the default answers on this machine only.
        port: TCP port.
        **settings: :func:`create_app`'s keywords (``max_upload_mb``, ``token``,
            ``max_concurrent``, ``max_queue``, ``cam``, ``device``), and ``log_level``
            (default ``"info"``).

    Example:
        >>> serve("runs/demo/bundles/combined", port=8000)  # doctest: +SKIP
    """
    import copy

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    log_level = str(settings.pop("log_level", "info")).lower()
    app = create_app(bundle, **settings)
    if host not in _LOOPBACK and not app.state.settings.token:
        warnings.warn(
            f"serving on {host} without a token: anyone who can reach port {port} can score frames "
            f"(set {TOKEN_ENV} or pass token=...)",
            stacklevel=2,
        )
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["usher2.service"] = {"handlers": ["default"], "level": log_level.upper(), "propagate": False}
    # uvicorn's access log would add the client address; the service logs its own line per request.
    uvicorn.run(app, host=host, port=port, log_level=log_level, log_config=log_config, access_log=False)
