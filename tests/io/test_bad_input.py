"""Bad input: each case raises an InputError naming the file, what was expected and what arrived."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from io_helpers import write_dicom
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLSLossless

from usher2.io.errors import InputError
from usher2.io.frames import read_frame, read_mask


def _png(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


def _raises(path: Path, *fragments: str, index: int = 0) -> InputError:
    with pytest.raises(InputError) as info:
        read_frame(path, index)
    msg = str(info.value)
    assert str(path) in msg
    for fragment in fragments:
        assert fragment in msg, msg
    return info.value


def test_missing_and_zero_byte_files(tmp_path: Path) -> None:
    _raises(tmp_path / "nope.png", "got no such file")
    (tmp_path / "zero.png").write_bytes(b"")
    _raises(tmp_path / "zero.png", "got an empty (0-byte) file")


def test_corrupt_file_with_an_image_suffix(tmp_path: Path) -> None:
    p = tmp_path / "noise.png"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    _raises(p, "expected an image Pillow can decode", "content that is not a recognised image format")


def test_corrupt_header_with_png_magic(tmp_path: Path) -> None:
    p = tmp_path / "hdr.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    _raises(p, "a corrupt PNG file")


def test_unrecognised_content_and_suffix(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("hello, not an image")
    _raises(p, "expected a PNG, JPEG, BMP, TIFF, DICOM or video", "suffix '.txt'")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_truncated_images(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / f"full.{fmt.lower()}"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(src, fmt)
    data = src.read_bytes()
    cut = tmp_path / f"half.{fmt.lower()}"
    cut.write_bytes(data[: len(data) // 2])
    err = _raises(cut, "expected an image that is complete", "truncated")
    assert err.fix is not None


def test_two_channel_image_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "la.png"
    Image.new("LA", (16, 16)).save(p)
    _raises(p, "expected a grey, RGB, RGBA or palette image", "2-channel (grey + alpha, mode LA)")


@pytest.mark.parametrize("dtype", ["float64", "complex64"])
def test_float64_and_complex_tiff_are_refused(tmp_path: Path, dtype: str) -> None:
    tifffile = pytest.importorskip("tifffile")
    p = tmp_path / f"{dtype}.tif"
    tifffile.imwrite(p, np.ones((16, 16), dtype=dtype))
    _raises(p, "TIFF with unsupported samples", f"dtype {dtype}")


def test_float_tiff_outside_unit_range_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "f32.tif"
    Image.fromarray(np.full((8, 8), 3.5, np.float32)).save(p)
    _raises(p, "float32 image already scaled to [0, 1]", "values in [3.5, 3.5]")


@pytest.mark.parametrize("shape", [(1, 1), (7, 100), (100, 3)])
def test_images_below_min_size(tmp_path: Path, shape: tuple[int, int]) -> None:
    p = _png(tmp_path / "tiny.png", np.zeros(shape, np.uint8))
    _raises(p, "at least 8x8 pixels", f"got {shape[0]}x{shape[1]}")


def test_still_image_has_only_frame_0(tmp_path: Path) -> None:
    p = _png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    _raises(p, "frame index 0", "got 2", index=2)


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    p = write_dicom(tmp_path / "sr.dcm", None, rows=16, cols=16)
    _raises(p, "expected a DICOM image with pixel data (7FE0,0010)", "without pixel data")


def test_dicom_compressed_without_decoder_names_the_transfer_syntax(tmp_path: Path) -> None:
    p = write_dicom(
        tmp_path / "jls.dcm", encapsulate([b"\xff\xd8junk"]), rows=16, cols=16, transfer_syntax=JPEGLSLossless
    )
    err = _raises(p, "JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80)", "no decoder is installed")
    assert err.fix is not None and "pylibjpeg" in err.fix


def test_dicom_truncated_pixel_data(tmp_path: Path) -> None:
    p = write_dicom(tmp_path / "ok.dcm", np.zeros((32, 32), np.uint8).tobytes(), rows=32, cols=32)
    data = p.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-500])
    _raises(cut, "expected decodable pixel data for frame 0", "less than expected")


def test_dicom_unsupported_photometric(tmp_path: Path) -> None:
    p = write_dicom(
        tmp_path / "pal.dcm",
        np.zeros((16, 16), np.uint8).tobytes(),
        rows=16,
        cols=16,
        photometric="PALETTE COLOR",
    )
    _raises(p, "photometric interpretation in MONOCHROME1", "got PALETTE COLOR")


def test_mask_shape_mismatch(tmp_path: Path) -> None:
    m = np.zeros((240, 320), np.uint8)
    m[10:20, 10:20] = 255
    p = _png(tmp_path / "m.png", m)
    with pytest.raises(InputError) as info:
        read_mask(p, (480, 640), case="bus_0042-l")
    msg = str(info.value)
    assert str(p) in msg and "case bus_0042-l" in msg
    assert "image and mask shapes differ: (480, 640) vs (240, 320)" in msg


def test_empty_mask_names_the_case(tmp_path: Path) -> None:
    p = _png(tmp_path / "m.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(InputError, match=r"mask is empty \(0 foreground pixels\) in case bus_0042-l"):
        read_mask(p, (16, 16), case="bus_0042-l")


def test_non_binary_mask(tmp_path: Path) -> None:
    m = np.zeros((16, 16), np.uint8)
    m[2:4, 2:4], m[5:7, 5:7] = 128, 255
    p = _png(tmp_path / "grey.png", m)
    with pytest.raises(
        InputError,
        match=r"grey.png: expected a binary mask with values 0/255 or 0/1, got 3 distinct values \(0, 128, 255\)",
    ):
        read_mask(p)
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[2:4, 2:4] = (255, 0, 0)
    with pytest.raises(InputError, match="R, G, B channels differ"):
        read_mask(_png(tmp_path / "red.png", rgb))


def test_corrupt_mask_file(tmp_path: Path) -> None:
    p = tmp_path / "m.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x01" * 30)
    with pytest.raises(InputError, match=r"m\.png"):
        read_mask(p)
