"""The scoring service: HTTP API and web page around :class:`~usher2.score.engine.FrameScorer`.

``create_app(bundle, ...)`` builds the FastAPI app (see :mod:`usher2.service.app`); ``serve(bundle,
host, port, ...)`` runs it with uvicorn. Masks come back as PNG and as COCO run-length encoding
(:mod:`usher2.service.rle`).
"""

from __future__ import annotations

from usher2.service.api_errors import ApiError
from usher2.service.app import create_app, serve
from usher2.service.responses import ScoreResponse
from usher2.service.rle import rle_decode, rle_encode
from usher2.service.settings import TOKEN_ENV
from usher2.service.upload import parse_clinical

__all__ = [
    "TOKEN_ENV",
    "ApiError",
    "ScoreResponse",
    "create_app",
    "parse_clinical",
    "rle_decode",
    "rle_encode",
    "serve",
]
