"""Atomic writes: complete files only, and the permissions a plain open() would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from usher2.io.atomic import atomic_path, atomic_write_text


def test_written_file_has_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_saved_weights_get_umask_permissions_too(tmp_path: Path) -> None:
    import torch

    from usher2.weights import save_state

    old = os.umask(0o022)
    try:  # safetensors writes its own file: the mode must be set after the writer is done
        save_state(torch.nn.Linear(2, 1), tmp_path / "w.safetensors", {"a": "1"})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == 0o644
