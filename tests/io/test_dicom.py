"""DICOM ultrasound: every photometric interpretation, multi-frame, spacing, de-identification."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from io_helpers import PATIENT_NAME, PHI, ramp, region, write_dicom
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import JPEGLSLossless

from usher2.io.dicom import SAFE_TAGS, iter_dicom_frames
from usher2.io.errors import InputError
from usher2.io.frames import frame_kind, iter_frames, read_frame
from usher2.io.pixels import rgb_to_grey


@pytest.mark.parametrize("bits", [8, 16])
def test_monochrome2_round_trips(tmp_path: Path, bits: int) -> None:
    top = 2**bits - 1
    a = ramp(24, 32, top).astype(np.uint8 if bits == 8 else np.uint16)
    p = write_dicom(tmp_path / "m2.dcm", a.tobytes(), rows=24, cols=32, bits=bits)
    f = read_frame(p)
    np.testing.assert_allclose(f.pixels, a / top, atol=1e-7)
    assert f.metadata["Modality"] == "US" and f.metadata["BitsStored"] == bits
    assert f.spacing is None and f.metadata["spacing_source"] is None


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    a = ramp(16, 16, 255).astype(np.uint8)
    p = write_dicom(tmp_path / "m1.dcm", a.tobytes(), rows=16, cols=16, photometric="MONOCHROME1")
    np.testing.assert_allclose(read_frame(p).pixels, 1.0 - a / 255.0, atol=1e-7)


def _rgb(rows: int, cols: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    # one colour per horizontal pixel pair, so 4:2:2 chroma subsampling loses nothing
    pairs = rng.integers(0, 256, size=(rows, cols // 2, 3), dtype=np.uint8)
    return np.repeat(pairs, 2, axis=1)


def test_rgb_becomes_bt601_grey(tmp_path: Path) -> None:
    rgb = _rgb(16, 20)
    p = write_dicom(tmp_path / "rgb.dcm", rgb.tobytes(), rows=16, cols=20, photometric="RGB", samples=3)
    np.testing.assert_allclose(read_frame(p).pixels, rgb_to_grey(rgb) / 255.0, atol=1e-6)


def test_ybr_full_and_ybr_full_422_become_the_same_grey(tmp_path: Path) -> None:
    rgb = _rgb(16, 20)
    expected = rgb_to_grey(rgb) / 255.0
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    full = write_dicom(tmp_path / "ybr.dcm", ybr.tobytes(), rows=16, cols=20, photometric="YBR_FULL", samples=3)
    # native YBR_FULL_422 stores Y0 Y1 Cb Cr for each pixel pair
    y = ybr[..., 0].reshape(16, 10, 2)
    cb, cr = ybr[:, 0::2, 1], ybr[:, 0::2, 2]
    packed = np.stack([y[..., 0], y[..., 1], cb, cr], axis=-1).astype(np.uint8)
    sub = write_dicom(
        tmp_path / "ybr422.dcm", packed.tobytes(), rows=16, cols=20, photometric="YBR_FULL_422", samples=3
    )
    for p in (full, sub):
        got = read_frame(p).pixels
        assert float(np.abs(got - expected).max()) < 2.5 / 255  # YBR rounding only


def test_multiframe_every_frame_distinct_and_round_trips(tmp_path: Path) -> None:
    n, rows, cols = 5, 12, 16
    stack = np.stack([ramp(rows, cols, 255, seed=k) for k in range(n)]).astype(np.uint8)
    p = write_dicom(tmp_path / "cine.dcm", stack.tobytes(), rows=rows, cols=cols, frames=n)
    frames = list(iter_frames(p))
    assert [f.index for f in frames] == list(range(n))
    for k, f in enumerate(frames):
        np.testing.assert_allclose(f.pixels, stack[k] / 255.0, atol=1e-7)
    assert len({f.pixels.tobytes() for f in frames}) == n
    np.testing.assert_allclose(read_frame(p, 3).pixels, stack[3] / 255.0, atol=1e-7)
    assert frames[0].metadata["NumberOfFrames"] == n and frames[0].metadata["FrameTime"] == pytest.approx(33.3)
    with pytest.raises(InputError, match=r"frame index in 0\.\.4, got 5"):
        read_frame(p, 5)


def test_spacing_from_ultrasound_regions_cm_to_mm(tmp_path: Path) -> None:
    a = np.zeros((16, 16), np.uint8)
    p = write_dicom(
        tmp_path / "reg.dcm",
        a.tobytes(),
        rows=16,
        cols=16,
        regions=[region(0.01, 0.02)],
        pixel_spacing=[0.5, 0.5],  # the region wins
    )
    f = read_frame(p)
    assert f.spacing == pytest.approx((0.2, 0.1))  # (row, col) = (DeltaY, DeltaX) * 10
    assert f.metadata["spacing_source"] == "ultrasound_regions"


def test_spacing_falls_back_to_pixel_spacing(tmp_path: Path) -> None:
    a = np.zeros((16, 16), np.uint8)
    # a region in another unit (4 = seconds) is not a spatial calibration
    p = write_dicom(
        tmp_path / "ps.dcm",
        a.tobytes(),
        rows=16,
        cols=16,
        regions=[region(0.1, 0.1, units=4)],
        pixel_spacing=[0.3, 0.25],
    )
    f = read_frame(p)
    assert f.spacing == pytest.approx((0.3, 0.25)) and f.metadata["spacing_source"] == "pixel_spacing"


def test_dicom_without_preamble_suffix_or_magic(tmp_path: Path) -> None:
    a = np.zeros((8, 8), np.uint8)
    p = write_dicom(tmp_path / "x.dcm", a.tobytes(), rows=8, cols=8)
    other = tmp_path / "noext"
    other.write_bytes(p.read_bytes())
    assert frame_kind(other) == "dicom"
    assert read_frame(other).shape == (8, 8)


def _all_text(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc!s} {exc!r}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def test_patient_identifiers_never_leave_the_reader(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    stack = np.stack([ramp(16, 16, 255, seed=k) for k in range(3)]).astype(np.uint8)
    good = write_dicom(tmp_path / "phi.dcm", stack.tobytes(), rows=16, cols=16, frames=3, pixel_spacing=[0.2, 0.2])
    no_pixels = write_dicom(tmp_path / "nopix.dcm", None, rows=16, cols=16)
    compressed = write_dicom(
        tmp_path / "jls.dcm",
        encapsulate([b"\xff\xd8garbage"]),
        rows=16,
        cols=16,
        transfer_syntax=JPEGLSLossless,
    )
    truncated = tmp_path / "trunc.dcm"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) - 400])
    texts: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = list(iter_dicom_frames(good))
        texts += [repr(f) for f in frames] + [str(dict(f.metadata)) for f in frames]
        for bad, index in ((no_pixels, 0), (compressed, 0), (truncated, 0), (good, 9)):
            with pytest.raises(InputError) as info:
                read_frame(bad, index)
            texts.append(_all_text(info.value))
    texts += [str(w.message) for w in caught] + [caplog.text]
    blob = "\n".join(texts)
    for key, value in PHI.items():
        assert value not in blob, f"{key} leaked"
        assert value.split("^")[0] not in blob
    assert PATIENT_NAME not in blob
    assert set(frames[0].metadata) <= set(SAFE_TAGS) | {"TransferSyntaxUID", "format", "spacing_source"}
    assert frames[0].metadata["Manufacturer"] == "AcmeSound"
