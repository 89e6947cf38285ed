"""Cine video written with cv2.VideoWriter: frame count and approximate content."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from usher2.io.errors import InputError
from usher2.io.frames import frame_kind, iter_frames, read_frame

LEVELS = (20, 70, 120, 170, 220)


def _write(path: Path, fourcc: str) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 48))
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write {fourcc} video")
    for level in LEVELS:
        frame = np.full((48, 64, 3), level, np.uint8)
        frame[10:20, 10:30] = 255 - level  # a block, so frames are not flat
        writer.write(frame)
    writer.release()
    return path


@pytest.mark.parametrize(("name", "fourcc"), [("cine.avi", "MJPG"), ("cine.mp4", "mp4v")])
def test_video_frames_count_and_content(tmp_path: Path, name: str, fourcc: str) -> None:
    p = _write(tmp_path / name, fourcc)
    assert frame_kind(p) == "video"
    frames = list(iter_frames(p))
    assert len(frames) == len(LEVELS)
    assert [f.index for f in frames] == list(range(len(LEVELS)))
    for f, level in zip(frames, LEVELS, strict=True):
        assert f.shape == (48, 64) and f.spacing is None
        assert float(np.median(f.pixels)) == pytest.approx(level / 255, abs=0.03)
        assert float(f.pixels[15, 20]) == pytest.approx((255 - level) / 255, abs=0.06)
    assert frames[0].metadata["fps"] == pytest.approx(10.0)
    third = read_frame(p, 2)
    np.testing.assert_array_equal(third.pixels, frames[2].pixels)
    with pytest.raises(InputError, match=r"got 9 \(the video has 5 frames\)"):
        read_frame(p, 9)


def test_corrupt_and_empty_video_raise(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match=r"junk\.mp4: expected a video OpenCV can decode"):
        iter_frames(junk)  # raises before the first next()
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty.avi: .*got an empty \(0-byte\) file"):
        read_frame(empty)
