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
