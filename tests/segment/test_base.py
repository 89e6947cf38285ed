"""Segmenter contract (usher2.segment.base): the registry, explicit no-lesion results and input checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from usher2.segment import available_segmenters, create_segmenter
from usher2.segment.networks import SegmenterConfig, build_network
from usher2.segment.unet import UNetSegmenter, save_network

TINY = SegmenterConfig(encoder="resnet18", decoder_channels=(16, 16, 8, 8, 8), input_size=64)


def _saved(tmp_path: Path, bias: float | None = None) -> Path:
    torch.manual_seed(0)
    net = build_network(TINY).eval()
    if bias is not None:  # a network that is sure there is no lesion anywhere
        head = net.segmentation_head[0]
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.constant_(head.bias, bias)
    return save_network(net, TINY, tmp_path / "s.safetensors")


def test_registry_lists_the_networks_and_unknown_names_are_explained() -> None:
    assert available_segmenters() == ["unet", "unetplusplus"]
    with pytest.raises(KeyError, match="unknown segmenter 'vnet'; available: unet, unetplusplus"):
        create_segmenter("vnet")


def test_no_lesion_is_an_explicit_result(tmp_path: Path) -> None:
    seg = UNetSegmenter(_saved(tmp_path, bias=-20.0), device="cpu")
    [result] = seg.segment(np.full((1, 1, 50, 70), 0.5, np.float32))
    assert result.no_lesion and result.area_px == 0 and result.uncertainty == 0.0
    assert result.mask.shape == (50, 70) and result.probability.max() < 1e-6
    [sure] = UNetSegmenter(_saved(tmp_path, bias=20.0), device="cpu").segment(np.zeros((1, 1, 30, 20), np.float32))
    assert (
        not sure.no_lesion and sure.area_px == 600 and sure.uncertainty < 1e-5
    )  # p is clipped to 1 - 1e-7: 2.5e-6 bits


def test_bad_input_is_explained(tmp_path: Path) -> None:
    seg = UNetSegmenter(_saved(tmp_path), device="cpu")
    with pytest.raises(ValueError, match=r"got values in \[0, 4000\] \(16-bit data\? divide by 65535\)"):
        seg.logits(np.linspace(0, 4000, 64, dtype=np.float32).reshape(1, 1, 8, 8))
    with pytest.raises(ValueError, match="NaN/inf"):
        seg.logits(np.full((1, 1, 8, 8), np.nan, np.float32))


def _masks_with_holes() -> list[np.ndarray]:
    """Thresholded smoothed noise at several densities (blobs, holes, border-touching parts, thin
    bridges), single pixels, lines and the all-empty and all-full frames, in odd shapes."""
    from scipy import ndimage

    rng = np.random.default_rng(11)
    out = [np.zeros((9, 7), bool), np.ones((9, 7), bool), np.eye(12, 17, dtype=bool), np.ones((1, 6), bool)]
    for shape in ((64, 64), (37, 90), (5, 128)):
        for sigma, level in ((1.0, 0.0), (2.0, 0.3), (3.0, -0.2), (0.7, 0.5)):
            noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
            out.append(noise > level * noise.std())
    ring = np.zeros((40, 40), bool)
    ring[5:35, 5:35] = True
    ring[10:30, 10:30] = False
    ring[19:21, 5:10] = False  # a channel from the hole towards the ring's outside, closed at 5
    out.append(ring)
    return out


def test_fill_holes_is_scipys() -> None:
    """OpenCV's components give SciPy's binary_fill_holes exactly (a set of pixels: no tolerance)."""
    from scipy import ndimage

    from usher2.segment.base import fill_holes

    for m in _masks_with_holes():
        np.testing.assert_array_equal(fill_holes(m), ndimage.binary_fill_holes(m))
    assert fill_holes(np.zeros((3, 4, 5), bool)).shape == (3, 4, 5)  # other ranks: SciPy's


@pytest.mark.parametrize("margin", [0, 1, 2, 5])
def test_uncertainty_region_is_scipys_iterated_dilation(margin: int) -> None:
    """The entropy is averaged over SciPy's ``margin`` 3 x 3 dilations of the mask: with random
    probabilities (a different entropy at each pixel, so another set of pixels gives another mean)
    the result is the mean over that region, computed here the same way (boolean indexing in
    raster order, float64): equal bit for bit."""
    from scipy import ndimage

    from usher2.segment.base import entropy_uncertainty

    rng = np.random.default_rng(3)
    for m in _masks_with_holes():
        if not m.any():
            continue
        region = ndimage.binary_dilation(m, structure=np.ones((3, 3), bool), iterations=margin)
        p = rng.random(m.shape).astype(np.float32)
        q = np.clip(p[region].astype(np.float64), 1e-7, 1 - 1e-7)
        expected = float((-(q * np.log2(q) + (1 - q) * np.log2(1 - q))).mean())
        assert entropy_uncertainty(p, m, margin) == expected
