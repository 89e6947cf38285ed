"""The ASGI gate in front of the app: request id, log line, bearer token, body-size cap, security headers.

:class:`Gate` is the outermost layer. It runs before FastAPI reads the body, so a request without
the token or with a Content-Length over the limit is answered without reading its body; a body
without Content-Length is counted as it streams in and cut off at the limit. Every response gets
``X-Request-ID`` and ``X-Content-Type-Options: nosniff``, and those under ``/v1/`` get
``Cache-Control: no-store``. Each request logs one line to the ``usher2.service`` logger: request
id, method, path, status, bytes received and seconds (never the filename or the client address).
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from typing import Any

from fastapi.responses import JSONResponse

from usher2.service.api_errors import REQUEST_ID_KEY, ApiError, error_response
from usher2.service.settings import MIB, Settings

__all__ = ["Gate", "header", "logger"]

logger = logging.getLogger("usher2.service")


class Gate:
    """Outermost layer: request id, one log line per request, bearer token, body-size cap.

    It runs before FastAPI reads the body, so a request without the token or with a
    Content-Length over the limit is answered without reading its body.
    """

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def _auth(self, scope: dict[str, Any]) -> ApiError | None:
        token = self.settings.token
        if not token or not scope["path"].startswith("/v1/"):
            return None
        header_value = header(scope, b"authorization")
        expected = "a bearer token in the header 'Authorization: Bearer <token>'"
        if header_value is None:
            return ApiError(
                401, "Authorization", expected, "no Authorization header", headers={"WWW-Authenticate": "Bearer"}
            )
        scheme, _, value = header_value.partition(" ")
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
        scope[REQUEST_ID_KEY] = rid
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
            length = header(scope, b"content-length")
            if error is None and length is not None and length.isdigit() and int(length) > limit:
                error = self._too_large(f"{int(length) / MIB:.1f} MiB (Content-Length)")
            if error is not None:
                await error_response(error, rid)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive_capped, send_with_id)
        except ApiError as exc:  # the cap tripped outside FastAPI's handlers
            if not state["started"]:
                await error_response(exc, rid)(scope, receive, send_with_id)
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


def header(scope: dict[str, Any], name: bytes) -> str | None:
    """The first value of the request header ``name`` (lower case) in an ASGI scope, or None.

    Example:
        >>> header({"headers": [(b"Content-Length", b"42")]}, b"content-length")
        '42'
    """
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None
