"""Domain randomisation, randomised scanner settings, input normalisation and leave-device-out validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from usher2.segment.networks import SegmenterConfig, normalise_frames
from usher2.segment.training import SegmenterDataConfig, SegmenterTrainConfig, train_segmenter
from usher2.simulate.domain import (
    AcousticShadow,
    BurnedInAnnotations,
    DynamicRange,
    ScanArea,
    TGCRamp,
    domain_randomisation,
    reseed,
)
from usher2.simulate.randomise import COMPOUNDING_CHOICES, TRAINING_RANGES, randomised_configs


def _frame(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    img = rng.integers(40, 200, (size, size), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[30:60, 20:70] = 1
    return img, mask


def test_domain_randomisation_is_reproducible_under_a_seed_and_keeps_types() -> None:
    img, mask = _frame()
    aug = domain_randomisation(96)
    outs = []
    for seed in (5, 5, 6):
        reseed(aug, seed)
        outs.append(aug(image=img, mask=mask))
    assert np.array_equal(outs[0]["image"], outs[1]["image"]) and np.array_equal(outs[0]["mask"], outs[1]["mask"])
    assert not np.array_equal(outs[0]["image"], outs[2]["image"])
    for o in outs:
        assert o["image"].shape == (96, 96) and o["image"].dtype == np.uint8
        assert set(np.unique(o["mask"])) <= {0, 1}


def test_dynamic_range_rescales_contrast_about_the_mean() -> None:
    img, _ = _frame()
    t = DynamicRange(assumed_db=50.0, p=1.0)
    out = t.apply(img, new_db=100.0).astype(np.float64)
    x = img.astype(np.float64)
    expect = x.mean() + (x - x.mean()) * 0.5  # 50 dB shown over 100 dB: half the contrast
    assert np.abs(out - expect).max() <= 0.5 + 1e-4  # rounding to uint8 only (float32 arithmetic, ~1e-5 of 255)


def test_tgc_ramp_adds_the_interpolated_gain_per_row() -> None:
    img = np.full((50, 10), 128, np.uint8)
    gains = np.array([-5.0, 5.0])
    out = TGCRamp(knots=2, display_db=50.0, p=1.0).apply(img, gains=gains)
    expect = 128 + 255 * np.linspace(-5, 5, 50) / 50  # linear from -25.5 to +25.5 grey levels
    assert np.abs(out[:, 0] - expect).max() <= 0.5 + 1e-4  # rounding to uint8 only
    assert (out == out[:, :1]).all()  # the same gain across each row


def test_scan_area_clears_the_mask_where_it_blanks_the_image() -> None:
    img, mask = _frame()
    img = np.maximum(img, 1)  # no black pixel inside the area
    t = ScanArea(max_inset=0.6, p=1.0)
    t.set_random_seed(3)
    params = t.get_params_dependent_on_data({"shape": img.shape}, {})
    out_img, out_mask = t.apply(img, **params), t.apply_to_mask(mask, **params)
    outside = out_img == 0
    assert outside.any() and not out_mask[outside].any()
    assert np.array_equal(out_mask[~outside], mask[~outside])


def test_annotations_and_shadows_change_only_the_image() -> None:
    img, _ = _frame()
    aug = BurnedInAnnotations(max_calipers=4, max_texts=3, p=1.0)
    aug.set_random_seed(0)
    params = aug.get_params_dependent_on_data({"shape": img.shape}, {})
    drawn = aug.apply(img, **params)
    changed = drawn != img
    level = params["level"]
    assert changed.any() and 180 <= level <= 255
    # every changed pixel moved towards the marks' grey level (anti-aliased edges blend with the frame)
    d_new = np.abs(drawn[changed].astype(int) - level)
    d_old = np.abs(img[changed].astype(int) - level)
    assert (d_new < d_old).all()
    shadow = AcousticShadow(p=1.0).apply(img, centre=0.5, width=0.2, start=0.5, keep=0.5)
    assert np.array_equal(shadow[:40], img[:40])  # above the start depth (row 47.5 of 96) nothing changes
    assert (shadow[60:, 48] <= img[60:, 48]).all() and shadow[60:, 48].sum() < 0.6 * img[60:, 48].sum()


def test_randomised_settings_stay_in_their_ranges_and_are_seeded() -> None:
    a, b = randomised_configs(12, 3), randomised_configs(12, 3)
    assert [c.degraded for c in a] == [c.degraded for c in b]
    assert [c.degraded for c in a] != [c.degraded for c in randomised_configs(12, 4)]
    for c in a:
        for name, (lo, hi) in TRAINING_RANGES.items():
            assert lo <= getattr(c.degraded, name) <= hi, name
        assert c.degraded.compound_angles_deg in COMPOUNDING_CHOICES
    assert len({c.degraded.f0_mhz for c in a}) == 12


def test_percentile_normalisation_maps_the_1st_and_99th_percentiles_to_0_and_1() -> None:
    x = np.random.default_rng(0).uniform(0.1, 0.5, (3, 40, 50)).astype(np.float32)
    y = normalise_frames(x, "percentile")
    for k in range(3):
        lo, hi = np.percentile(y[k], [1.0, 99.0])
        assert abs(lo) < 1e-5 and abs(hi - 1.0) < 1e-5  # float32 arithmetic on values of order 1
    assert normalise_frames(x, "none") is x
    with pytest.raises(ValueError, match="normalise must be one of none, percentile, got 'zscore'"):
        SegmenterConfig(normalise="zscore")


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
