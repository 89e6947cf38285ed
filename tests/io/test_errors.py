"""Input errors (usher2.io.errors): where, expected, got and the fix in one line; failures keep the type."""

from __future__ import annotations

from usher2.io.errors import Failure, InputError, NoLesion


def test_input_error_message_and_fields() -> None:
    e = InputError("a.png", "an image of at least 8x8 pixels", "2x3", fix="use a larger frame")
    assert str(e) == "a.png: expected an image of at least 8x8 pixels, got 2x3 (use a larger frame)"
    assert (e.where, e.expected, e.got, e.fix) == (
        "a.png",
        "an image of at least 8x8 pixels",
        "2x3",
        "use a larger frame",
    )
    assert isinstance(e, ValueError)


def test_no_lesion_is_an_input_error_and_failures_name_the_exception() -> None:
    n = NoLesion("frame 3")
    assert (
        isinstance(n, InputError)
        and str(n) == "frame 3: expected a lesion found by the segmenter, got an empty predicted mask"
    )
    assert Failure.from_exception("c1", KeyError("x")) == Failure("c1", "KeyError: 'x'")
