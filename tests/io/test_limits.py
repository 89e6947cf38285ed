"""The decoded-size limit itself (usher2.io.limits): the boundary, the messages and where a limit comes from.

The readers that apply it are tested in ``test_decode_limits.py`` (issue 22's pixel bombs).
"""

from __future__ import annotations

import threading

import pytest

from usher2.io.errors import InputError
from usher2.io.limits import (
    LIMITS_ENV,
    MAX_FILE_SAMPLES,
    MEGAPIXEL,
    DecodedSizeError,
    PixelLimits,
    default_limits,
    pixel_limits,
    resolve_limits,
)


@pytest.fixture(autouse=True)
def _no_env_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LIMITS_ENV, raising=False)


def test_a_frame_at_the_limit_passes_and_one_row_more_is_refused_naming_file_size_and_limit() -> None:
    lim = PixelLimits(frame_pixels=100, file_samples=1000)
    lim.check_frame("x.png", 10, 10)  # exactly 100 pixels
    with pytest.raises(DecodedSizeError) as err:
        lim.check_frame("x.png", 11, 10)
    e = err.value
    assert isinstance(e, InputError)  # callers that handle bad input handle it too
    assert e.where == "x.png"
    assert e.expected.startswith("a frame of at most 100 pixels")
    assert e.got.startswith("11x10 (rows x columns) = 110 pixels")
    assert "--max-megapixels" in str(e) and LIMITS_ENV in str(e)


def test_the_message_states_megapixels_of_2_to_the_20_pixels() -> None:
    lim = PixelLimits.from_megapixels(1)
    with pytest.raises(DecodedSizeError) as err:
        lim.check_frame("big.dcm", 2048, 1024, what="frame 3")
    # 2048 * 1024 = 2,097,152 pixels = exactly 2 megapixels; the limit is 1,048,576 = 1 megapixel
    assert "frame 3 of at most 1,048,576 pixels (1 megapixels" in err.value.expected
    assert err.value.got == "2048x1024 (rows x columns) = 2,097,152 pixels (2 megapixels)"


def test_check_file_counts_rows_columns_samples_and_frames() -> None:
    lim = PixelLimits(frame_pixels=100, file_samples=1200)
    lim.check_file("cine.dcm", 10, 10, samples=3, frames=4)  # 1,200 samples: at the limit
    with pytest.raises(DecodedSizeError) as err:
        lim.check_file("cine.dcm", 10, 10, samples=3, frames=5)
    assert err.value.where == "cine.dcm"
    assert err.value.got == "10x10x3x5 = 1,500 samples"
    assert "at most 1,200 samples" in err.value.expected
    assert "split the file" in str(err.value)


@pytest.mark.parametrize(
    ("megapixels", "frame", "file"),
    [
        (0.5, MEGAPIXEL // 2, MAX_FILE_SAMPLES),
        (64, 64 * MEGAPIXEL, MAX_FILE_SAMPLES),  # the default: 4 samples of one frame = 2**28 < 2**30
        (512, 512 * MEGAPIXEL, 4 * 512 * MEGAPIXEL),  # one RGBA frame at the limit must fit in a file
    ],
)
def test_from_megapixels_keeps_one_rgba_frame_inside_the_file_limit(megapixels: float, frame: int, file: int) -> None:
    lim = PixelLimits.from_megapixels(megapixels)
    assert (lim.frame_pixels, lim.file_samples) == (frame, file)
    assert lim.file_samples >= 4 * lim.frame_pixels


@pytest.mark.parametrize("bad", [True, "64", None])
def test_a_limit_that_is_not_an_integer_is_refused_naming_the_field(bad: object) -> None:
    with pytest.raises(InputError, match=r"^frame_pixels: expected an integer >= 64"):
        PixelLimits(frame_pixels=bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"^file_samples: expected an integer >= 64"):
        PixelLimits(file_samples=bad)  # type: ignore[arg-type]


def test_from_megapixels_names_the_setting_it_came_from() -> None:
    with pytest.raises(InputError, match=r"^--max-megapixels: expected a number of megapixels > 0, got True"):
        PixelLimits.from_megapixels(True, where="--max-megapixels")  # type: ignore[arg-type]
    # 0.00005 * 2**20 = 52 pixels: under one 8 x 8 frame
    with pytest.raises(InputError, match=r"^cfg\.limit: expected at least 64 pixels .* got 52 pixels"):
        PixelLimits.from_megapixels(0.00005, where="cfg.limit")


def test_limits_are_frozen() -> None:
    with pytest.raises(AttributeError):
        PixelLimits().frame_pixels = 1  # type: ignore[misc]


def test_default_comes_from_the_context_then_the_environment_then_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_limits() == PixelLimits()
    monkeypatch.setenv(LIMITS_ENV, " 2 ")
    assert default_limits() == PixelLimits.from_megapixels(2)
    assert default_limits().frame_pixels == 2 * MEGAPIXEL
    outer, inner = PixelLimits(frame_pixels=1000), PixelLimits(frame_pixels=500)
    with pixel_limits(outer) as got:
        assert got is outer and default_limits() is outer
        with pixel_limits(inner):
            assert default_limits() is inner
        assert default_limits() is outer  # the inner block restored the outer one
    assert default_limits().frame_pixels == 2 * MEGAPIXEL
    monkeypatch.setenv(LIMITS_ENV, "-3")
    with pytest.raises(InputError, match=rf"^{LIMITS_ENV}: expected a number of megapixels > 0"):
        default_limits()


def test_the_context_holds_in_its_own_thread_only() -> None:
    seen: list[int] = []
    with pixel_limits(PixelLimits(frame_pixels=1000)):
        t = threading.Thread(target=lambda: seen.append(default_limits().frame_pixels))
        t.start()
        t.join()
        assert default_limits().frame_pixels == 1000
    assert seen == [PixelLimits().frame_pixels]


def test_the_context_is_restored_after_an_error_and_refuses_anything_but_limits() -> None:
    with pytest.raises(RuntimeError), pixel_limits(PixelLimits(frame_pixels=1000)):
        raise RuntimeError("boom")
    assert default_limits() == PixelLimits()
    with pytest.raises(InputError, match=r"^limits: expected a PixelLimits, got dict"), pixel_limits({}):  # type: ignore[arg-type]
        pass


def test_resolve_limits_prefers_the_argument() -> None:
    mine = PixelLimits(frame_pixels=4096)
    assert resolve_limits(mine) is mine
    with pixel_limits(PixelLimits(frame_pixels=1000)):
        assert resolve_limits(mine) is mine
        assert resolve_limits(None).frame_pixels == 1000
