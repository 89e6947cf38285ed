"""The decoded-size limit (issue 22 §2): pixel bombs are refused from the header, in bounded memory.

The three inputs of the issue (a 140 KB grey PNG of 12000 x 12000, a 493 KB RGB PNG of
13000 x 13000, a 389 KB deflated DICOM of 20000 x 20000) are built here by streaming zlib
(:mod:`bombs`). Each must be refused with an error naming the file, the size found and the limit,
and the refusal must not decode anything: the smallest of these frames is 137 MiB as uint8, so a
peak-RSS growth under 50 MiB shows no frame was allocated.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from bombs import (
    deflated_dicom_bomb,
    deflated_dicom_zeros,
    grey_png_bomb,
    peak_rss_growth_mb,
    png_zeros,
    rgb_png_bomb,
    write,
)
from io_helpers import PATIENT_NAME, write_dicom
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit
from typer.testing import CliRunner

from usher2.io import DecodedSizeError, InputError, PixelLimits, iter_frames, pixel_limits, read_frame, read_mask
from usher2.io.dicom import MAX_DEFLATED_HEADER
from usher2.io.limits import LIMITS_ENV, MAX_FILE_SAMPLES, MAX_FRAME_PIXELS, default_limits

NO_FRAME_MB = 50  # well under the 137 MiB of the smallest bomb's uint8 frame (and the issue's +200 MB)

BOMBS = {
    # name: (builder, suffix, "RxC", pixels)
    "grey_png": (grey_png_bomb, ".png", "12000x12000", 144_000_000),
    "rgb_png": (rgb_png_bomb, ".png", "13000x13000", 169_000_000),
    "deflated_dicom": (deflated_dicom_bomb, ".dcm", "20000x20000", 400_000_000),
}


@pytest.fixture(scope="module")
def bomb_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bombs")
    return {name: write(d / f"{name}{suffix}", build()) for name, (build, suffix, _, _) in BOMBS.items()}


def test_the_bombs_are_what_the_issue_describes(bomb_files: dict[str, Path]) -> None:
    sizes_kb = {name: p.stat().st_size / 1000 for name, p in bomb_files.items()}
    assert 100 < sizes_kb["grey_png"] < 200  # the issue: 140 KB
    assert 400 < sizes_kb["rgb_png"] < 600  # 493 KB
    assert 300 < sizes_kb["deflated_dicom"] < 500  # 389 KB


@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb_is_refused_naming_file_size_and_limit(bomb_files: dict[str, Path], name: str) -> None:
    _, _, dims, pixels = BOMBS[name]
    path = bomb_files[name]
    t0 = time.perf_counter()
    with pytest.raises(DecodedSizeError) as info:
        read_frame(path)
    seconds = time.perf_counter() - t0
    msg = str(info.value)
    assert isinstance(info.value, InputError)
    assert str(path) in msg
    assert f"got {dims} (rows x columns) = {pixels:,} pixels" in msg
    assert f"at most {MAX_FRAME_PIXELS:,} pixels (64 megapixels" in msg
    assert "--max-megapixels" in msg
    assert seconds < 1.0, f"refusing {name} took {seconds:.2f} s"


def test_bombs_are_refused_in_bounded_memory(bomb_files: dict[str, Path]) -> None:
    """Every reader path (read_frame, iter_frames, read_mask) in a fresh process: peak RSS growth."""
    paths = json.dumps({name: str(p) for name, p in bomb_files.items()})
    out = peak_rss_growth_mb(
        f"""
        from usher2.io import DecodedSizeError, iter_frames, read_frame, read_mask
        paths = {paths}
        """,
        """
        result = {}
        calls = [(read_frame, n) for n in paths] + [(iter_frames, "deflated_dicom"), (read_mask, "grey_png")]
        for fn, name in calls:
            try:
                fn(paths[name])
                result[fn.__name__ + ":" + name] = "read"
            except DecodedSizeError:
                result[fn.__name__ + ":" + name] = status_mb("VmHWM") - base
        """,
    )
    refused = out["result"]
    assert len(refused) == 5 and "read" not in refused.values(), refused
    print(f"peak RSS growth while refusing the bombs: {out['growth']:.1f} MiB (base {out['base']:.0f} MiB)")
    assert out["growth"] < NO_FRAME_MB, out


def test_a_deflated_dicom_is_refused_before_it_is_inflated(bomb_files: dict[str, Path], tmp_path: Path) -> None:
    """pydicom inflates a deflated dataset whole; the header must be read without that."""
    lying = write(tmp_path / "lying.dcm", deflated_dicom_zeros(8, 8, pixel_bytes=400_000_000))
    padded = write(tmp_path / "padded.dcm", deflated_dicom_zeros(8, 8, private_bytes=200_000_000))
    out = peak_rss_growth_mb(
        f"""
        from usher2.io import DecodedSizeError, read_frame
        paths = {json.dumps([str(lying), str(padded)])}
        """,
        """
        result = []
        for p in paths:
            try:
                read_frame(p)
            except DecodedSizeError as exc:
                result.append(str(exc))
        """,
    )
    lying_msg, padded_msg = out["result"]
    print(f"peak RSS growth refusing the crafted deflated files: {out['growth']:.1f} MiB")
    assert str(lying) in lying_msg and "deflated pixel data of the 64 bytes its header declares" in lying_msg
    assert str(padded) in padded_msg and f"at most {MAX_DEFLATED_HEADER:,} bytes before its pixel data" in padded_msg
    # the header cap (32 MiB) is what may be inflated, not the 200-400 MB behind it
    assert out["growth"] < MAX_DEFLATED_HEADER / 2**20 + NO_FRAME_MB, out


# ----------------------------------------------------------------------------- the boundary
def test_default_limit_is_64_megapixels_per_frame_and_8192_squared_fits() -> None:
    lim = PixelLimits()
    assert (lim.frame_pixels, lim.file_samples) == (64 * 2**20, 2**30) == (MAX_FRAME_PIXELS, MAX_FILE_SAMPLES)
    lim.check_frame("f.png", 8192, 8192)  # exactly 64 * 2**20 pixels: allowed
    with pytest.raises(DecodedSizeError, match=r"got 8192x8193 \(rows x columns\) = 67,117,056 pixels"):
        lim.check_frame("f.png", 8192, 8193)


def test_png_one_pixel_over_the_default_is_refused_from_its_header(tmp_path: Path) -> None:
    p = write(tmp_path / "over.png", png_zeros(8192, 8193))  # 67 MB of pixels in 65 KB
    with pytest.raises(DecodedSizeError, match="8192x8193"):
        read_frame(p)


@pytest.mark.parametrize("kind", ["png", "deflated_dicom"])
def test_a_file_at_the_limit_reads_and_one_pixel_more_does_not(tmp_path: Path, kind: str) -> None:
    lim = PixelLimits(frame_pixels=100 * 120)

    def build(rows: int, cols: int) -> Path:
        if kind == "png":
            return write(tmp_path / f"{rows}x{cols}.png", png_zeros(rows, cols, value_rows=2))
        return write(tmp_path / f"{rows}x{cols}.dcm", deflated_dicom_zeros(rows, cols))

    f = read_frame(build(100, 120), limits=lim)
    assert f.shape == (100, 120) and f.pixels.dtype == np.float32
    if kind == "png":
        assert f.pixels[:2].min() == 1.0 and f.pixels[2:].max() == 0.0 and f.pixels.sum() == 240
    else:
        assert f.pixels.max() == 0.0 and f.metadata["TransferSyntaxUID"] == "1.2.840.10008.1.2.1.99"
    with pytest.raises(DecodedSizeError, match=r"got 100x121 \(rows x columns\) = 12,100 pixels"):
        read_frame(build(100, 121), limits=lim)


def test_masks_are_checked_too(tmp_path: Path) -> None:
    p = write(tmp_path / "m.png", png_zeros(40, 40, value_rows=3))
    assert read_mask(p, (40, 40), limits=PixelLimits(frame_pixels=1600)).sum() == 120
    with pytest.raises(DecodedSizeError, match="a mask image of at most 1,599 pixels"):
        read_mask(p, (40, 40), limits=PixelLimits(frame_pixels=1599))


def test_video_frame_size_is_checked_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "v.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (40, 30))
    assert vw.isOpened()
    for k in range(3):
        vw.write(np.full((30, 40, 3), 60 * k, np.uint8))
    vw.release()
    assert len(list(iter_frames(path, limits=PixelLimits(frame_pixels=1200)))) == 3
    with pytest.raises(DecodedSizeError, match=r"a video frame of at most 1,199 pixels .* got 30x40"):
        iter_frames(path, limits=PixelLimits(frame_pixels=1199))


# ---------------------------------------------------------------------- multi-frame totals
@pytest.mark.parametrize("deflated", [False, True])
def test_multiframe_dicom_total_is_limited(tmp_path: Path, deflated: bool) -> None:
    rows, cols, n = 16, 16, 10
    if deflated:
        p = write(tmp_path / "cine.dcm", deflated_dicom_zeros(rows, cols, frames=n))
    else:
        p = write_dicom(tmp_path / "cine.dcm", bytes(rows * cols * n), rows=rows, cols=cols, frames=n)
    fits = PixelLimits(frame_pixels=rows * cols, file_samples=rows * cols * n)
    assert [f.index for f in iter_frames(p, limits=fits)] == list(range(n))
    over = PixelLimits(frame_pixels=rows * cols, file_samples=rows * cols * n - 1)
    with pytest.raises(DecodedSizeError, match=r"at most 2,559 samples in all .* got 16x16x1x10 = 2,560 samples"):
        read_frame(p, 3, limits=over)


def test_compressed_dicom_frame_is_checked_by_its_own_dimensions(tmp_path: Path) -> None:
    """A JPEG larger than Rows x Columns says is refused before it is decoded."""
    ok, jpeg = cv2.imencode(".jpg", np.zeros((64, 96), np.uint8))
    assert ok
    p = write_dicom(
        tmp_path / "j.dcm", encapsulate([jpeg.tobytes()]), rows=16, cols=16, transfer_syntax=JPEGBaseline8Bit
    )
    with pytest.raises(DecodedSizeError, match=r"a compressed DICOM frame \(0\) of at most 1,024 pixels .* 64x96"):
        read_frame(p, limits=PixelLimits(frame_pixels=1024))


# ------------------------------------------------------------------------- configuration
def test_limit_from_context_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path / "x.png", png_zeros(102, 103))  # 10,506 pixels
    small = PixelLimits.from_megapixels(0.01)  # int(0.01 * 2**20) = 10,485 pixels
    assert small.frame_pixels == 10485 and small.file_samples == MAX_FILE_SAMPLES
    with pixel_limits(small):
        assert default_limits() is small
        with pytest.raises(DecodedSizeError, match="at most 10,485 pixels"):
            read_frame(p)
    assert read_frame(p).shape == (102, 103)  # the context ended
    monkeypatch.setenv(LIMITS_ENV, "0.01")
    assert default_limits() == small
    with pytest.raises(DecodedSizeError, match="at most 10,485 pixels"):
        read_frame(p)
    assert read_frame(p, limits=PixelLimits()).shape == (102, 103)  # an explicit argument wins
    monkeypatch.setenv(LIMITS_ENV, "lots")
    with pytest.raises(InputError, match=f"{LIMITS_ENV}: expected a number of megapixels > 0"):
        read_frame(p)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frame_pixels": 10}, "frame_pixels: expected an integer >= 64"),
        ({"frame_pixels": 1000, "file_samples": 999}, "file_samples: expected at least frame_pixels"),
        ({"frame_pixels": 1e6}, "frame_pixels: expected an integer"),
    ],
)
def test_limits_check_themselves(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        PixelLimits(**kwargs)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), 1e-6])
def test_megapixels_must_be_a_usable_number(bad: float) -> None:
    with pytest.raises(InputError, match="max_megapixels: expected"):
        PixelLimits.from_megapixels(bad)


def test_cli_score_option_sets_the_limit_for_the_run_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bomb_files: dict[str, Path]
) -> None:
    """``usher2 score --max-megapixels`` reaches the readers (and worker processes, via the environment)."""
    import usher2.score.folder as score_frames
    from usher2.cli import app

    seen: list[PixelLimits] = []

    def fake_score_to_dir(*args: object, **kwargs: object) -> None:
        seen.append(default_limits())
        read_frame(bomb_files["grey_png"])  # 137.3 megapixels: allowed under 200
        raise InputError("input", "a test", "the end of it")

    monkeypatch.setattr(score_frames, "score_to_dir", fake_score_to_dir)
    monkeypatch.delenv(LIMITS_ENV, raising=False)
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    result = CliRunner().invoke(
        app, ["score", str(tmp_path), "--bundle", str(bundle), "--out", str(out), "--max-megapixels", "0.5"]
    )
    assert result.exit_code == 2 and seen == [PixelLimits.from_megapixels(0.5)], result.output
    assert LIMITS_ENV not in __import__("os").environ  # restored after the command
    result = CliRunner().invoke(
        app, ["score", str(tmp_path), "--bundle", str(bundle), "--out", str(out), "--max-megapixels", "200"]
    )
    assert result.exit_code == 2 and "the end of it" in result.output, result.output


# ------------------------------------------------------------------- no tag values echoed
def test_dicom_errors_name_the_tag_not_its_value(tmp_path: Path) -> None:
    p = write_dicom(tmp_path / "pi.dcm", bytes(64), rows=8, cols=8, photometric=PATIENT_NAME)
    with pytest.raises(InputError) as info:
        read_frame(p)
    msg = str(info.value)
    assert PATIENT_NAME not in msg and PATIENT_NAME.split("^")[0] not in msg
    assert "PhotometricInterpretation, (0028,0004)" in msg and "MONOCHROME2" in msg and "not shown" in msg
    # a value that is a defined term of the standard is named: it cannot hold patient data
    p = write_dicom(tmp_path / "pal.dcm", bytes(64), rows=8, cols=8, photometric="PALETTE COLOR")
    with pytest.raises(InputError, match="got PALETTE COLOR, which this reader does not convert"):
        read_frame(p)


def test_a_non_numeric_number_of_frames_is_not_echoed(tmp_path: Path) -> None:
    p = write_dicom(tmp_path / "n.dcm", bytes(64 * 3), rows=8, cols=8, frames=3)
    raw = p.read_bytes()
    at = raw.find(b"\x28\x00\x08\x00IS")  # (0028,0008) NumberOfFrames, explicit VR
    length = int.from_bytes(raw[at + 6 : at + 8], "little")
    name = PATIENT_NAME.encode()[:26]
    p.write_bytes(raw[: at + 6] + len(name).to_bytes(2, "little") + name + raw[at + 8 + length :])
    # pydicom's own value validation would warn and log the invalid IS value verbatim; usher2.io.dicom
    # turns it off, so no warning may quote it either.
    with warnings.catch_warnings(record=True) as caught, pytest.raises(InputError) as info:
        warnings.simplefilter("always")
        read_frame(p)
    assert not [w for w in caught if PATIENT_NAME[:10] in str(w.message)]
    assert "NumberOfFrames as a whole number" in str(info.value) and "not shown" in str(info.value)
    chain: BaseException | None = info.value
    while chain is not None:  # nor in a chained exception (int()'s own message would quote it)
        assert PATIENT_NAME not in str(chain)
        chain = chain.__cause__ or chain.__context__
