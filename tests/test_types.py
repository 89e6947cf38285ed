"""The shared Frame type (usher2.types): shape, and the checks that name the source."""

from __future__ import annotations

import numpy as np
import pytest

from usher2.types import Frame


def test_frame_shape_and_defaults() -> None:
    f = Frame(np.zeros((4, 5), np.float32), spacing=(0.1, 0.2), source="mem")
    assert f.shape == (4, 5) and f.index == 0 and dict(f.metadata) == {} and f.scan_mask is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pixels": np.zeros((1, 4, 5), np.float32)}, r"2-D \(H, W\) array, got \(1, 4, 5\) from mem"),
        ({"pixels": np.zeros((4, 5), np.uint8)}, "float32, got uint8 from mem"),
        ({"scan_mask": np.zeros((4, 4), bool)}, r"scan_mask shape \(4, 4\) differs from pixels \(4, 5\)"),
        ({"spacing": (0.1, 0.0)}, r"two positive mm values, got \(0.1, 0.0\)"),
    ],
)
def test_bad_frames_are_refused_naming_the_source(kwargs: dict, message: str) -> None:
    args = {"pixels": np.zeros((4, 5), np.float32), "spacing": None, "source": "mem", **kwargs}
    with pytest.raises(ValueError, match=message):
        Frame(**args)
