"""The service's error answer (usher2.service.api_errors): the JSON body, its status and headers, the request id."""

from __future__ import annotations

import json

from starlette.requests import Request

from usher2.service.api_errors import REQUEST_ID_KEY, ApiError, error_response, request_id

ERROR_KEYS = {"detail", "field", "expected", "got", "fix", "request_id"}


def test_the_body_names_field_expected_got_and_fix():
    e = ApiError(422, "clinical.er", "a number or null", "a boolean", fix="send 0/1 for yes/no")
    body = e.content("abc123")
    assert set(body) == ERROR_KEYS
    assert body == {
        "detail": "clinical.er: expected a number or null, got a boolean (send 0/1 for yes/no)",
        "field": "clinical.er",
        "expected": "a number or null",
        "got": "a boolean",
        "fix": "send 0/1 for yes/no",
        "request_id": "abc123",
    }
    assert e.status_code == 422 and e.headers is None


def test_the_response_carries_status_and_headers():
    e = ApiError(503, "service", "a free thread", "a full queue", headers={"Retry-After": "7"})
    r = error_response(e, None)
    assert r.status_code == 503 and r.headers["retry-after"] == "7"
    assert json.loads(r.body)["request_id"] is None


def test_the_request_id_is_read_from_the_scope():
    assert request_id(Request({"type": "http", REQUEST_ID_KEY: "00ff"})) == "00ff"
    assert request_id(Request({"type": "http"})) is None
