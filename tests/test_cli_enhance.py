"""``usher2 enhance``, in-process: output names, failures, multi-frame files, resume, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from usher2.cli import app
from usher2.enhance import available_enhancers, create_enhancer
from usher2.enhance.apply import DEFAULT_ENHANCER
from usher2.io import read_frame

sys.path.insert(0, str(Path(__file__).parent / "io"))  # tests/io is no package ("io" is taken)
from io_helpers import grey8 as _grey8
from io_helpers import read_grey_png as _read
from io_helpers import write_dicom
from io_helpers import write_png as _png

runner = CliRunner()


def _enhance(*args: str) -> object:
    return runner.invoke(app, ["enhance", *args])


def _tree(root: Path) -> dict[str, np.ndarray]:
    """Good inputs (by relative path) and their 8-bit truth, plus a corrupt PNG and a zero-byte file."""
    a = _png(root / "a.png", _grey8((24, 32), 0))
    b = _png(root / "sub" / "deep" / "b.png", _grey8((24, 32), 1))
    levels = _grey8((20, 16), 2).astype(np.uint16) * 257  # 16-bit levels that map exactly to 8-bit k
    Image.fromarray(levels).save(root / "sub" / "c.tif")
    (root / "sub" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    (root / "sub" / "deep" / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image, not searched")
    return {"a.png": _read(a), "sub/deep/b.png": _read(b), "sub/c.png": (levels // 257).astype(np.uint8)}


def test_single_png_round_trips_exactly_with_model_none(tmp_path: Path) -> None:
    pixels = _grey8((40, 56), 7)
    src = _png(tmp_path / "in" / "scan.PNG", pixels)
    result = _enhance(str(src), "--out", str(tmp_path / "out"), "--model", "none")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(_read(tmp_path / "out" / "scan.png"), pixels)
    assert "1 inputs enhanced (1 PNGs)" in result.output
    assert (tmp_path / "out" / "failures.csv").read_text() == "case,error\n"
    saved = json.loads((tmp_path / "out" / "enhance.json").read_text())
    assert saved["enhancer"] == {"name": "none", "strength": 1.0}
    assert saved["inputs"] == [str(src.resolve())]


def test_directory_tree_mirrors_relative_names_and_lists_the_two_bad_files(tmp_path: Path) -> None:
    truth = _tree(tmp_path / "in")
    out = tmp_path / "out"
    result = _enhance(str(tmp_path / "in"), "--out", str(out), "--model", "none", "--batch-size", "2")
    assert result.exit_code == 1, result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == sorted(truth)
    for rel, expected in truth.items():
        np.testing.assert_array_equal(_read(out / rel), expected, err_msg=rel)
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures.columns) == ["case", "error"]
    assert failures["case"].tolist() == ["sub/bad.png", "sub/deep/empty.png"]  # input (sorted) order
    assert failures["error"].str.startswith("InputError").all()
    assert "empty (0-byte)" in failures["error"].iloc[1]
    assert "3 inputs enhanced (3 PNGs)" in result.output
    assert "2 of 5 inputs failed" in result.output
    assert "sub/bad.png" in result.output and "sub/deep/empty.png" in result.output


def test_manifest_outputs_use_manifest_relative_names(tmp_path: Path) -> None:
    root = tmp_path / "cohort"
    x = _png(root / "images" / "p1" / "x.png", _grey8((16, 16), 3))
    y = _png(root / "images" / "y.png", _grey8((16, 24), 4))
    _png(root / "images" / "unlisted.png", _grey8((16, 16), 5))
    pd.DataFrame(
        {"case_id": ["c1", "c2", "c3"], "image": ["images/p1/x.png", "images/y.png", "images/gone.png"]}
    ).to_csv(root / "manifest.csv", index=False)
    out = tmp_path / "out"
    result = _enhance(str(root / "manifest.csv"), "--out", str(out), "--model", "none")
    assert result.exit_code == 1, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["images/p1/x.png", "images/y.png"]
    np.testing.assert_array_equal(_read(out / "images" / "p1" / "x.png"), _read(x))
    np.testing.assert_array_equal(_read(out / "images" / "y.png"), _read(y))
    failures = pd.read_csv(out / "failures.csv")
    assert failures["case"].tolist() == ["c3"]  # manifest failures are named by case_id
    assert "gone.png" in failures["error"].iloc[0]


def test_three_frame_dicom_gives_one_png_per_frame(tmp_path: Path) -> None:
    frames = np.stack([_grey8((16, 20), s) for s in (10, 11, 12)])
    (tmp_path / "in").mkdir()
    write_dicom(tmp_path / "in" / "cine.dcm", frames.tobytes(), rows=16, cols=20, frames=3)
    _png(tmp_path / "in" / "still.png", _grey8((16, 20), 13))  # same shape: batched with the frames
    out = tmp_path / "out"
    result = _enhance(str(tmp_path / "in"), "--out", str(out), "--model", "none")
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "cine/frame_0000.png",
        "cine/frame_0001.png",
        "cine/frame_0002.png",
        "still.png",
    ]
    for i in range(3):
        np.testing.assert_array_equal(_read(out / "cine" / f"frame_{i:04d}.png"), frames[i])
    assert json.loads((out / "cine" / "frames.json").read_text())["frames"] == 3
    assert "2 inputs enhanced (4 PNGs)" in result.output


def test_model_median_matches_the_enhancer_called_directly(tmp_path: Path) -> None:
    src = _png(tmp_path / "scan.png", _grey8((32, 48), 20))
    result = _enhance(str(src), "--out", str(tmp_path / "out"), "--model", "median", "--strength", "0.5")
    assert result.exit_code == 0, result.output
    y = create_enhancer("median", strength=0.5)(read_frame(src).pixels[None, None])
    expected = np.rint(np.clip(y[0, 0], 0, 1) * 255).astype(np.uint8)
    got = _read(tmp_path / "out" / "scan.png")
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, _read(src))  # the filter did something


def test_resume_skips_finished_inputs_and_refuses_other_settings(tmp_path: Path) -> None:
    truth = _tree(tmp_path / "in")
    out = tmp_path / "out"
    first = _enhance(str(tmp_path / "in"), "--out", str(out), "--model", "median")
    assert first.exit_code == 1, first.output
    before = {rel: (out / rel).stat().st_mtime_ns for rel in truth}

    again = _enhance(str(tmp_path / "in"), "--out", str(out), "--model", "median")
    assert again.exit_code == 1, again.output  # the 2 bad files are tried again and fail again
    assert "0 inputs enhanced (0 PNGs)" in again.output
    assert "3 skipped" in again.output
    assert {rel: (out / rel).stat().st_mtime_ns for rel in truth} == before

    other = _enhance(str(tmp_path / "in"), "--out", str(out), "--model", "none")
    assert other.exit_code == 2, other.output
    assert "--overwrite" in other.output and '"median"' in other.output

    forced = _enhance(str(tmp_path / "in"), "--out", str(out), "--model", "none", "--overwrite")
    assert forced.exit_code == 1, forced.output
    assert "3 inputs enhanced" in forced.output
    for rel, expected in truth.items():
        np.testing.assert_array_equal(_read(out / rel), expected, err_msg=rel)
    assert json.loads((out / "enhance.json").read_text())["enhancer"]["name"] == "none"


def test_unknown_model_lists_the_available_names(tmp_path: Path) -> None:
    src = _png(tmp_path / "scan.png", _grey8((16, 16), 50))
    result = _enhance(str(src), "--out", str(tmp_path / "out"), "--model", "nope")
    assert result.exit_code == 2, result.output
    assert "unknown enhancer 'nope'" in result.output
    for name in available_enhancers():
        assert name in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["missing.png"],
        ["missing_dir/"],
        ["."],  # outputs would overwrite the inputs
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    _png(tmp_path / "scan.png", _grey8((16, 16), 70))
    result = _enhance(*args, "--out", ".")
    assert result.exit_code == 2, result.output
    assert "error:" in result.output
    assert "Traceback" not in result.output


def test_directory_without_frames_and_bad_strength_exit_2(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x")
    result = _enhance(str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert "none found" in result.output
    src = _png(tmp_path / "scan.png", _grey8((16, 16), 60))
    result = _enhance(str(src), "--out", str(tmp_path / "out"), "--strength", "1.5")
    assert result.exit_code == 2, result.output


def test_help_lists_the_enhancers_and_the_default() -> None:
    result = _enhance("--help")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())  # unwrap rich's help panels
    assert f"Default: {DEFAULT_ENHANCER}" in text
    assert "median" in text and "srad" in text
