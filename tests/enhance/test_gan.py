"""Learned enhancers: networks, safetensors round trip, padding/tiling, training and resume."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from usher2.enhance import create_enhancer
from usher2.enhance.gan import GANEnhancer, load_generator, save_generator
from usher2.enhance.networks import GeneratorConfig, PatchDiscriminator, UNetGenerator, ssim_torch
from usher2.enhance.training import DataConfig, EnhancerTrainConfig, load_train_config, train_enhancer
from usher2.io.errors import InputError

SMALL = GeneratorConfig(base_channels=8, depth=3)


def _random_generator(config: GeneratorConfig = SMALL, seed: int = 0) -> UNetGenerator:
    """A generator that is not the identity: random head and BatchNorm statistics."""
    torch.manual_seed(seed)
    g = UNetGenerator(config)
    torch.nn.init.normal_(g.head.weight, std=0.5)
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return g.eval()


def test_untrained_generator_is_the_identity() -> None:
    g = UNetGenerator(SMALL).eval()
    x = torch.rand(2, 1, 32, 48)
    torch.testing.assert_close(g(x), x.clamp(1e-3, 1 - 1e-3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("net", ["generator", "discriminator"])
def test_every_parameter_gets_a_gradient_and_outputs_are_finite(net: str) -> None:
    torch.manual_seed(0)
    if net == "generator":
        model = UNetGenerator(SMALL)
        torch.nn.init.normal_(model.head.weight, std=0.1)  # a zero head blocks gradients upstream
        out = model(torch.rand(2, 1, 32, 32))
    else:
        model = PatchDiscriminator(in_channels=2, base_channels=8)
        out = model(torch.rand(2, 2, 64, 64))
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_generator_rejects_sizes_it_cannot_take() -> None:
    with pytest.raises(ValueError, match=r"multiples of 8, got \(1, 1, 30, 32\)"):
        UNetGenerator(SMALL)(torch.rand(1, 1, 30, 32))


def test_ssim_torch_equals_scikit_image() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((64, 80))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    got = ssim_torch(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]).item()
    ref = structural_similarity(b, a, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert got == pytest.approx(ref, abs=1e-12)


def test_safetensors_round_trip_gives_equal_outputs(tmp_path: Path) -> None:
    g = _random_generator()
    path = save_generator(g, tmp_path / "g.safetensors", metadata={"note": "test"})
    loaded, meta = load_generator(path)
    assert meta["note"] == "test" and meta["format"] == "usher2-enhancer/1"
    # Weights are stored as fp16: compare with the same generator rounded to fp16. The same weights, input and
    # shapes in one process run the same kernels, so the outputs are bit-identical.
    rounded = UNetGenerator(SMALL)
    rounded.load_state_dict({k: v.half().float() for k, v in g.state_dict().items()})
    x = torch.rand(2, 1, 40, 56)
    m = SMALL.multiple
    xp = torch.nn.functional.pad(x, (0, (-56) % m, 0, (-40) % m), mode="reflect")
    torch.testing.assert_close(loaded(xp), rounded.eval()(xp), atol=0, rtol=0)


def test_enhancer_pads_any_size_and_keeps_numpy_or_torch(tmp_path: Path) -> None:
    path = save_generator(_random_generator(), tmp_path / "g.safetensors")
    e = GANEnhancer(weights=path, device="cpu")
    for shape in [(2, 1, 37, 53), (1, 1, 8, 8), (1, 1, 1, 9)]:
        x = np.random.default_rng(1).random(shape).astype(np.float32)
        y = e(x)
        assert y.shape == shape and np.isfinite(y).all() and 0 <= y.min() and y.max() <= 1
    t = torch.rand(1, 1, 20, 30)
    out = e(t)
    assert isinstance(out, torch.Tensor) and out.shape == t.shape
    np.testing.assert_array_equal(out.numpy(), e(t.numpy()))


def test_tiles_agree_with_the_whole_frame_inside(tmp_path: Path) -> None:
    # depth 3 with 3x3 convs sees about +-30 px; with a 32 px overlap a tile's kept core has the
    # same receptive field as in the whole frame, so interior pixels agree to float rounding.
    path = save_generator(_random_generator(), tmp_path / "g.safetensors")
    x = np.random.default_rng(2).random((1, 1, 300, 420)).astype(np.float32)
    whole = GANEnhancer(weights=path, device="cpu", tile=512)(x)
    tiled = GANEnhancer(weights=path, device="cpu", tile=96, overlap=32)(x)
    np.testing.assert_allclose(tiled[..., 32:-32, 32:-32], whole[..., 32:-32, 32:-32], atol=1e-4)


def test_missing_and_corrupt_weights_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.safetensors: expected an enhancer weights file"):
        create_enhancer("pix2pix", weights=tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match=r"bad\.safetensors: expected a readable safetensors file, got a corrupt"):
        create_enhancer("cyclegan", weights=bad)


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


@pytest.mark.slow
def test_an_8000_pixel_frame_goes_through_tiles_and_matches_a_crop(tmp_path: Path) -> None:
    # 8000 x 8000 is far above the 512 px tile; the result must equal running the network on a
    # crop alone, away from the crop's edges (depth 2 with 3x3 convs sees about +-14 px). A
    # 2-channel network keeps this to seconds; the tiling code is the same for any width.
    path = save_generator(_random_generator(GeneratorConfig(base_channels=2, depth=2)), tmp_path / "g.safetensors")
    e = GANEnhancer(weights=path, device="cpu", batch_size=32)
    x = np.random.default_rng(5).random((1, 1, 8000, 8000), dtype=np.float32)
    y = e(x)
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    r0, c0 = 4100, 7500  # straddles tile seams (cores are 384 px from 0)
    crop = e(np.ascontiguousarray(x[..., r0 : r0 + 400, c0 : c0 + 400]))
    np.testing.assert_allclose(y[..., r0 + 32 : r0 + 368, c0 + 32 : c0 + 368], crop[..., 32:368, 32:368], atol=1e-4)
