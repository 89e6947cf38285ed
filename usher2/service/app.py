"""The scoring service: a FastAPI app around :class:`~usher2.score.engine.FrameScorer`.

**Endpoints**

================  ======================================================================================
``POST /v1/score`` multipart form: ``file`` (PNG, JPEG, TIFF, BMP or DICOM; one frame), optional
                   ``clinical`` (a JSON object of the model's clinical columns, numbers or null) and
                   ``frame`` (frame index of a multi-frame DICOM, default 0). Returns
                   :class:`~usher2.service.responses.ScoreResponse`. A frame where no lesion is found is a 200 with
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
  ``clinical`` field longer than :data:`~usher2.service.upload.MAX_CLINICAL_CHARS`, or a file whose header declares more
  than ``max_megapixels`` per frame (checked before decoding, see :mod:`usher2.io.limits`; a
  multi-frame upload may hold four such frames' worth of samples in all, as one frame is read);
* 415: content that is neither an image nor DICOM (or a video);
* 422: a recognised file that cannot be read (corrupt, too small, a frame index out of range),
  ``clinical`` that is not an object or has unknown keys or non-numeric values or a value far
  outside the model's training range (:mod:`usher2.fusion.clinical`), or a frame
  whose features cannot be computed;
* 503: more than ``max_concurrent + max_queue`` requests in the service (with ``Retry-After`` in seconds).

**Privacy.** The uploaded filename and DICOM tags are never logged or returned: the upload is
written to a private temporary file and read with :func:`usher2.io.frames.read_frame`, which
keeps only allow-listed, de-identified DICOM metadata (:func:`usher2.io.dicom.safe_metadata`),
and the response carries none of it. Each request logs one line to the ``usher2.service``
logger: request id, method, path, status, bytes received and seconds. Every response carries
``X-Request-ID``.

**Concurrency.** At most ``max_concurrent + max_queue`` requests are in the service at once
(:mod:`~usher2.service.backpressure`); beyond that it answers 503 at once. Reading, decoding and
PNG encoding run on a pool of ``max_concurrent`` threads, in parallel. The model runs in one
worker thread (:mod:`~usher2.service.batching`): frames that arrive within ``max_wait_ms`` of
each other, up to ``max_batch``, go through the networks together in one call of the scorer
(requests waiting while a batch runs form the next one), and each request gets its own frame's
result or error. The networks and the Grad-CAM hooks on the shared backbone are only ever used
by that thread, so no lock is needed and two heat maps never collide. A frame scored in a batch
gets the probability it gets alone, up to the last bits of float32 (a network's output depends
in the last bits on the batch it runs in; see :mod:`usher2.score.engine`). Each response's
``timings`` say how long it waited for the batch (``model_wait_s``), how long the batch ran
(``score_s``) and how many frames it held (``batch_size``). ``torch.set_num_threads`` is never
changed per request.


**Modules.** This one builds the app (:func:`create_app`: the routes, the error handlers) and
serves it (:func:`serve`); the parts live beside it: :mod:`~usher2.service.upload` (the form and
the file), :mod:`~usher2.service.scoring` (the call to the scorer and the encodings),
:mod:`~usher2.service.batching` and :mod:`~usher2.service.batch_score` (the micro-batches and the
model's worker thread), :mod:`~usher2.service.backpressure` (the admitted requests and the
thread pool), :mod:`~usher2.service.gate`
(request id, token, size cap, headers), :mod:`~usher2.service.api_errors` (the error body),
:mod:`~usher2.service.responses` (the response models) and :mod:`~usher2.service.settings` (the limits).

Example:
    >>> from fastapi.testclient import TestClient
    >>> app = create_app("runs/demo/bundles/combined")  # doctest: +SKIP
    >>> TestClient(app).get("/healthz").json()["model_loaded"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from usher2.service.api_errors import ApiError, error_response, request_id
from usher2.service.backpressure import Runner
from usher2.service.gate import Gate
from usher2.service.gate import logger as logger
from usher2.service.page import render_page
from usher2.service.responses import RLE as RLE
from usher2.service.responses import FrameInfo as FrameInfo
from usher2.service.responses import ModelRef as ModelRef
from usher2.service.responses import ScoreResponse
from usher2.service.scoring import UploadScorer
from usher2.service.settings import MIB as MIB
from usher2.service.settings import TOKEN_ENV, make_settings
from usher2.service.upload import FORMATS, parse_clinical, read_form
from usher2.service.upload import MAX_CLINICAL_CHARS as MAX_CLINICAL_CHARS

# logger, RLE, FrameInfo, ModelRef, MIB and MAX_CLINICAL_CHARS are re-exported: they were defined here before
# the split of issue 24 and stay importable from usher2.service.app.
__all__ = ["TOKEN_ENV", "ApiError", "ScoreResponse", "create_app", "parse_clinical", "serve"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


# --------------------------------------------------------------------- the model
def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


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
    return error_response(exc, request_id(request))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (a malformed multipart body, an unknown path) in the service's error format."""
    if isinstance(exc, ApiError):
        return error_response(exc, request_id(request))
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
    return error_response(err, request_id(request))


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]  # FastAPI's own message, without the "input" it would echo
    field = ".".join(str(x) for x in first.get("loc", ()) if x not in ("body", "query")) or "request"
    if field == "file":  # a plain text field named "file" instead of a file part
        err = ApiError(422, "file", f"an uploaded file part (with a filename) holding {FORMATS}", "a text field")
    else:
        err = ApiError(422, field, "a valid value", str(first.get("msg", "an invalid one")))
    return error_response(err, request_id(request))


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
    """Declares the bearer scheme in OpenAPI.

    The check itself is in :class:`~usher2.service.gate.Gate`, before the body is read.
    """


class _Service:
    """One app's state (the scoring adapter, the runner, the model's metadata, the web page) and its endpoints.

    The endpoint methods have no docstrings on purpose: FastAPI would publish them in OpenAPI.
    """

    def __init__(self, adapter: UploadScorer, runner: Runner, model_info: dict[str, Any]) -> None:
        self.adapter = adapter
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
        """The app's lifespan: the model's worker thread and the thread pool stop when the app does."""
        yield
        # Off the event loop: the worker finishes the frames already submitted before it stops.
        await asyncio.to_thread(self.adapter.batcher.close)
        await asyncio.to_thread(self.runner.pool.shutdown, wait=True, cancel_futures=True)

    async def healthz(self) -> dict[str, Any]:
        runner = self.runner
        batcher = self.adapter.batcher
        return {
            "status": "ok",
            "model_loaded": self.adapter.scorer is not None,
            "pending": runner.pending,
            "capacity": runner.capacity,
            "batch_queue": batcher.depth,
            "max_batch": batcher.max_batch,
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
        adapter = self.adapter
        form = await read_form(file, clinical, frame, columns=adapter.clinical, ranges=adapter.clinical_ranges)
        out = await self.runner.run(lambda ticket: adapter.score_upload(ticket, *form))
        out["timings"]["total_s"] = time.perf_counter() - t0
        out["request_id"] = request_id(request)
        return out


# -------------------------------------------------------------------------------- the app
def create_app(
    bundle: str | Path | Any,
    *,
    max_upload_mb: float = 20,
    max_megapixels: float = 64,
    token: str | None = None,
    max_concurrent: int = 2,
    max_queue: int = 16,
    max_batch: int = 16,
    max_wait_ms: float = 5.0,
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
        max_concurrent: Threads reading and encoding uploads at once.
        max_queue: Requests admitted beyond ``max_concurrent`` (waiting for a thread or for the
            model); more get 503.
        max_batch: Most frames that go through the networks in one batch.
        max_wait_ms: Longest wait, from a frame's arrival, for other frames to join its batch
            (0: a batch is whatever has arrived when the model is free).
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
        >>> from usher2.io.errors import InputError
        >>> try:
        ...     create_app("runs/demo/bundles/combined", max_concurrent=0)
        ... except InputError as exc:
        ...     print(exc)
        max_concurrent: expected an integer >= 1, got 0
    """
    settings = make_settings(
        max_upload_mb, max_megapixels, token, max_concurrent, max_queue, max_batch=max_batch, max_wait_ms=max_wait_ms
    )
    scorer = _load_scorer(bundle, cam, device, verify_key)
    adapter = UploadScorer(
        scorer, settings.pixel_limits, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms
    )
    service = _Service(adapter, Runner(settings), _jsonable(scorer.model_info))
    app = FastAPI(
        title="usher2 scoring service",
        version=str(service.model_info.get("version") or "unknown"),
        description="HER2 status from one breast-ultrasound frame: probability, lesion mask and Grad-CAM.",
        lifespan=service.lifespan,
    )
    app.state.runner = service.runner
    app.state.batcher = adapter.batcher
    app.state.settings = settings
    _add_error_handlers(app)
    service.register(app)
    app.add_middleware(Gate, settings=settings)
    return app


def serve(bundle: str | Path | Any, host: str = "127.0.0.1", port: int = 8000, **settings: Any) -> None:
    """Load a bundle and serve it with uvicorn (one process) until interrupted.

    Args:
        bundle: A bundle folder or a loaded scorer (see :func:`create_app`).
        host: Interface to bind; the default answers on this machine only.
        port: TCP port.
        **settings: :func:`create_app`'s keywords (``max_upload_mb``, ``token``,
            ``max_concurrent``, ``max_queue``, ``max_batch``, ``max_wait_ms``, ``cam``,
            ``device``), and ``log_level``
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
