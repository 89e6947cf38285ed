"""Enhancer networks (usher2.enhance.networks): identity at init, gradients everywhere, size checks, SSIM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from usher2.enhance.networks import GeneratorConfig, PatchDiscriminator, UNetGenerator, ssim_torch

SMALL = GeneratorConfig(base_channels=8, depth=3)


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
