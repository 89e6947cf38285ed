"""Issue 23 training options: randomised settings, the echogenicity / blend targets, Neighbor2Neighbor."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from usher2.enhance.networks import GeneratorConfig, UNetGenerator
from usher2.enhance.training import (
    DataConfig,
    EnhancerTrainConfig,
    load_train_config,
    neighbor2neighbor_loss,
    neighbour_subsample,
    train_enhancer,
    training_target,
    truth_pairs,
)
from usher2.simulate.randomise import randomised_configs
from usher2.simulate.shifted import echogenicity_db, echogenicity_display

CONFIGS = Path(__file__).resolve().parents[2] / "train" / "configs"


def test_echogenicity_display_is_the_clean_frames_log_compression_of_the_truth() -> None:
    # White is 10 dB above gland, black 60 dB below white: display = 1 + (dB - 10) / 60, clipped.
    r = np.array([10**0.5, 1.0, 0.1, 10**-2.5, 1e-4, 0.0, 100.0], np.float32)
    want = [1.0, 50 / 60, 30 / 60, 0.0, 0.0, 0.0, 1.0]
    np.testing.assert_allclose(echogenicity_display(r), want, atol=1e-6)
    # Affine in echogenicity_db wherever it does not clip, so fidelity r is unchanged by the mapping.
    inside = np.array([0.5, 1.0, 2.0], np.float32)
    np.testing.assert_allclose(echogenicity_display(inside), 1 + (echogenicity_db(inside) - 10) / 60, atol=1e-6)
    with pytest.raises(ValueError, match="dynamic_range_db must be > 0"):
        echogenicity_display(r, 0.0)


def test_targets_clean_echogenicity_and_blend_is_the_weighted_sum() -> None:
    rng = np.random.default_rng(0)
    clean = rng.random((8, 8), dtype=np.float32)
    refl = rng.uniform(0.0, 2.0, (8, 8)).astype(np.float32)
    np.testing.assert_array_equal(training_target(clean, refl, "clean"), clean)
    echo = training_target(clean, refl, "echogenicity")
    np.testing.assert_array_equal(echo, echogenicity_display(refl))
    blend = training_target(clean, refl, "blend", 0.3)
    np.testing.assert_allclose(blend, 0.7 * clean + 0.3 * echo, atol=1e-7)
    assert blend.dtype == np.float32 and 0.0 <= blend.min() and blend.max() <= 1.0
    with pytest.raises(ValueError, match="target must be one of clean, echogenicity, blend, got 'truth'"):
        training_target(clean, refl, "truth")
    with pytest.raises(ValueError, match=r"shapes differ: \(8, 8\) vs \(4, 4\)"):
        training_target(clean, refl[:4, :4], "blend")


def test_randomised_training_data_is_seeded_and_cycles_its_settings() -> None:
    configs = randomised_configs(2, 1000, 64)
    assert randomised_configs(2, 1000, 64) == configs and randomised_configs(2, 1001, 64) != configs
    a = truth_pairs(None, 3, 1000, configs, target="echogenicity", name="t")
    b = truth_pairs(None, 3, 1000, configs, target="echogenicity", name="t")
    assert a["x"].shape == a["y"].shape == a["truth_db"].shape == (3, 1, 64, 64)
    torch.testing.assert_close(a["x"], b["x"], atol=0, rtol=0)
    # The target is the truth, not a rendering: its pixels are the display law of truth_db.
    torch.testing.assert_close(a["y"], ((a["truth_db"] - 10) / 60 + 1).clamp(0, 1), atol=1e-6, rtol=0)
    assert not torch.equal(a["x"], a["clean"])


def test_neighbour_subsampler_takes_two_different_adjacent_pixels_per_cell() -> None:
    h = w = 8
    x = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)
    g1, g2 = neighbour_subsample(x, torch.Generator().manual_seed(0))
    assert g1.shape == g2.shape == (1, 1, 4, 4)
    r1, c1 = (g1 // w).long(), (g1 % w).long()
    r2, c2 = (g2 // w).long(), (g2 % w).long()
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    for r, c in ((r1, c1), (r2, c2)):  # both from their own 2 x 2 cell
        assert torch.equal(r[0, 0] // 2, rows) and torch.equal(c[0, 0] // 2, cols)
    assert torch.equal((r1 - r2).abs() + (c1 - c2).abs(), torch.ones_like(r1))  # 4-neighbours, never equal
    again = neighbour_subsample(x, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], g1) and torch.equal(again[1], g2)
    with pytest.raises(ValueError, match=r"even H and W, got \(7, 8\)"):
        neighbour_subsample(torch.zeros(1, 1, 7, 8))


def test_neighbor2neighbor_loss_is_zero_for_a_constant_frame_and_reaches_the_generator() -> None:
    g = UNetGenerator(GeneratorConfig(base_channels=4, depth=2))
    torch.nn.init.normal_(g.head.weight, std=0.1)
    flat = torch.full((2, 1, 32, 32), 0.4)
    with torch.no_grad():
        assert float(neighbor2neighbor_loss(g.eval(), flat)) < 1e-3  # identity-like net, no noise: nothing to learn
    noisy = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    loss = neighbor2neighbor_loss(g.train(), noisy, torch.Generator().manual_seed(2))
    loss.backward()
    assert loss > 0 and g.head.weight.grad is not None and g.head.weight.grad.abs().sum() > 0


def test_new_options_are_checked_and_old_digests_are_unchanged(tmp_path: Path) -> None:
    # The first shipped weights record digest 6cd7fea49cff0ac7: adding fields must not change it.
    assert load_train_config(CONFIGS / "ablations" / "enhancer_pix2pix_v1.yaml").digest().startswith("6cd7fea49cff0ac7")
    with pytest.raises(ValueError, match=r"data\.target must be one of clean, echogenicity, blend, got 'refl'"):
        DataConfig(target="refl")
    with pytest.raises(ValueError, match=r"data.blend must be in \(0, 1\), got 1.5"):
        DataConfig(target="blend", blend=1.5)
    with pytest.raises(ValueError, match=r"lambda_selfsup > 0 needs model 'pix2pix' and data\.real_root"):
        EnhancerTrainConfig(lambda_selfsup=1.0)
    base = EnhancerTrainConfig(data=DataConfig(settings=4, target="echogenicity"))
    assert base.digest() != replace(base, data=replace(base.data, target="blend")).digest()
    assert base.digest() == replace(base, data=replace(base.data, cache="elsewhere")).digest()  # where, not what
    for p in sorted((CONFIGS / "ablations").glob("enhancer_rand_*.yaml")):
        assert load_train_config(p).data.settings > 0, p.name


def test_tiny_randomised_echogenicity_run_validates_fidelity(tmp_path: Path) -> None:
    cfg = EnhancerTrainConfig(
        out=str(tmp_path / "run"),
        generator=GeneratorConfig(base_channels=4, depth=2),
        disc_channels=4,
        disc_layers=2,
        data=DataConfig(n_train=4, n_val=2, image_size=64, settings=2, target="echogenicity"),
        crop=32,
        batch_size=2,
        epochs=1,
        steps_per_epoch=1,
    )
    result = train_enhancer(cfg, log=lambda s: None)
    assert {"psnr", "ssim", "gcnr", "fidelity_r", "psnr_target", "ssim_target"} <= set(result.best_metrics)
    assert -1.0 <= result.best_metrics["fidelity_r"] <= 1.0
    card = result.weights.with_suffix(".md").read_text()
    assert "randomised_configs(2, 1000)" in card and "true echogenicity map" in card


def test_self_supervised_term_trains_on_real_crops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import usher2.enhance.training as training

    seen = {}

    def fake_frames(root, folds, size, work):  # stands in for BUS-BRA: the data path, not the data
        seen["args"] = (root, folds, size)
        return torch.rand(3, 1, size, size, generator=torch.Generator().manual_seed(0))

    monkeypatch.setattr(training, "bus_bra_frames", fake_frames)
    cfg = EnhancerTrainConfig(
        out=str(tmp_path / "run"),
        generator=GeneratorConfig(base_channels=4, depth=2),
        disc_channels=4,
        disc_layers=2,
        data=DataConfig(n_train=4, n_val=2, image_size=64, settings=2, target="echogenicity", real_root="bus-bra"),
        crop=32,
        batch_size=2,
        epochs=1,
        steps_per_epoch=1,
        lambda_selfsup=10.0,
    )
    result = train_enhancer(cfg, log=lambda s: None)
    assert seen["args"] == ("bus-bra", (2, 3, 4), 64) and np.isfinite(result.best_metrics["psnr"])
    assert "Neighbor2Neighbor" in result.weights.with_suffix(".md").read_text()
