"""CAMs: a quadrant-only toy model's maps sit in its quadrant, every method on CNN/ViT/U-Net, hooks, memory."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import timm
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from usher2.explain import CAM_METHODS, default_target_layers, explain, faithfulness, segmentation_targets
from usher2.io.errors import InputError
from usher2.segment.networks import SegmenterConfig, build_network

SIZE = 64


class QuadrantNet(nn.Module):
    """Looks only at the top-left quadrant: a gate (a parameter) zeroes the rest of the input.

    Bias-free convolutions and ReLU keep the features exactly 0 outside the quadrant, apart from
    a 2-pixel band that two 3x3 convolutions reach across its edge. The class-0 logit is the mean
    of the (non-negative) features, so every CAM of it is >= 0 and lives where the features do.
    """

    def __init__(self, size: int = SIZE) -> None:
        super().__init__()
        gate = torch.zeros(1, 1, size, size)
        gate[..., : size // 2, : size // 2] = 1.0
        self.gate = nn.Parameter(gate)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.fc = nn.Linear(16, 2, bias=False)
        with torch.no_grad():
            self.conv1.weight.abs_()
            self.conv2.weight.abs_()
            self.fc.weight[0] = 1.0 / 16
            self.fc.weight[1] = -1.0 / 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x * self.gate))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


def _randomised(net: nn.Module, seed: int) -> nn.Module:
    """Every parameter (the gate included) redrawn from N(0, 1): nothing singles out a quadrant."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net


def _quadrant_mass(cams: np.ndarray) -> np.ndarray:
    h, w = cams.shape[1:]
    return cams[:, : h // 2, : w // 2].sum(axis=(1, 2)) / cams.sum(axis=(1, 2))


def _inputs(n: int = 2, size: int = SIZE, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _hook_count(model: nn.Module) -> int:
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(m, n)) for m in model.modules() for n in names)


# ---------------------------------------------------------------- sanity: the quadrant toy


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_quadrant_model_puts_at_least_80_percent_of_cam_mass_in_its_quadrant(method):
    torch.manual_seed(0)
    net = QuadrantNet()
    x = _inputs(2)
    cams = explain(net, x, method=method, target_layers=[net.conv2], targets=[ClassifierOutputTarget(0)] * 2)
    # Outside the quadrant only the 2-px band is non-zero: even a flat map there leaves >= 32^2 / 34^2 = 0.886.
    assert (_quadrant_mass(cams) >= 0.8).all(), _quadrant_mass(cams)


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_randomised_weights_spread_the_cam_over_the_frame(method):
    torch.manual_seed(0)
    masses = []
    for seed in range(3):
        net = _randomised(QuadrantNet(), seed)
        cams = explain(net, _inputs(2, seed=seed), method=method, target_layers=[net.conv2],
                       targets=[ClassifierOutputTarget(0)] * 2)  # fmt: skip
        masses.extend(_quadrant_mass(cams).tolist())
    # A random gate favours no quadrant: by symmetry the expected share is 1/4.
    assert max(masses) < 0.8
    assert abs(float(np.mean(masses)) - 0.25) < 0.1, masses


# ---------------------------------------------------------------- every method on each kind of network


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet10t", pretrained=False, num_classes=2)


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=SIZE, pretrained=False, num_classes=2)


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    torch.manual_seed(0)
    return build_network(SegmenterConfig(encoder="resnet18", decoder_channels=(32, 16, 8, 8, 8), input_size=64))


def _check_maps(cams: np.ndarray, shape: tuple[int, ...]) -> None:
    assert cams.shape == shape and cams.dtype == np.float32
    assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0 + 1e-6
    # The package min-max scales every map: its peak is 1, or 0 for a map that ReLU emptied.
    peaks = cams.reshape(len(cams), -1).max(axis=1)
    assert np.all(np.isclose(peaks, 1.0, atol=1e-3) | (peaks == 0.0)), peaks


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_every_method_on_a_timm_cnn(cnn, method):
    _check_maps(explain(cnn, _inputs(2), method=method, targets=[ClassifierOutputTarget(1)] * 2), (2, SIZE, SIZE))


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_every_method_on_a_timm_vit_through_the_reshape_transform(vit, method):
    assert default_target_layers(vit) == [vit.blocks[-1].norm1]
    _check_maps(explain(vit, _inputs(2), method=method, targets=[ClassifierOutputTarget(0)] * 2), (2, SIZE, SIZE))


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_every_method_on_an_smp_unet_with_the_segmentation_target(unet, method):
    x = _inputs(2, channels=1)
    assert default_target_layers(unet) == [unet.decoder]
    _check_maps(explain(unet, x, method=method), (2, SIZE, SIZE))


def test_segmentation_target_covers_the_predicted_lesion_or_the_whole_frame():
    z = torch.full((2, 1, 8, 8), -2.0)
    z[0, 0, 2:5, 2:6] = 1.5  # 12 lesion pixels
    t = segmentation_targets(z)
    assert [float(t[b](z[b])) for b in range(2)] == [12 * 1.5, 64 * -2.0]


def test_a_backbone_without_head_is_explained_through_a_target_callable():
    from usher2.explain import LinearTarget, PooledFeatureTarget

    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    x = _inputs(1)
    sums = explain(net, x, targets=[PooledFeatureTarget()])
    # The sum is the linear target with all-ones weights: the same gradients, the same map.
    ones = explain(net, x, targets=[LinearTarget(np.ones(net.num_features, np.float32), bias=3.0)])
    np.testing.assert_allclose(sums, ones, atol=1e-5)


# ---------------------------------------------------------------- hooks, modes, errors


def test_hooks_exist_during_the_call_and_are_all_released_after_it():
    net = QuadrantNet()
    during: list[int] = []

    def target(out: torch.Tensor) -> torch.Tensor:
        during.append(_hook_count(net))
        return out[0]

    assert _hook_count(net) == 0
    explain(net, _inputs(1), target_layers=[net.conv1, net.conv2], targets=[target])
    # Two forward hooks per target layer (activation, gradient) while the target is evaluated.
    assert during == [4]
    assert _hook_count(net) == 0


def test_hooks_are_released_when_the_call_raises():
    net = QuadrantNet()

    def broken(out: torch.Tensor) -> torch.Tensor:
        raise ValueError("target failed")

    with pytest.raises(ValueError, match="target failed"):
        explain(net, _inputs(1), targets=[broken])
    assert _hook_count(net) == 0


def test_mode_is_restored_and_no_parameter_gradients_are_left():
    net = QuadrantNet().train()
    explain(net, _inputs(1), targets=[ClassifierOutputTarget(0)])
    assert net.training is True
    assert sum(p.grad is not None for p in net.parameters()) == 0


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(InputError, match="gradcam, gradcam\\+\\+, scorecam, eigencam, layercam"):
        explain(QuadrantNet(), _inputs(1), method="cam")
    with pytest.raises(InputError, match="B, C, H, W"):
        explain(QuadrantNet(), torch.zeros(3, SIZE, SIZE))
    with pytest.raises(InputError, match="one target per image \\(2\\)"):
        explain(QuadrantNet(), _inputs(2), targets=[ClassifierOutputTarget(0)])


# ---------------------------------------------------------------- faithfulness


def test_confidence_change_is_zero_for_the_true_quadrant_and_minus_the_score_for_its_inverse():
    torch.manual_seed(0)
    net = QuadrantNet()
    x = _inputs(2)
    quadrant = np.zeros((2, SIZE, SIZE), np.float32)
    quadrant[:, : SIZE // 2, : SIZE // 2] = 1.0
    targets = [ClassifierOutputTarget(0)] * 2
    with torch.no_grad():
        score = net(x)[:, 0].numpy()
    keep = faithfulness(net, x, quadrant, targets, metric="confidence_drop")
    drop = faithfulness(net, x, 1.0 - quadrant, targets, metric="confidence_drop")
    np.testing.assert_allclose(keep, 0.0, atol=1e-6)  # the map keeps every pixel the model sees
    np.testing.assert_allclose(drop, -score, rtol=1e-5)  # the model sees nothing: its logit falls to 0


def test_road_ranks_the_gradcam_map_above_a_random_map_above_the_inverted_map():
    torch.manual_seed(0)
    net = QuadrantNet()
    x = _inputs(1)
    targets = [ClassifierOutputTarget(0)]
    cam = explain(net, x, target_layers=[net.conv2], targets=targets)
    noise = np.random.default_rng(0).random(cam.shape).astype(np.float32)
    kw = {"metric": "road", "percentiles": (20, 50, 80)}
    good, rand, bad = (float(faithfulness(net, x, m, targets, **kw)[0]) for m in (cam, noise, 1.0 - cam))
    assert good > rand > bad
    # Inverting the map swaps MoRF and LeRF at symmetric percentiles: the score changes sign.
    assert good > 0 and bad == pytest.approx(-good, rel=0.05)
    assert faithfulness(net, x, cam, targets, **kw)[0] == pytest.approx(good, abs=0)  # seeded imputation noise


def test_unknown_metric_is_an_input_error():
    with pytest.raises(InputError, match="road, confidence_drop"):
        faithfulness(QuadrantNet(), _inputs(1), np.zeros((1, SIZE, SIZE), np.float32), metric="auc")


# ---------------------------------------------------------------- memory


def _rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except ImportError:  # Linux without psutil
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_1000_consecutive_cams_grow_resident_memory_by_at_most_5_percent():
    torch.manual_seed(0)
    net = QuadrantNet(32)
    x = _inputs(1, size=32)
    targets = [ClassifierOutputTarget(0)]
    for _ in range(50):  # warm-up: allocator pools, lazy imports
        explain(net, x, targets=targets)
    gc.collect()
    before = _rss_bytes()
    for _ in range(1000):
        explain(net, x, targets=targets)
    gc.collect()
    after = _rss_bytes()
    # A leak of one activation + gradient set per call (2 x 16 x 32 x 32 float32 = 128 kB) would add 128 MB.
    assert after <= 1.05 * before, f"RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB"
    assert _hook_count(net) == 0
