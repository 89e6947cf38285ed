"""Raster images: a read round trip per format, grey conversion, dispatch and masks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from io_helpers import ramp
from PIL import Image

from usher2.io.frames import MIN_SIDE, frame_kind, iter_frames, read_frame, read_image, read_mask


def _save(path: Path, arr: np.ndarray, mode: str | None = None, **kw: object) -> Path:
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path, **kw)
    return path


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_8bit_grey_round_trips_exactly(tmp_path: Path, suffix: str) -> None:
    a = ramp(24, 32, 255).astype(np.uint8)
    f = read_frame(_save(tmp_path / f"g{suffix}", a))
    assert f.pixels.dtype == np.float32 and f.shape == (24, 32)
    np.testing.assert_allclose(f.pixels, a / 255.0, atol=1e-7)
    assert f.spacing is None and f.index == 0 and f.metadata["bits"] == 8


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grey_is_scaled_by_65535(tmp_path: Path, suffix: str) -> None:
    a = ramp(20, 16, 65535, seed=1).astype(np.uint16)
    f = read_frame(_save(tmp_path / f"g16{suffix}", a))
    np.testing.assert_allclose(f.pixels, a / 65535.0, atol=1e-7)
    assert f.metadata["bits"] == 16
    assert float(f.pixels.max()) == 1.0 and float(f.pixels.min()) == 0.0


def test_jpeg_round_trips_within_tolerance(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:64, 0:64]
    a = ((xx + yy) * 2).astype(np.uint8)  # smooth: JPEG keeps it closely
    f = read_frame(_save(tmp_path / "g.jpg", a, quality=95))
    assert float(np.abs(f.pixels - a / 255.0).mean()) < 0.01


def test_rgb_to_grey_uses_bt601_weights(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (0, 0, 255)
    rgb[0, 3] = (10, 20, 30)
    rgb[0, 4] = (255, 255, 255)
    for suffix in (".png", ".bmp", ".tif"):
        f = read_frame(_save(tmp_path / f"rgb{suffix}", rgb))
        np.testing.assert_allclose(
            f.pixels[0, :5],
            [0.299, 0.587, 0.114, (0.299 * 10 + 0.587 * 20 + 0.114 * 30) / 255, 1.0],
            atol=1e-6,
        )


def test_rgba_ignores_alpha_and_palette_uses_its_colours(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 7
    assert read_frame(_save(tmp_path / "a.png", rgba)).pixels[3, 3] == pytest.approx(0.299)
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.save(tmp_path / "p.png")
    f = read_frame(tmp_path / "p.png")
    assert f.metadata["mode"] == "P"
    np.testing.assert_allclose(f.pixels, 0.587, atol=1e-6)


def test_16bit_rgb_keeps_its_depth(tmp_path: Path) -> None:
    bgr = np.zeros((8, 8, 3), np.uint16)
    bgr[..., 2] = 65535  # red
    bgr[0, 0, 2] = 1  # one count of red: only visible at 16 bit
    cv2.imwrite(str(tmp_path / "c16.png"), bgr)
    f = read_frame(tmp_path / "c16.png")
    assert f.metadata["bits"] == 16
    assert f.pixels[1, 1] == pytest.approx(0.299)
    assert f.pixels[0, 0] == pytest.approx(0.299 / 65535, abs=1e-9)


def test_bilevel_and_float_tiff(tmp_path: Path) -> None:
    b = np.zeros((8, 8), bool)
    b[2:5, 2:5] = True
    f = read_frame(_save(tmp_path / "b.png", b))
    assert f.pixels.sum() == 9 and f.pixels.max() == 1.0
    x = np.linspace(0, 1, 80, dtype=np.float32).reshape(8, 10)
    f = read_frame(_save(tmp_path / "f.tif", x))
    np.testing.assert_array_equal(f.pixels, x)


def test_dispatch_uses_content_not_suffix(tmp_path: Path) -> None:
    a = np.full((8, 8), 51, np.uint8)
    _save(tmp_path / "x.png", a)
    renamed = tmp_path / "looks_like.dat"
    renamed.write_bytes((tmp_path / "x.png").read_bytes())
    assert frame_kind(renamed) == "image"
    assert read_frame(renamed).pixels[0, 0] == pytest.approx(0.2)
    frames = list(iter_frames(renamed))
    assert len(frames) == 1 and frames[0].index == 0


def test_min_side_is_8(tmp_path: Path) -> None:
    assert MIN_SIDE == 8
    assert read_image(_save(tmp_path / "ok.png", np.zeros((8, 8), np.uint8))).shape == (8, 8)


def test_mask_accepts_0_255_0_1_and_bilevel(tmp_path: Path) -> None:
    m = np.zeros((10, 12), np.uint8)
    m[2:6, 3:8] = 1
    for name, arr in (("m01.png", m), ("m255.png", m * 255), ("m1.png", m.astype(bool))):
        got = read_mask(_save(tmp_path / name, arr), (10, 12), case="c1")
        assert got.dtype == bool and got.sum() == 20 and got[2, 3] and not got[0, 0]
    rgb = np.repeat((m * 255)[..., None], 3, axis=2)
    assert read_mask(_save(tmp_path / "rgb.png", rgb)).sum() == 20
    empty = _save(tmp_path / "empty.png", np.zeros((10, 12), np.uint8))
    assert read_mask(empty, allow_empty=True).sum() == 0
