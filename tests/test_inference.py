"""Inference copies (usher2.inference): batch norm folded, channels-last, the same function."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from usher2.enhance.gan import GANEnhancer, load_generator
from usher2.inference import fold_batchnorm, inference_copy
from usher2.segment.unet import UNetSegmenter, load_network

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"

# Float32 outputs of the same function computed in another order: folding rounds
# w * gamma / sqrt(var + eps) once per weight, channels-last sums each output over its
# C * k * k terms (up to 2,304 here) in another order. With eps32 = 1.2e-7 the worst case is
# about 2,304 * eps32 = 2.8e-4 of the output's scale; random rounding gives ~sqrt(2,304) * eps32
# = 6e-6 per layer. 1e-4 of the output's scale sits between the two and bounds all layers.
REL = 1e-4


def _batchnorms(net: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = float(b.abs().max())
    assert float((a - b).abs().max()) <= REL * scale, (float((a - b).abs().max()), scale)


def _random_stats(net: nn.Module) -> nn.Module:
    """Batch norms with non-trivial running statistics and affine terms (what training leaves)."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return net.eval()


def test_sequential_conv_bn_folds_to_the_same_function() -> None:
    torch.manual_seed(0)
    net = _random_stats(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()))
    x = torch.randn(2, 3, 17, 23)
    with torch.inference_mode():
        ref = net(x)
        fast = inference_copy(net, "cpu")
        out = fast(x)
    assert _batchnorms(fast) == 0 and _batchnorms(net) == 1  # folded in the copy, the original untouched
    _close(out, ref)


def test_training_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train())


def test_cuda_device_gets_the_network_itself() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval()
    assert inference_copy(net, "cuda") is net


@pytest.mark.parametrize("name", ["enhancer", "segmenter"])
def test_shipped_networks_fold_every_batchnorm_and_agree(name: str) -> None:
    if name == "enhancer":  # data-dependent control flow: the nn.Sequential path
        net, _ = load_generator(WEIGHTS / "enhancer_pix2pix.safetensors")
        x = torch.rand(2, 1, 128, 96, generator=torch.Generator().manual_seed(1))
    else:  # smp's U-Net with a ResNet encoder: fx finds the pairs inside the residual blocks
        net, _ = load_network(WEIGHTS / "segmenter_unet.safetensors")
        x = torch.rand(2, 1, 128, 96, generator=torch.Generator().manual_seed(1))
    before = _batchnorms(net)
    with torch.inference_mode():
        ref = net.eval()(x)
        fast = inference_copy(net, "cpu")
        out = fast(x)
    assert before > 0 and _batchnorms(fast) == 0 and _batchnorms(net) == before
    _close(out, ref)


def test_wrappers_run_the_copy() -> None:
    enh = GANEnhancer(device="cpu")
    seg = UNetSegmenter(device="cpu")
    assert enh._fast is not enh.generator and _batchnorms(enh._fast) == 0
    assert seg._fast is not seg.net and _batchnorms(seg._fast) == 0
    x = np.random.default_rng(2).random((1, 1, 64, 80), dtype=np.float32)
    with torch.inference_mode():
        ref = enh.generator(torch.from_numpy(x))
    y = torch.from_numpy(np.ascontiguousarray(enh._enhance_numpy(x)))
    _close(y, ref)


def test_deep_extractor_features_come_from_the_folded_copy() -> None:
    from usher2.features.deep import DeepExtractor

    ex = DeepExtractor("resnet10t=random", device="cpu")
    assert _batchnorms(ex._fast) == 0 and _batchnorms(ex.model) > 0  # heat maps keep the model itself
    x = np.random.default_rng(3).standard_normal((2, 3, *ex.input_size)).astype(np.float32)
    with torch.inference_mode():
        ref = ex.model.forward_head(ex.model.forward_features(torch.from_numpy(x)), pre_logits=True)
        out = ex._forward(x)
    _close(torch.from_numpy(out), ref)


def test_split_skip_conv_is_the_conv_of_the_concatenation() -> None:
    from usher2.inference import SplitSkipConv

    torch.manual_seed(0)
    block = _random_stats(nn.Sequential(nn.Conv2d(12, 6, 3, padding=1), nn.BatchNorm2d(6), nn.LeakyReLU(0.2)))
    h, skip = torch.randn(2, 8, 9, 11), torch.randn(2, 4, 9, 11)
    with torch.inference_mode():
        ref = block(torch.cat([h, skip], dim=1))
        out = SplitSkipConv(block, 8)(h, skip)
    _close(out, ref)
    with pytest.raises(ValueError, match="ungrouped Conv2d"):
        SplitSkipConv(block, 12)  # no channel left for the skip


def test_enhancer_copy_has_split_skip_convs() -> None:
    from usher2.inference import SplitSkipConv

    enh = GANEnhancer(device="cpu")
    assert all(isinstance(b, SplitSkipConv) for b in enh._fast.up)
    assert not any(isinstance(b, SplitSkipConv) for b in enh.generator.up)  # the loaded network is untouched
    # every convolution of the copy channels-last; none of the copy's own weights trainable
    convs = [m for m in enh._fast.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    shared = {id(q) for q in enh.generator.parameters()}
    assert not any(q.requires_grad for q in enh._fast.parameters() if id(q) not in shared)


def test_the_copy_shares_what_it_does_not_fold_and_leaves_the_network_as_it_was() -> None:
    net = _random_stats(
        nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    )
    before = {k: (v.clone(), v.stride()) for k, v in net.state_dict().items()}
    fast = inference_copy(net, "cpu")
    assert fast[3].weight is net[3].weight  # the linear layer is not held twice
    assert fast[0].weight.is_contiguous(memory_format=torch.channels_last)
    for k, v in net.state_dict().items():  # values and layout of the original unchanged
        assert torch.equal(v, before[k][0]) and v.stride() == before[k][1], k
    x = torch.randn(3, 2, 7, 7)
    with torch.inference_mode():
        _close(fast(x), net(x))


def test_the_copy_leaves_each_modules_training_flag_as_it_was() -> None:
    # a network being trained (its batch norm frozen in eval mode, the rest training) keeps its
    # modes: the copy is the eval-mode function, the caller's network is not switched to eval
    net = _random_stats(nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)))
    net.train()
    net[1].eval()
    fast = inference_copy(net, "cpu")
    assert [m.training for m in net.modules()] == [True, True, False, True, True]
    assert not any(m.training for m in fast.modules())
    x = torch.randn(2, 2, 9, 9)
    with torch.inference_mode():
        ref = net.eval()(x)
        _close(fast(x), ref)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_sets_malloc_once_and_can_be_switched_off() -> None:
    """In fresh interpreters: glibc accepts both settings (mallopt returns 1 for each), a second
    call does not set them again, and USHER2_MALLOC=system leaves malloc alone."""
    code = (
        "import usher2.inference as i; a = i.keep_freed_memory(); "
        "i.ctypes = None; b = i.keep_freed_memory(); print(a, b)"  # b: from the first call, ctypes not used
    )
    env = {k: v for k, v in os.environ.items() if k != "USHER2_MALLOC"}
    run = lambda extra: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True, check=True
    ).stdout.split()
    assert run({}) == ["True", "True"]
    assert run({"USHER2_MALLOC": "system"}) == ["False", "False"]


def test_heat_maps_from_the_copy_are_the_models() -> None:
    """Grad-CAM on the shipped backbone's inference copy gives the model's maps: the copy's
    activations and their gradients each agree with the model's to REL of their scale, a map is
    a ReLU of their products' channel sums scaled to [0, 1] by its own min and max (each at most
    doubling the relative error; ReLU and the bilinear resize do not increase it), so 8 REL of
    the [0, 1] range bounds it. The copy's own weights require no gradient; the model's still do."""
    from usher2.explain.cam import explain
    from usher2.explain.targets import PooledFeatureTarget
    from usher2.features.deep import DeepExtractor

    ex = DeepExtractor("usresnet10t", device="cpu")
    assert not any(p.requires_grad for p in ex.inference_model.parameters())
    assert all(p.requires_grad for p in ex.model.parameters())
    rng = np.random.default_rng(4)
    frames = [rng.random((96, 128), dtype=np.float32) for _ in range(3)]
    masks = [np.zeros((96, 128), bool) for _ in frames]
    for k, m in enumerate(masks):
        m[20 + 5 * k : 70, 30 : 100 - 8 * k] = True
    x = torch.from_numpy(ex.crops(frames, masks))
    targets = [PooledFeatureTarget()] * len(frames)
    ref = explain(ex.model, x, method="gradcam", targets=targets)
    out = explain(ex.inference_model, x, method="gradcam", targets=targets)
    assert ref.max() > 0.99 and float(np.abs(out - ref).max()) <= 8 * REL, float(np.abs(out - ref).max())
    assert all(p.grad is None for p in ex.model.parameters())  # explain leaves no gradients behind
