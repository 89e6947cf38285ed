"""Domain randomisation (usher2.simulate.domain): seeded, type-keeping transforms with hand-checked effects."""

from __future__ import annotations

import numpy as np

from usher2.simulate.domain import (
    AcousticShadow,
    BurnedInAnnotations,
    DynamicRange,
    ScanArea,
    TGCRamp,
    domain_randomisation,
    reseed,
)


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
