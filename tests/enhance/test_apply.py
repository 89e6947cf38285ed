"""enhance_paths (usher2.enhance.apply), called directly: batch size, manifest names, half-done files, video."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from usher2.enhance.apply import enhance_paths

sys.path.insert(0, str(Path(__file__).parents[1] / "io"))  # tests/io is no package ("io" is taken)
from io_helpers import grey8 as _grey8
from io_helpers import read_grey_png as _read
from io_helpers import write_dicom
from io_helpers import write_png as _png


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


def test_batch_size_does_not_change_the_pixels(tmp_path: Path) -> None:
    _tree(tmp_path / "in")
    one = enhance_paths(tmp_path / "in", tmp_path / "b1", model="median", batch_size=1)
    many = enhance_paths(tmp_path / "in", tmp_path / "b8", model="median", batch_size=8)
    assert [p.relative_to(tmp_path / "b1") for p in one.written] == [
        p.relative_to(tmp_path / "b8") for p in many.written
    ]
    for p, q in zip(one.written, many.written, strict=True):
        np.testing.assert_array_equal(_read(p), _read(q))
    assert one.enhanced == ["a.png", "sub/c.tif", "sub/deep/b.png"]


def test_manifest_beside_the_data_keeps_names_inside_out(tmp_path: Path) -> None:
    _png(tmp_path / "data" / "Images" / "bus_0001-l.png", _grey8((16, 16), 6))
    (tmp_path / "manifests").mkdir()
    pd.DataFrame({"case_id": ["c1"], "image": ["../data/Images/bus_0001-l.png"]}).to_parquet(
        tmp_path / "manifests" / "m.parquet"
    )
    r = enhance_paths(tmp_path / "manifests" / "m.parquet", tmp_path / "out", model="none")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in r.written] == ["data/Images/bus_0001-l.png"]


def test_half_done_multi_frame_file_is_redone(tmp_path: Path) -> None:
    frames = np.stack([_grey8((16, 16), s) for s in (30, 31, 32)])
    src = write_dicom(tmp_path / "cine.dcm", frames.tobytes(), rows=16, cols=16, frames=3)
    out = tmp_path / "out"
    enhance_paths(src, out, model="none")
    (out / "cine" / "frames.json").unlink()  # as if killed before the last frame was written
    (out / "cine" / "frame_0002.png").unlink()
    r = enhance_paths(src, out, model="none")
    assert (r.enhanced, r.skipped, len(r.written)) == (["cine.dcm"], [], 3)
    np.testing.assert_array_equal(_read(out / "cine" / "frame_0002.png"), frames[2])


def test_same_output_name_is_a_listed_failure(tmp_path: Path) -> None:
    _png(tmp_path / "in" / "a.png", _grey8((16, 16), 40))
    Image.fromarray(_grey8((16, 16), 41)).save(tmp_path / "in" / "a.tif")
    r = enhance_paths(tmp_path / "in", tmp_path / "out", model="none")
    assert r.enhanced == ["a.png"]
    assert [f.case for f in r.failures] == ["a.tif"]
    assert "already taken by a.png" in r.failures[0].error


def test_video_gives_a_folder_of_frames(tmp_path: Path) -> None:
    import cv2

    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for i in range(5):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    r = enhance_paths(tmp_path / "clip.avi", tmp_path / "out", model="none", batch_size=2)
    assert [p.relative_to(tmp_path / "out").as_posix() for p in r.written] == [
        f"clip/frame_{i:04d}.png" for i in range(5)
    ]
    means = [float(_read(p).mean()) for p in r.written]
    assert means == pytest.approx([40 * i for i in range(5)], abs=3)  # flat grey frames survive MJPG
