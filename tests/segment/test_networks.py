"""Segmenter networks (usher2.segment.networks): settings checks, configurable encoders, local encoder weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from usher2.io.errors import InputError
from usher2.segment.networks import SegmenterConfig, build_network, normalise_frames


def test_bad_network_settings_are_named() -> None:
    with pytest.raises(ValueError, match="input_size must be a multiple of 32"):
        SegmenterConfig(input_size=100)
    with pytest.raises(ValueError, match="arch must be one of"):
        SegmenterConfig(arch="vnet")
    with pytest.raises(ValueError, match="encoder 'resnet7' is unknown"):
        build_network(SegmenterConfig(encoder="resnet7"))


@pytest.mark.parametrize(
    ("arch", "encoder"),
    [("unet", "resnet34"), ("unet", "efficientnet-b0"), ("unet", "tu-resnet18"), ("unetplusplus", "resnet18")],
)
def test_configurable_encoders_build_one_channel_networks(arch: str, encoder: str) -> None:
    net = build_network(SegmenterConfig(arch=arch, encoder=encoder, input_size=64)).eval()
    with torch.inference_mode():
        assert net(torch.rand(2, 1, 64, 96)).shape == (2, 1, 64, 96)


def test_local_encoder_weights_load_with_rgb_summed_to_grey(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = timm.create_model("resnet18", pretrained=False).state_dict()  # 3-channel conv1, an fc head
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "r18.safetensors"))
    net = build_network(SegmenterConfig(encoder="resnet18", encoder_weights=str(tmp_path / "r18.safetensors")))
    torch.testing.assert_close(net.encoder.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(net.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    save_file({"conv1.weight": state["conv1.weight"]}, str(tmp_path / "r34.safetensors"))
    with pytest.raises(InputError, match=r"r34\.safetensors: expected weights for every encoder tensor"):
        build_network(SegmenterConfig(encoder="resnet18", encoder_weights=str(tmp_path / "r34.safetensors")))


def test_percentile_normalisation_maps_the_1st_and_99th_percentiles_to_0_and_1() -> None:
    x = np.random.default_rng(0).uniform(0.1, 0.5, (3, 40, 50)).astype(np.float32)
    y = normalise_frames(x, "percentile")
    for k in range(3):
        lo, hi = np.percentile(y[k], [1.0, 99.0])
        assert abs(lo) < 1e-5 and abs(hi - 1.0) < 1e-5  # float32 arithmetic on values of order 1
    assert normalise_frames(x, "none") is x
    with pytest.raises(ValueError, match="normalise must be one of none, percentile, got 'zscore'"):
        SegmenterConfig(normalise="zscore")
