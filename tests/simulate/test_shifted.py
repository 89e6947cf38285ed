"""The shifted evaluation set (usher2.simulate.shifted): outside the training family, truth in dB, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from usher2.simulate.config import degraded_settings
from usher2.simulate.randomise import COMPOUNDING_CHOICES, TRAINING_RANGES
from usher2.simulate.shifted import (
    SHIFTED_SEED,
    SHIFTED_SETTINGS,
    below_skin,
    echogenicity_db,
    evaluation_set,
    shifted_configs,
)

# The issue requires these to lie outside the training family; the other fields are shifted too.
MUST_BE_OUTSIDE = ("f0_mhz", "lateral_fwhm_mm", "noise_db", "dynamic_range_db")
ALSO_OUTSIDE = ("bandwidth", "depth_of_field_mm")


@pytest.mark.parametrize("name", sorted(SHIFTED_SETTINGS))
def test_shifted_settings_lie_outside_the_training_ranges_and_the_fixed_degraded_setting(name: str) -> None:
    s = SHIFTED_SETTINGS[name]
    deg = degraded_settings()
    for field in (*MUST_BE_OUTSIDE, *ALSO_OUTSIDE):
        lo, hi = TRAINING_RANGES[field]
        value = getattr(s, field)
        assert not lo <= value <= hi, f"{name}.{field} = {value} lies inside the training range [{lo}, {hi}]"
        assert value != getattr(deg, field)
        # The fixed degraded setting is inside the training ranges, so "outside" covers it as well.
        assert lo <= getattr(deg, field) <= hi
    assert s.compound_angles_deg == (0.0,) and s.compound_angles_deg in COMPOUNDING_CHOICES  # compounding off
    # Plane-wave-like: the beam widens by less than 1% over the 40 mm frame (no focal zone).
    assert np.sqrt(1 + (40.0 / s.depth_of_field_mm) ** 2) < 1.01


def test_truth_in_db_and_the_region_below_the_skin() -> None:
    assert echogenicity_db(np.array([10.0, 1.0, 1e-6])).tolist() == [20.0, 0.0, -60.0]
    r = np.zeros((8, 3), np.float32)
    r[2:, 0], r[3:, 1], r[1:, 2] = 1.0, 0.5, 2.0  # skin at rows 2, 3 and 1
    got = below_skin(r, spacing_mm=0.5, margin_mm=1.0)  # skip 2 rows under the skin
    assert got.argmax(axis=0).tolist() == [4, 5, 3] and got[-1].all()


def test_two_frame_shifted_set_is_reproducible_under_its_seed(tmp_path) -> None:
    configs = shifted_configs(128)
    first = evaluation_set(2, SHIFTED_SEED, configs, cache=tmp_path, name="shifted")
    again = evaluation_set(2, SHIFTED_SEED, configs)  # rendered afresh, not read back
    cached = evaluation_set(2, SHIFTED_SEED, configs, cache=tmp_path, name="shifted")  # read back
    assert len(list(tmp_path.glob("shifted-seed2300-*/frame_*.npz"))) == 2
    assert [f.setting for f in first] == [0, 1]  # one frame per shifted scanner
    for a, b, c in zip(first, again, cached, strict=True):
        assert a.case_id == b.case_id == c.case_id and a.mask.any()
        for key in ("image", "clean", "mask"):  # integers and masks: exact
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
            np.testing.assert_array_equal(getattr(a, key), getattr(c, key))
        np.testing.assert_array_equal(a.reflectivity, c.reflectivity)  # the cache stores the exact floats
        # A fresh render of the float truth may differ in the last bits across CPUs and library
        # builds (OpenCV resize/blur and exp take SIMD paths), so compare it to float32 precision.
        np.testing.assert_allclose(a.reflectivity, b.reflectivity, rtol=1e-6, atol=1e-7)
        assert np.isfinite(a.truth_db).all() and a.below_skin.mean() > 0.8
    other = evaluation_set(1, SHIFTED_SEED + 1, configs)
    assert not np.array_equal(other[0].image, first[0].image)
