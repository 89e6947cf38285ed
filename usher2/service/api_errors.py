"""The service's error answer: :class:`ApiError`, its JSON body, and the request id it carries.

Every error the service gives is the JSON object ``{"detail", "field", "expected", "got", "fix",
"request_id"}`` (see :mod:`usher2.service.app` for which status means what); :func:`error_response`
builds it. The request id is put in the ASGI scope under :data:`REQUEST_ID_KEY` by the gate
(:class:`~usher2.service.gate.Gate`) and read back with :func:`request_id`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from usher2.io.errors import InputError

__all__ = ["REQUEST_ID_KEY", "ApiError", "error_response", "request_id"]

REQUEST_ID_KEY = "usher2.request_id"
"""Key of the request's id in the ASGI scope."""


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


def error_response(exc: ApiError, request_id: str | None) -> JSONResponse:
    """The JSON answer of ``exc``: its body, status and headers.

    Example:
        >>> import json
        >>> r = error_response(ApiError(503, "service", "a free thread", "a full queue"), "abc")
        >>> r.status_code, json.loads(r.body)["detail"], json.loads(r.body)["request_id"]
        (503, 'service: expected a free thread, got a full queue', 'abc')
    """
    return JSONResponse(exc.content(request_id), status_code=exc.status_code, headers=exc.headers)


def request_id(request: Request) -> str | None:
    """The request's id, as the gate set it (None for a request that did not pass the gate).

    Example:
        >>> from starlette.requests import Request
        >>> request_id(Request({"type": "http", REQUEST_ID_KEY: "0123abcd"}))
        '0123abcd'
    """
    return request.scope.get(REQUEST_ID_KEY)
