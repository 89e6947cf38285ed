"""Weights on disk (usher2.weights): fp16 safetensors round trip, metadata checks, the weights folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from usher2.io.errors import InputError
from usher2.weights import default_weights_dir, load_state, save_state


def test_round_trip_is_the_fp16_rounding_of_the_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    path = save_state(lin, tmp_path / "l.safetensors", {"kind": "toy"})
    state, meta = load_state(path, what="toy weights", required=("kind",))
    assert meta == {"kind": "toy"} and sorted(state) == ["bias", "weight"]
    assert state["weight"].dtype == torch.float32
    torch.testing.assert_close(state["weight"], lin.weight.detach().half().float(), atol=0, rtol=0)


def test_missing_corrupt_and_unlabelled_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(
        InputError, match=r"gone\.safetensors: expected toy weights \(\.safetensors\), got no such file"
    ):
        load_state(tmp_path / "gone.safetensors", what="toy weights")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="a corrupt file"):
        load_state(bad, what="toy weights")
    path = save_state(torch.nn.Linear(1, 1), tmp_path / "l.safetensors", {"a": "1"})
    with pytest.raises(InputError, match=r"expected toy weights \(metadata 'kind'\), got metadata keys \['a'\]"):
        load_state(path, what="toy weights", required=("kind",))


def test_default_weights_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("USHER2_WEIGHTS", raising=False)
    assert default_weights_dir() == Path(__file__).resolve().parents[1] / "weights"
    monkeypatch.setenv("USHER2_WEIGHTS", str(tmp_path))
    assert default_weights_dir() == tmp_path
