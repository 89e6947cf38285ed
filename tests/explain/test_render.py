"""Overlays and contact sheets (usher2.explain.render): the ROI box, the green contour, the sheet's borders."""

from __future__ import annotations

import numpy as np
import pytest

from usher2.explain.render import CONTOUR, contact_sheet, heat_box, render_overlay
from usher2.io.errors import InputError


def test_heat_box_covers_the_mask_box_and_every_heated_pixel() -> None:
    m = np.zeros((40, 60), bool)
    m[10:20, 20:30] = True
    h = np.zeros((40, 60), np.float32)
    h[12, 22] = 0.5
    box = heat_box(m, h)
    ys, xs = np.nonzero(box)
    assert box.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # one rectangle
    assert box[m].all()
    h[39, 59] = 0.1  # heat outside the ROI box grows it to the corner
    assert heat_box(m, h)[39, 59] and not heat_box(None, np.zeros((4, 4))).any()


def test_overlay_is_grey_without_heat_and_draws_the_green_contour() -> None:
    pixels = np.full((64, 64), 0.5, np.float32)
    m = np.zeros((64, 64), bool)
    m[20:40, 20:40] = True
    rgb = render_overlay(pixels, m, None)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[20, 30]) == CONTOUR and tuple(rgb[30, 30]) == (128, 128, 128)  # 0.5 * 255 rounds to 128
    assert (render_overlay(pixels, None, None) == 128).all()


def test_contact_sheet_size_and_border_colours() -> None:
    tiles = [np.zeros((32, 48, 3), np.uint8)] * 3
    sheet = contact_sheet(tiles, ["0", "1", "2"], [True, False, None], width=48, columns=2)
    # 2 columns of 48 + 4 px; 2 rows of 32 + 18 (caption) + 4 px
    assert sheet.shape == (2 * (32 + 18 + 4), 2 * (48 + 4), 3)
    assert tuple(sheet[0, 0]) == (230, 40, 40) and tuple(sheet[0, 52]) == CONTOUR and tuple(sheet[54, 0]) == (150,) * 3
    with pytest.raises(InputError, match="at least one frame"):
        contact_sheet([], [], [])
