"""Shared argument checks of the statistics (usher2.evaluate._checks): what is refused and why."""

from __future__ import annotations

import numpy as np
import pytest

from usher2.evaluate._checks import check_binary
from usher2.io.errors import InputError


def test_labels_and_scores_come_back_typed() -> None:
    y, (s,) = check_binary([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8])
    assert y.tolist() == [0, 1, 0, 1] and y.dtype.kind == "i" and s.dtype == np.float64


@pytest.mark.parametrize(
    ("y", "score", "message"),
    [
        ([1, 1, 1], [0.2, 0.3, 0.4], r"y: expected both classes 0 and 1, got only class 1 \(3 cases\)"),
        ([0, 1, 0, 1], [0.1, 0.2, 0.3], r"score: expected one value per case \(4\), got shape \(3,\)"),
        ([0, 1, 0, 1], [0.1, np.nan, 0.3, 0.4], "NaN"),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], "got the constant 0.5 for all 4 cases"),
    ],
)
def test_bad_inputs_are_named(y: list, score: list, message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_binary(y, score)
