"""The input scanner (usher2.io.scan): sorted, hidden-free file lists and case ids from relative paths."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from usher2.io.errors import InputError
from usher2.io.scan import FRAME_SUFFIXES, INPUT_SUFFIXES, is_inside, list_files, scan_frames, scan_inputs, walk_files


def _touch(root: Path, *names: str) -> None:
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"")


def test_walk_files_sorts_skips_hidden_and_the_excluded_folder(tmp_path: Path) -> None:
    _touch(tmp_path, "b.png", "a/c.PNG", ".hidden/d.png", "a/.e.png", "out/f.png", "g.txt")
    got = walk_files(tmp_path, {".png"}, exclude=(tmp_path / "out").resolve())
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["a/c.PNG", "b.png"]
    assert is_inside(tmp_path / "a" / "c.PNG", tmp_path) and not is_inside(tmp_path, tmp_path / "a")


def test_suffix_sets() -> None:
    assert ".dcm" in FRAME_SUFFIXES and ".png" in FRAME_SUFFIXES and ".mp4" not in FRAME_SUFFIXES
    assert set(FRAME_SUFFIXES) < set(INPUT_SUFFIXES) and ".mp4" in INPUT_SUFFIXES
    assert list(INPUT_SUFFIXES) == sorted(INPUT_SUFFIXES)


def test_scan_frames_gives_case_ids_from_relative_paths(tmp_path: Path) -> None:
    _touch(tmp_path, "p1/x.png", "y.dcm", "clip.mp4")
    df = scan_frames(tmp_path)
    assert df["case_id"].tolist() == ["p1/x", "y"]  # no video in the cohort table
    assert df["patient_id"].tolist() == df["case_id"].tolist()
    assert df["image_path"].tolist() == [str((tmp_path / n).resolve()) for n in ("p1/x.png", "y.dcm")]
    with pytest.raises(InputError, match="only a manifest gives masks"):
        scan_frames(tmp_path, masks="given")


def test_scan_inputs_keeps_video_and_names_a_missing_source(tmp_path: Path) -> None:
    _touch(tmp_path, "p1/x.png", "clip.mp4")
    assert [i["case_id"] for i in scan_inputs(tmp_path)] == ["clip", "p1/x"]
    assert scan_inputs(tmp_path / "clip.mp4") == [{"case_id": "clip", "path": tmp_path / "clip.mp4", "row": {}}]
    with pytest.raises(InputError, match="no such file or directory"):
        scan_inputs(tmp_path / "gone")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="none in it"):
        list_files(tmp_path / "empty", {".png"}, "PNG files")


def test_a_manifest_is_read_as_it_is(tmp_path: Path) -> None:
    _touch(tmp_path, "img/a.png")
    pd.DataFrame({"case_id": ["k1"], "image": ["img/a.png"]}).to_csv(tmp_path / "m.csv", index=False)
    [item] = scan_inputs(tmp_path / "m.csv")
    assert item["case_id"] == "k1" and Path(item["path"]).resolve() == (tmp_path / "img" / "a.png").resolve()
