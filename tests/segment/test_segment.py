"""Segmenter: networks, the contract on any frame size, weights files, training resume, shipped weights."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from usher2.evaluate.segmentation import dice
from usher2.io.errors import InputError
from usher2.segment import available_segmenters, create_segmenter
from usher2.segment.networks import SegmenterConfig, build_network
from usher2.segment.training import SegmenterDataConfig, SegmenterTrainConfig, load_segmenter_config, train_segmenter
from usher2.segment.unet import UNetSegmenter, load_network, save_network

TINY = SegmenterConfig(encoder="resnet18", decoder_channels=(16, 16, 8, 8, 8), input_size=64)
ROOT = Path(__file__).resolve().parents[2]


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


def test_bad_network_settings_are_named() -> None:
    with pytest.raises(ValueError, match="input_size must be a multiple of 32"):
        SegmenterConfig(input_size=100)
    with pytest.raises(ValueError, match="arch must be one of"):
        SegmenterConfig(arch="vnet")
    with pytest.raises(ValueError, match="encoder 'resnet7' is unknown"):
        build_network(SegmenterConfig(encoder="resnet7"))


def test_any_frame_size_gives_same_shape_and_torch_stays_torch(tmp_path: Path) -> None:
    seg = UNetSegmenter(_saved(tmp_path), device="cpu")
    for shape in [(2, 1, 37, 53), (1, 1, 8, 8), (1, 1, 3000, 4000)]:
        x = np.random.default_rng(1).random(shape, dtype=np.float32)
        z = seg.logits(x)
        assert z.shape == shape and np.isfinite(z).all()
    t = torch.rand(1, 1, 40, 30)
    out = seg.logits(t)
    assert isinstance(out, torch.Tensor) and out.shape == t.shape
    np.testing.assert_array_equal(out.numpy(), seg.logits(t.numpy()))


def test_round_trip_gives_equal_logits(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    torch.manual_seed(0)
    net = build_network(TINY).eval()
    x = torch.rand(1, 1, 64, 64)
    loaded, meta = load_network(path)
    with torch.inference_mode():
        np.testing.assert_allclose(loaded(x).numpy(), net.half().float()(x).numpy(), atol=1e-4)
    assert SegmenterConfig.from_json(meta["segmenter_config"]) == TINY


def test_no_lesion_is_an_explicit_result(tmp_path: Path) -> None:
    seg = UNetSegmenter(_saved(tmp_path, bias=-20.0), device="cpu")
    [result] = seg.segment(np.full((1, 1, 50, 70), 0.5, np.float32))
    assert result.no_lesion and result.area_px == 0 and result.uncertainty == 0.0
    assert result.mask.shape == (50, 70) and result.probability.max() < 1e-6
    [sure] = UNetSegmenter(_saved(tmp_path, bias=20.0), device="cpu").segment(np.zeros((1, 1, 30, 20), np.float32))
    assert (
        not sure.no_lesion and sure.area_px == 600 and sure.uncertainty < 1e-5
    )  # p is clipped to 1 - 1e-7: 2.5e-6 bits


def test_flip_tta_averages_logits(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    x = np.random.default_rng(3).random((1, 1, 64, 64), dtype=np.float32)
    plain = UNetSegmenter(path, device="cpu").logits(x)
    flipped = UNetSegmenter(path, device="cpu").logits(np.ascontiguousarray(x[..., ::-1]))[..., ::-1]
    np.testing.assert_allclose(UNetSegmenter(path, device="cpu", tta=True).logits(x), (plain + flipped) / 2, atol=1e-5)


def test_missing_and_corrupt_weights_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.safetensors: expected segmenter weights"):
        create_segmenter("unet", weights=tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match=r"bad\.safetensors: expected a readable safetensors file, got a corrupt"):
        create_segmenter("unet", weights=bad)


def test_bad_input_is_explained(tmp_path: Path) -> None:
    seg = UNetSegmenter(_saved(tmp_path), device="cpu")
    with pytest.raises(ValueError, match=r"got values in \[0, 4000\] \(16-bit data\? divide by 65535\)"):
        seg.logits(np.linspace(0, 4000, 64, dtype=np.float32).reshape(1, 1, 8, 8))
    with pytest.raises(ValueError, match="NaN/inf"):
        seg.logits(np.full((1, 1, 8, 8), np.nan, np.float32))


def _tiny_run(out: Path, **kw) -> SegmenterTrainConfig:
    base = SegmenterTrainConfig(
        out=str(out),
        network=TINY,
        data=SegmenterDataConfig(bus_bra=None, simulated=4, simulated_size=64),
        batch_size=2,
        epochs=2,
        steps_per_epoch=2,
    )
    return replace(base, **kw)


@pytest.mark.slow
def test_resumed_training_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    whole = train_segmenter(_tiny_run(tmp_path / "a"), log=lambda s: None)

    def kill(step: int, total: int) -> None:
        if step == 3:  # during the second epoch: the first one's checkpoint is on disk
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_segmenter(_tiny_run(tmp_path / "b"), log=lambda s: None, progress=kill)
    with pytest.raises(InputError, match="a checkpoint of this config"):
        train_segmenter(_tiny_run(tmp_path / "b", lr=0.5), log=lambda s: None)
    resumed = train_segmenter(_tiny_run(tmp_path / "b"), log=lambda s: None)
    a, _ = load_network(whole.weights)
    b, _ = load_network(resumed.weights)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)
    assert Path(whole.weights).with_suffix(".md").is_file()


def test_config_errors_are_named(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("data: {folds: [1, 6]}\n")
    with pytest.raises(InputError, match=r"data\.folds must be distinct BUS-BRA folds among 1\.\.5, got \[1, 6\]"):
        load_segmenter_config(p)
    p.write_text("epoch: 3\n")
    with pytest.raises(InputError, match=r"unknown keys \['epoch'\]"):
        load_segmenter_config(p)
    for cfg in sorted((ROOT / "train" / "configs").glob("segmenter_*.yaml")):
        assert load_segmenter_config(cfg).cv_folds == (1, 2, 3, 4, 5)


def test_shipped_weights_card_and_held_out_simulated_frames(tmp_path: Path) -> None:
    from usher2.simulate import SimulationConfig, simulate_cohort

    seg = create_segmenter("unet", device="cpu")
    cv = json.loads(seg.metadata["cv"])
    card = (ROOT / "weights" / "segmenter_unet.md").read_text()
    assert f"Dice {cv['dice']['mean']:.3f}" in card and cv["n_frames"] == 1875
    # Seed 7000 is used by no training or validation run.
    df = simulate_cohort(6, 7000, tmp_path, config=SimulationConfig(image_size=(256, 256)), workers=1)
    import cv2

    scores = []
    for _, row in df.iterrows():
        img = cv2.imread(str(tmp_path / row["image"]), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
        truth = cv2.imread(str(tmp_path / row["mask"]), cv2.IMREAD_GRAYSCALE) > 127
        scores.append(dice(seg.predict_mask(img[None, None])[0, 0], truth))
    assert np.mean(scores) > 0.85  # the card's held-out simulated Dice is 0.92


def test_negative_samples_are_lesion_free(tmp_path: Path) -> None:
    import pandas as pd

    from usher2.segment.training import _Frames, _Sampler, background_crop

    rng = np.random.default_rng(0)
    images, masks = [], []
    for k in range(4):
        img = rng.integers(0, 200, (96, 128), dtype=np.uint8)
        m = np.zeros((96, 128), bool)
        m[30:60, 10 + 10 * k : 50 + 10 * k] = True
        img[m] = 255  # the only pixels at 255
        images.append(img)
        masks.append(m)
    for img, m in zip(images, masks, strict=True):
        crop = background_crop(img, m)
        assert crop is not None and crop.max() < 255 and min(crop.shape) >= 32
    assert background_crop(images[0], np.ones((96, 128), bool)) is None  # no room beside the lesion
    info = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("abcd"), "fold": 0, "device": "x", "source": "x"})
    config = _tiny_run(tmp_path, negative_sampling=0.5, batch_size=8)
    sampler = _Sampler(config, _Frames(list("abcd"), images, masks, info), rank=0)
    assert len(sampler.negatives) == 4
    for step in range(3):
        _, y = sampler.batch(step)
        assert y[4:].sum() == 0 and (y[:4].flatten(1).sum(1) > 0).all()


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


def test_shipped_weights_find_no_lesion_in_blank_frames() -> None:
    seg = create_segmenter("unet", device="cpu")
    blank = np.stack([np.full((1, 200, 300), v, np.float32) for v in (0.0, 0.5)])
    assert [r.no_lesion for r in seg.segment(blank)] == [True, True]
