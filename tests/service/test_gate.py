"""The ASGI gate (usher2.service.gate): request id, token, body-size cap, security headers, log line."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from usher2.service.api_errors import REQUEST_ID_KEY
from usher2.service.gate import Gate, header
from usher2.service.settings import make_settings


class Echo:
    """An ASGI app that reads the whole body and answers its length and the request id."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = f"{size} {scope[REQUEST_ID_KEY]}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})


def _client(token: str = "", max_upload_mb: float = 0.1) -> tuple[TestClient, Echo]:
    inner = Echo()
    return TestClient(Gate(inner, make_settings(max_upload_mb, 64, token, 1, 0))), inner


def test_header_is_case_insensitive_and_first_wins():
    scope = {"headers": [(b"X-A", b"1"), (b"x-a", b"2")]}
    assert header(scope, b"x-a") == "1" and header(scope, b"x-b") is None and header({}, b"x-a") is None


def test_every_response_gets_a_request_id_and_the_security_headers():
    c, _ = _client()
    r = c.post("/v1/score", content=b"abc")
    size, rid = r.text.split()
    assert size == "3" and r.headers["x-request-id"] == rid and len(rid) == 16
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
    page = c.get("/")
    assert page.headers["x-request-id"] != rid and "cache-control" not in page.headers


@pytest.mark.parametrize(
    ("auth", "got", "challenge"),
    [
        (None, "no Authorization header", "Bearer"),
        ("Bearer nope", "a token that does not match", 'Bearer error="invalid_token"'),
        ("Basic czNjcmV0", "the scheme 'Basic'", 'Bearer error="invalid_token"'),
    ],
)
def test_a_missing_or_wrong_token_is_401_before_the_app(auth, got, challenge):
    c, inner = _client(token="s3cret")
    r = c.get("/v1/model", headers={} if auth is None else {"Authorization": auth})
    assert r.status_code == 401 and r.headers["www-authenticate"] == challenge
    j = r.json()
    assert j["field"] == "Authorization" and j["got"] == got and j["request_id"] == r.headers["x-request-id"]
    assert inner.calls == 0


def test_the_right_token_passes_and_paths_outside_v1_need_none():
    c, inner = _client(token="s3cret")
    assert c.get("/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/healthz").status_code == 200 and inner.calls == 2


def test_a_declared_length_over_the_limit_is_413_unread():
    c, inner = _client(max_upload_mb=0.1)  # 104,857 + 65,536 bytes
    r = c.post("/v1/score", content=bytes(170_394))
    assert r.status_code == 413 and inner.calls == 0
    j = r.json()
    assert j["expected"] == "at most 0.1 MiB (the upload limit)" and j["got"] == "0.2 MiB (Content-Length)"
    assert j["fix"] == "send a smaller file" and j["detail"].startswith("request body: expected at most 0.1 MiB")
    assert c.post("/v1/score", content=bytes(170_393)).text.startswith("170393 ")  # exactly at the limit


def test_a_streamed_body_is_cut_off_at_the_limit():
    c, _ = _client(max_upload_mb=0.1)
    r = c.post("/v1/score", content=iter([bytes(100_000), bytes(100_000)]))  # chunked: no Content-Length
    assert r.status_code == 413 and r.json()["got"] == "more than that (0.2 MiB and counting)"


def test_one_log_line_per_request_without_the_body(caplog):
    caplog.set_level(logging.INFO, logger="usher2.service")
    c, _ = _client()
    r = c.post("/v1/score?x=1", content=b"secret-body")
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "usher2.service"]
    assert len(lines) == 1
    assert lines[0].startswith(
        f"request_id={r.headers['x-request-id']} method=POST path=/v1/score status=200 bytes_in=11 "
    )
    assert "secret-body" not in lines[0] and "x=1" not in lines[0]


def test_an_unhandled_error_is_a_500_with_the_request_id(caplog):
    async def boom(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    c = TestClient(Gate(boom, make_settings(1, 64, "", 1, 0)), raise_server_exceptions=False)
    r = c.get("/v1/model")
    rid = r.headers["x-request-id"]
    assert r.status_code == 500 and r.json() == {"detail": f"internal error (request id {rid})", "request_id": rid}
