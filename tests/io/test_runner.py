"""map_frames (usher2.io.runner): a run resumes without recomputing, a bad input is listed and the rest go on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from usher2.io.errors import InputError
from usher2.io.runner import FAILURES_FILE, map_frames, to_uint8, write_png


def _invert(calls: list[int]):
    def process(x: np.ndarray) -> list[np.ndarray]:
        calls.append(len(x))
        return list(1 - x[:, 0])

    return process


def _write(path: Path, y: np.ndarray) -> None:
    write_png(path, to_uint8(y))


def _inputs(root: Path) -> None:
    root.mkdir(parents=True)
    for name, level in (("a.png", 100), ("b.png", 200)):
        Image.fromarray(np.full((8, 10), level, np.uint8)).save(root / name)
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))  # a PNG signature and nothing else


def test_a_bad_input_is_listed_and_the_others_are_written(tmp_path: Path) -> None:
    _inputs(tmp_path / "in")
    calls: list[int] = []
    r = map_frames(
        tmp_path / "in", tmp_path / "out", stage="enhance", settings={"n": 1}, process=_invert(calls), write=_write
    )
    assert r.processed == ["a.png", "b.png"] and r.skipped == [] and r.n_inputs == 3
    assert [f.case for f in r.failures] == ["bad.png"]
    # 255 - 100 and 255 - 200: the inverted grey levels, exactly (8-bit data round-trips)
    assert np.asarray(Image.open(tmp_path / "out" / "a.png")).max() == 155
    assert np.asarray(Image.open(tmp_path / "out" / "b.png")).min() == 55
    lines = (tmp_path / "out" / FAILURES_FILE).read_text().splitlines()
    assert lines[0] == "case,error" and lines[1].startswith("bad.png,")


def test_a_second_run_computes_nothing_new_and_other_settings_are_refused(tmp_path: Path) -> None:
    _inputs(tmp_path / "in")
    (tmp_path / "in" / "bad.png").unlink()
    first: list[int] = []
    map_frames(
        tmp_path / "in", tmp_path / "out", stage="enhance", settings={"n": 1}, process=_invert(first), write=_write
    )
    assert sum(first) == 2
    again: list[int] = []
    r = map_frames(
        tmp_path / "in", tmp_path / "out", stage="enhance", settings={"n": 1}, process=_invert(again), write=_write
    )
    assert again == [] and r.processed == [] and r.skipped == ["a.png", "b.png"] and r.written == []
    assert r.outputs == {"a.png": [tmp_path / "out" / "a.png"], "b.png": [tmp_path / "out" / "b.png"]}
    with pytest.raises(InputError, match="--overwrite"):
        map_frames(
            tmp_path / "in", tmp_path / "out", stage="enhance", settings={"n": 2}, process=_invert([]), write=_write
        )


def test_equal_shapes_are_batched_up_to_batch_size(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    for k in range(5):
        Image.fromarray(np.full((8, 8), 10 * k, np.uint8)).save(root / f"f{k}.png")
    calls: list[int] = []
    map_frames(root, tmp_path / "out", stage="segment", settings={}, process=_invert(calls), write=_write, batch_size=2)
    assert calls == [2, 2, 1]


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        map_frames(tmp_path, tmp_path / "o", stage="enhance", settings={}, process=list, write=_write, batch_size=0)
    with pytest.raises(ValueError, match=r"stage must be one of \['enhance', 'segment'\], got 'score'"):
        map_frames(tmp_path, tmp_path / "o", stage="score", settings={}, process=list, write=_write)
    with pytest.raises(InputError, match="no such file or directory"):
        map_frames(tmp_path / "gone", tmp_path / "o", stage="enhance", settings={}, process=list, write=_write)


def test_to_uint8_clips_and_rounds_half_to_even() -> None:
    y = np.array([-0.5, 0.0, 0.5, 1.0, 2.0, 0.5 / 255, 1.5 / 255])
    assert to_uint8(y).tolist() == [0, 0, 128, 255, 255, 0, 2]
