"""Enhancer training (usher2.enhance.training): resume, a changed config refused, config errors, shipped configs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from usher2.enhance.gan import load_generator
from usher2.enhance.networks import GeneratorConfig
from usher2.enhance.training import DataConfig, EnhancerTrainConfig, load_train_config, train_enhancer
from usher2.io.errors import InputError


def _tiny(out: Path, **kw) -> EnhancerTrainConfig:
    base = EnhancerTrainConfig(
        out=str(out),
        generator=GeneratorConfig(base_channels=4, depth=2),
        disc_channels=4,
        disc_layers=2,
        data=DataConfig(n_train=6, n_val=3, image_size=64),
        crop=32,
        batch_size=2,
        epochs=2,
        steps_per_epoch=2,
    )
    return replace(base, **kw)


@pytest.mark.slow
def test_resumed_training_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = train_enhancer(_tiny(tmp_path / "a"), log=lambda s: None)
    train_enhancer(_tiny(tmp_path / "b", epochs=1), log=lambda s: None)  # "killed" after epoch 0
    resumed = train_enhancer(_tiny(tmp_path / "b"), log=lambda s: None)
    # Both runs are in this process, with the same thread count and kernels: training on the CPU is bit-reproducible.
    assert [h["psnr"] for h in resumed.history] == [h["psnr"] for h in straight.history]
    a, _ = load_generator(straight.weights)
    b, _ = load_generator(resumed.weights)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, atol=0, rtol=0, msg=k)


@pytest.mark.slow
def test_cyclegan_trains_and_a_changed_config_is_refused(tmp_path: Path) -> None:
    result = train_enhancer(_tiny(tmp_path / "c", model="cyclegan", epochs=1), log=lambda s: None)
    assert result.weights.is_file() and set(result.best_metrics) == {"psnr", "ssim", "gcnr"}
    with pytest.raises(InputError, match="a checkpoint of this config"):
        train_enhancer(_tiny(tmp_path / "c", model="cyclegan", lr=1e-3), log=lambda s: None)


def test_config_file_errors_are_named(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("model: pix2pix\nlearning_rate: 0.1\n")
    with pytest.raises(InputError, match=r"unknown keys \['learning_rate'\]"):
        load_train_config(p)
    p.write_text("crop: 100\n")
    with pytest.raises(InputError, match="crop must be a multiple of 16"):
        load_train_config(p)
    p.write_text("data: {train_seed: 5, val_seed: 5}\n")
    with pytest.raises(InputError, match=r"val_seed must differ from data\.train_seed"):
        load_train_config(p)


def test_shipped_configs_load() -> None:
    root = Path(__file__).resolve().parents[2] / "train" / "configs"
    names = sorted(p.name for p in root.glob("enhancer_*.yaml"))
    assert names == ["enhancer_cyclegan_busbra.yaml", "enhancer_pix2pix_cpu.yaml", "enhancer_pix2pix_gpu.yaml"]
    for p in root.glob("enhancer_*.yaml"):
        assert load_train_config(p).generator == GeneratorConfig(base_channels=16, depth=4, max_channels=128)
