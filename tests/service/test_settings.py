"""The service's limits and token (usher2.service.settings)."""

from __future__ import annotations

import pytest

from usher2.io.errors import InputError
from usher2.service.settings import FORM_SLACK, MIB, TOKEN_ENV, make_settings


def test_the_upload_limit_adds_the_form_allowance():
    s = make_settings(0.5, 64, "t", 2, 16)
    assert s.max_upload_bytes == 524_288 + 65_536 == int(0.5 * MIB) + FORM_SLACK
    assert s.max_upload_mb == 0.5 and s.max_concurrent == 2 and s.max_queue == 16


def test_a_multi_frame_file_may_hold_four_frames_of_samples():
    s = make_settings(20, 0.01, "", 1, 0)
    assert s.pixel_limits.frame_pixels == int(0.01 * 2**20) == 10_485
    assert s.pixel_limits.file_samples == 4 * 10_485


def test_the_token_comes_from_the_environment_unless_given(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "env-token")
    assert make_settings(20, 64, None, 2, 16).token == "env-token"
    assert make_settings(20, 64, "given", 2, 16).token == "given"
    assert make_settings(20, 64, "", 2, 16).token is None  # "" turns authentication off
    monkeypatch.delenv(TOKEN_ENV)
    assert make_settings(20, 64, None, 2, 16).token is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((20, 64, "", 0, 16), "max_concurrent: expected an integer >= 1, got 0"),
        ((20, 64, "", 1.5, 16), "max_concurrent: expected an integer >= 1, got 1.5"),
        ((20, 64, "", 2, -1), "max_queue: expected an integer >= 0, got -1"),
        ((0, 64, "", 2, 16), "max_upload_mb: expected a size in MiB > 0, got 0"),
        ((float("nan"), 64, "", 2, 16), "max_upload_mb: expected a size in MiB > 0, got nan"),
        ((20, 0, "", 2, 16), "max_megapixels: expected a number of megapixels > 0"),
        ((20, 64, "", 2, 16, {"max_batch": 0}), "max_batch: expected an integer >= 1, got 0"),
        ((20, 64, "", 2, 16, {"max_batch": 4.0}), "max_batch: expected an integer >= 1, got 4.0"),
        ((20, 64, "", 2, 16, {"max_batch": True}), "max_batch: expected an integer >= 1, got True"),
        (
            (20, 64, "", 2, 16, {"max_wait_ms": -1}),
            "max_wait_ms: expected a finite number of milliseconds >= 0, got -1",
        ),
        ((20, 64, "", 2, 16, {"max_wait_ms": float("nan")}), "max_wait_ms: expected a finite number of"),
        ((20, 64, "", 2, 16, {"max_wait_ms": float("inf")}), "max_wait_ms: expected a finite number of"),
        (
            (20, 64, "", 2, 16, {"max_wait_ms": "5"}),
            "max_wait_ms: expected a finite number of milliseconds >= 0, got '5'",
        ),
    ],
)
def test_a_limit_out_of_range_is_named(args, message):
    kw = args[5] if len(args) > 5 else {}
    with pytest.raises(InputError) as info:
        make_settings(*args[:5], **kw)
    assert str(info.value).startswith(message)


def test_the_batching_settings_default_to_16_frames_and_5_ms():
    s = make_settings(20, 64, "", 2, 16)
    assert (s.max_batch, s.max_wait_ms) == (16, 5.0)
    s = make_settings(20, 64, "", 2, 16, max_batch=1, max_wait_ms=0)
    assert (s.max_batch, s.max_wait_ms) == (1, 0.0) and isinstance(s.max_wait_ms, float)
