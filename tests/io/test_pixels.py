"""Pixel helpers (usher2.io.pixels): BT.601 luma, worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from usher2.io.pixels import LUMA, rgb_to_grey


def test_luma_of_pure_and_mixed_colours() -> None:
    assert LUMA == (0.299, 0.587, 0.114) and sum(LUMA) == pytest.approx(1.0)
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    grey = rgb_to_grey(rgb, scale=255)
    assert grey.dtype == np.float32 and grey.shape == (1, 4)
    np.testing.assert_allclose(grey[0], [0.299, 0.587, 0.114, (2.99 + 11.74 + 3.42) / 255], rtol=1e-6)


def test_alpha_is_ignored() -> None:
    rgba = np.array([[[100, 100, 100, 0]]], np.uint8)
    assert rgb_to_grey(rgba).tolist() == [[pytest.approx(100.0)]]
