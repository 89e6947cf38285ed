"""Learned enhancers (usher2.enhance.gan): safetensors round trip, padding and tiling, weights-file errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from usher2.enhance import create_enhancer
from usher2.enhance.gan import GANEnhancer, load_generator, save_generator
from usher2.enhance.networks import GeneratorConfig, UNetGenerator
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
