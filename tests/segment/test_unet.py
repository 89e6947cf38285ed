"""UNetSegmenter (usher2.segment.unet): any frame size, weights files, flip TTA and the shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from usher2.evaluate.segmentation import dice
from usher2.io.errors import InputError
from usher2.segment import create_segmenter
from usher2.segment.networks import SegmenterConfig, build_network
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


def test_shipped_weights_find_no_lesion_in_blank_frames() -> None:
    seg = create_segmenter("unet", device="cpu")
    blank = np.stack([np.full((1, 200, 300), v, np.float32) for v in (0.0, 0.5)])
    assert [r.no_lesion for r in seg.segment(blank)] == [True, True]
