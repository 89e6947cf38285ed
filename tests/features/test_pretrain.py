"""Backbone training settings and model card (usher2.features.pretrain): the config checks itself, loads
from YAML with unknown keys named, digests to the SHA-256 stored in the weights, and the card is written
from the weights' metadata alone.

No network is trained here: a run simulates its cohorts in worker processes (see ``train/`` and the
``usher2 train backbone`` command for the real run).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from usher2.features.pretrain import BackboneTrainConfig, load_backbone_config, write_backbone_card
from usher2.io.errors import InputError
from usher2.training import config_sha256, read_weights_metadata
from usher2.weights import default_weights_dir

SHIPPED = default_weights_dir() / "deep_usresnet10t.safetensors"


def test_defaults_train_on_four_bus_bra_folds_and_hold_out_the_fifth() -> None:
    cfg = BackboneTrainConfig()
    assert (cfg.arch, cfg.input_size, cfg.train_folds, cfg.val_folds) == ("resnet10t", 128, (1, 2, 3, 4), (5,))
    assert cfg.simulated_seed != cfg.val_simulated_seed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_folds": (1, 2, 5), "val_folds": (5,)}, r"train_folds \(1, 2, 5\) and val_folds \(5,\) overlap"),
        ({"input_size": 16}, "input_size >= 32"),
        ({"batch_size": 1}, "batch_size >= 2"),
        ({"lr": 0.0}, "lr > 0"),
        ({"epochs": 0}, "epochs >= 1"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BackboneTrainConfig(**kwargs)


def test_the_digest_is_the_sha256_of_every_setting() -> None:
    cfg = BackboneTrainConfig()
    assert cfg.digest() == config_sha256(cfg.to_dict()) == BackboneTrainConfig().digest()
    assert len(cfg.digest()) == 64
    assert BackboneTrainConfig(lr=0.01).digest() != cfg.digest()
    assert set(cfg.to_dict()) == {f.name for f in dataclasses.fields(BackboneTrainConfig)}


def test_load_backbone_config_reads_yaml_with_folds_as_tuples_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "backbone.yaml"
    p.write_text("epochs: 3\ntrain_folds: [1, 2]\nval_folds: [3]\nbus_bra: null\n")
    cfg = load_backbone_config(p, lr=0.1, device=None)  # a None override is ignored
    assert cfg == BackboneTrainConfig(epochs=3, train_folds=(1, 2), val_folds=(3,), bus_bra=None, lr=0.1)
    assert isinstance(cfg.train_folds, tuple) and isinstance(cfg.val_folds, tuple)


def test_load_backbone_config_names_an_unknown_key_and_a_bad_value(tmp_path: Path) -> None:
    p = tmp_path / "backbone.yaml"
    p.write_text("epochs: 3\nepoch: 4\n")
    with pytest.raises(InputError, match=r"backbone\.yaml: expected settings among .* got unknown keys \['epoch'\]"):
        load_backbone_config(p)
    p.write_text("train_folds: [1, 5]\n")
    with pytest.raises(InputError, match=r"backbone\.yaml: expected valid backbone training settings, .* overlap"):
        load_backbone_config(p)


def test_the_shipped_weights_record_their_config_and_its_digest() -> None:
    meta = read_weights_metadata(SHIPPED)
    cfg = BackboneTrainConfig(**json.loads(meta["train_config"]))
    assert cfg.digest() == meta["train_config_sha256"]
    assert json.loads(meta["data_config"])["input_size"] == [3, cfg.input_size, cfg.input_size]


def test_the_shipped_card_is_what_write_backbone_card_writes_from_the_shipped_weights(tmp_path: Path) -> None:
    copy = tmp_path / SHIPPED.name
    shutil.copy(SHIPPED, copy)
    card = write_backbone_card(copy)
    assert card == tmp_path / "deep_usresnet10t.md"
    assert card.read_text() == SHIPPED.with_suffix(".md").read_text()


def _weights(path: Path, config: BackboneTrainConfig, metrics: dict) -> Path:
    data_config = {"input_size": [3, config.input_size, config.input_size], "mean": [0.5] * 3, "std": [0.25] * 3}
    meta = {
        "arch": config.arch,
        "data_config": json.dumps(data_config),
        "train_config": json.dumps(config.to_dict(), sort_keys=True),
        "train_config_sha256": config.digest(),
        "metrics": json.dumps(metrics),
        "timm": "9.9",
        "torch": "8.8",
        "command": "",
    }
    save_file({"w": torch.zeros(1)}, str(path), metadata=meta)
    return path


def test_the_card_states_the_settings_and_metrics_in_the_metadata(tmp_path: Path) -> None:
    cfg = BackboneTrainConfig(input_size=64, bus_bra=None, simulated=40, simulated_seed=77, epochs=2, lr=0.02)
    metrics = {
        "epochs": 2,
        "steps": 30,
        "wall_seconds": 90.0,
        "simulated_her2": {"auc": 0.71234, "ci_low": 0.6, "ci_high": 0.80049, "n": 12},
    }
    text = write_backbone_card(_weights(tmp_path / "mine.safetensors", cfg, metrics)).read_text()
    lines = text.splitlines()
    assert lines[0] == "# mine.safetensors"
    assert "input 64x64 grey ROI crop" in text and "mean 0.5 and std 0.25" in text
    assert "- **Training data:** 40 simulated patients (usher2.simulate seed 77" in text  # no BUS-BRA part
    assert "2 epochs, batch 32, SGD one-cycle lr 0.02" in text
    # no command recorded: the generic one; 90 s = 1.5 min
    assert f"`usher2 train backbone --config ...` (config SHA-256 `{cfg.digest()[:16]}`); 30 steps in 1.5 min" in text
    assert "timm 9.9, torch 8.8." in text
    assert "- BUS-BRA pathology AUC, folds 5: not evaluated" in lines
    assert "- Simulated HER2 AUC, seed 6100: 0.712 (95% CI 0.600-0.800, n=12)" in lines
