"""Shared training helpers (usher2.training): the config digest and checkpoints that refuse other configs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from usher2.training import config_sha256, load_checkpoint, save_checkpoint


def test_config_digest_is_the_sha256_of_sorted_json() -> None:
    assert config_sha256({"b": 1, "a": 2}) == config_sha256({"a": 2, "b": 1})
    assert config_sha256({"a": 2, "b": 1}) == hashlib.sha256(b'{"a": 2, "b": 1}').hexdigest()
    assert json.dumps({"a": 2, "b": 1}, sort_keys=True) == '{"a": 2, "b": 1}'


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    assert load_checkpoint(path, torch.device("cpu")) is None  # nothing to resume
    save_checkpoint(path, {"epoch": 3, "w": torch.arange(4.0), "config_sha256": "abc"})
    state = load_checkpoint(path, torch.device("cpu"))
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.arange(4.0))
