"""The enhancer contract (usher2.enhance.base): batch checks that say what arrived and the fix."""

from __future__ import annotations

import numpy as np
import pytest

from usher2.enhance.base import check_batch


def test_a_good_batch_comes_back_as_float32() -> None:
    x = np.linspace(0, 1, 16).reshape(1, 1, 4, 4)
    y = check_batch(x)
    assert y.dtype == np.float32 and np.array_equal(y, x.astype(np.float32))


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((4, 4), np.float32), r"\(B, 1, H, W\) batch, got shape \(4, 4\) \(add axes with x\[None, None\]"),
        (np.zeros((1, 1, 4, 4), np.uint8), "got dtype uint8 \\(divide 8-bit data by 255"),
        (np.full((1, 1, 2, 2), np.inf, np.float32), "has 4 NaN/inf pixels"),
        (np.full((1, 1, 2, 2), 200.0, np.float32), r"got values in \[200, 200\] \(8-bit data\? divide by 255\)"),
        (np.zeros((0, 1, 4, 4), np.float32), "is empty"),
    ],
)
def test_bad_batches_are_explained(x: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_batch(x)
