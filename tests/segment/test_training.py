"""Segmenter training (usher2.segment.training): config checks, resume, negative samples, leave-device-out."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from usher2.io.errors import InputError
from usher2.segment.networks import SegmenterConfig
from usher2.segment.training import SegmenterDataConfig, SegmenterTrainConfig, load_segmenter_config, train_segmenter
from usher2.segment.unet import load_network

TINY = SegmenterConfig(encoder="resnet18", decoder_channels=(16, 16, 8, 8, 8), input_size=64)
ROOT = Path(__file__).resolve().parents[2]


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


def _fake_bus_bra(root: Path) -> None:
    """Ten frames of ten patients: six from a 'GE Logiq' scanner, four from a 'Toshiba' one."""
    rng = np.random.default_rng(0)
    rows, folds = [], []
    for k in range(10):
        ident = f"bus_{k + 1:04d}-l"
        img = rng.integers(20, 90, (64, 128), dtype=np.uint8)
        mask = np.zeros((64, 128), np.uint8)
        mask[20 + k : 40 + k, 10:40] = 255
        img[mask > 0] = 200
        (root / "Images").mkdir(parents=True, exist_ok=True)
        (root / "Masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "Images" / f"{ident}.png")
        Image.fromarray(mask).save(root / "Masks" / f"mask_{k + 1:04d}-l.png")
        device = "Toshiba Aplio 300 @12-14 MHz" if k >= 6 else "GE Logiq 5 @10-12MHz"
        path = "malignant" if k % 2 else "benign"
        rows.append([ident, k + 1, "x", path, 4, device, 128, 64, "left", "[0,0,1,1]"])
        folds.append([ident, path, k % 5 + 1, 1, 1, 1, 1, 1])
    cols = ["ID", "Case", "Histology", "Pathology", "BIRADS", "Device", "Width", "Height", "Side", "BBOX"]
    pd.DataFrame(rows, columns=cols).to_csv(root / "bus_data.csv", index=False)
    fcols = ["ID", "Pathology", "kFold", "valid_1", "valid_2", "valid_3", "valid_4", "valid_5"]
    pd.DataFrame(folds, columns=fcols).to_csv(root / "5-fold-cv.csv", index=False)


@pytest.mark.slow
def test_leave_device_out_trains_without_the_scanner_and_scores_only_its_frames(tmp_path: Path) -> None:
    root = tmp_path / "bus"
    _fake_bus_bra(root)
    config = SegmenterTrainConfig(
        out=str(tmp_path / "run"),
        network=SegmenterConfig(encoder="resnet18", decoder_channels=(16, 16, 16, 16, 16), input_size=64),
        data=SegmenterDataConfig(bus_bra=str(root), simulated=0),
        heldout_devices=("toshiba",),
        final_fit=False,
        augmentation="domain",
        tta=True,
        batch_size=2,
        epochs=1,
        steps_per_epoch=2,
    )
    lines: list[str] = []
    result = train_segmenter(config, log=lines.append)
    held = result.heldout_devices
    assert held["n_frames"] == 4 and held["n_patients"] == 4
    assert list(held["per_device"]) == ["Toshiba Aplio 300 @12-14 MHz"]
    assert any("training on 6 frames, testing 4" in line for line in lines)
    scores = pd.read_csv(tmp_path / "run" / "heldout_devices" / "scores.csv")
    assert sorted(scores["case_id"]) == [f"bus_{k:04d}-l" for k in (7, 8, 9, 10)]
    assert "dice_tta" in held and 0.0 <= held["dice"]["mean"] <= 1.0
    assert held["no_lesion"]["n_negative_crops"] == 4  # each held-out frame has a lesion-free strip
    probs = sorted(p.name for p in (tmp_path / "run" / "heldout_devices" / "probs").glob("*.png"))
    assert probs == [f"bus_{k:04d}-l.png" for k in (7, 8, 9, 10)]
    assert not (tmp_path / "run" / "final").exists()  # final_fit: false trains nothing more
    saved = json.loads((tmp_path / "run" / "heldout_devices" / "summary.json").read_text())
    assert saved["dice"] == held["dice"]
    # a second call reads the finished run back instead of training again
    again = train_segmenter(config, log=lines.append)
    # scores.csv keeps ~16 significant digits, so the read-back mean may differ in the last bit
    assert again.heldout_devices["dice"] == pytest.approx(held["dice"], rel=1e-12)
    assert "done before" in lines[-2]
    with pytest.raises(Exception, match="none \\(devices: GE Logiq 5 @10-12MHz, Toshiba"):
        train_segmenter(
            SegmenterTrainConfig(**{**config.__dict__, "heldout_devices": ("philips",), "out": str(tmp_path / "r2")}),
            log=lines.append,
        )


def test_augmentation_names_are_checked_and_scanner_variant_keeps_basic_geometry() -> None:
    with pytest.raises(ValueError, match="augmentation must be one of basic, domain, scanner, got 'strong'"):
        SegmenterTrainConfig(augmentation="strong")
    from usher2.simulate.domain import basic_augmentation, scanner_randomisation

    basic = [type(t).__name__ for t in basic_augmentation().transforms]
    scanner = [type(t).__name__ for t in scanner_randomisation().transforms]
    assert scanner[: len(basic)] == basic and "RandomResizedCrop" not in scanner
