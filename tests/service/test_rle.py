"""COCO uncompressed RLE of masks: hand-worked counts, round trips, and bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from usher2.io.errors import InputError
from usher2.service import rle_decode, rle_encode


def _reference_counts(mask: np.ndarray) -> list[int]:
    """Run lengths by itertools.groupby over the column-major pixels, starting with a 0-run."""
    runs = [(bool(k), len(list(g))) for k, g in itertools.groupby(mask.ravel(order="F"))]
    counts = [n for _, n in runs]
    return [0, *counts] if runs and runs[0][0] else counts


def test_hand_worked_counts():
    m = np.array([[0, 0, 1], [1, 1, 1], [0, 0, 0]], bool)
    # Column-major: col 0 = 0 1 0, col 1 = 0 1 0, col 2 = 1 1 0 -> 0 | 1 | 0 0 | 1 | 0 | 1 1 | 0
    assert rle_encode(m) == {"size": [3, 3], "counts": [1, 1, 2, 1, 1, 2, 1], "order": "F"}
    assert rle_encode(np.ones((2, 3), bool))["counts"] == [0, 6]
    assert rle_encode(np.zeros((2, 3), bool))["counts"] == [6]


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_and_reference(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 40, size=2)
    m = rng.random((h, w)) < rng.random()
    rle = rle_encode(m)
    assert rle["counts"] == _reference_counts(m)
    assert sum(rle["counts"]) == h * w and sum(rle["counts"][1::2]) == m.sum()
    assert np.array_equal(rle_decode(rle), m)
    # Row-major decoding of the same counts is the transpose's story: check the order flag is honoured.
    c = {"size": [int(h), int(w)], "counts": _reference_counts(m.T.copy()), "order": "C"}
    assert np.array_equal(rle_decode(c), m)


def test_bad_rle():
    with pytest.raises(InputError, match="summing to H\\*W = 6"):
        rle_decode({"size": [2, 3], "counts": [1, 2]})
    with pytest.raises(InputError, match="'F' \\(column-major\\)"):
        rle_decode({"size": [1, 1], "counts": [1], "order": "X"})
    with pytest.raises(InputError, match="size"):
        rle_decode({"counts": [1]})
    with pytest.raises(InputError, match="2-D"):
        rle_encode(np.zeros(4, bool))
