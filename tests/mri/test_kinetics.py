"""DCE kinetic features: exact values on analytic curves, and recovery of the phantoms' curve types."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from usher2.io.errors import InputError
from usher2.mri.kinetics import CURVE_TYPES, FEATURE_NAMES, PREFIX, classify_curve, kinetic_features
from usher2.mri.phantom import MRIPhantomConfig, simulate_mri_case, simulate_mri_labels

T = np.array([0.0, 60.0, 120.0, 240.0, 360.0])


def _f(curve, times=T, **kw) -> dict[str, float]:
    out = kinetic_features(np.asarray(curve, dtype=float), times, **kw)
    return {k.removeprefix(PREFIX): v for k, v in out.items()}


def test_washout_curve_exact() -> None:
    f = _f([100, 160, 200, 180, 160])
    assert f["wash_in_slope"] == 50.0  # 100 % in 2 min
    assert f["time_to_peak"] == 120.0
    assert f["peak_enhancement"] == 100.0
    assert f["washout_slope"] == pytest.approx(-10.0)  # 100 % -> 60 % over 4 min
    assert f["ser"] == pytest.approx(100 / 60)
    assert f["late_change"] == pytest.approx(-20.0)
    assert CURVE_TYPES[int(f["curve_type"])] == "washout"


def test_persistent_curve_exact() -> None:
    f = _f([100, 150, 180, 200, 220])
    assert f["wash_in_slope"] == pytest.approx(40.0)
    assert f["time_to_peak"] == 360.0
    assert f["peak_enhancement"] == pytest.approx(120.0)
    assert f["washout_slope"] == 0.0  # the peak is the last phase
    assert f["ser"] == pytest.approx(80 / 120)
    assert f["late_change"] == pytest.approx(100 * 40 / 180)
    assert CURVE_TYPES[int(f["curve_type"])] == "persistent"


def test_plateau_curve_exact() -> None:
    f = _f([100, 150, 200, 205, 195])
    assert f["wash_in_slope"] == pytest.approx(50.0)
    assert f["time_to_peak"] == 240.0
    assert f["washout_slope"] == pytest.approx(-5.0)  # 105 % -> 95 % over 2 min
    assert f["ser"] == pytest.approx(100 / 95)
    assert f["late_change"] == pytest.approx(-2.5)
    assert CURVE_TYPES[int(f["curve_type"])] == "plateau"


def test_early_window_and_times_offset() -> None:
    # Times need not start at 0; the early peak is the highest phase within 120 s of the baseline.
    f = _f([100, 180, 170, 150, 140], times=T + 30.0)
    assert f["wash_in_slope"] == pytest.approx(80.0)  # 80 % reached at 60 s
    assert f["late_change"] == pytest.approx(100 * (140 - 180) / 180)
    f = _f([100, 150, 180, 200, 220], early_time_s=60.0)
    assert f["wash_in_slope"] == pytest.approx(50.0)
    assert f["ser"] == pytest.approx(50 / 120)


def test_ten_percent_rule_boundaries() -> None:
    assert classify_curve(np.array([10.0, 10.01, -10.0, -10.01, 0.0])).tolist() == [1, 0, 1, 2, 1]
    assert classify_curve(15.0, threshold_pct=20.0).item() == 1


def test_voxel_fractions_and_4d_equals_curves() -> None:
    t = np.array([0.0, 60.0, 120.0, 300.0])
    persistent = [100, 150, 180, 220]
    plateau = [100, 150, 200, 200]
    washout = [100, 150, 200, 150]
    flat = [100, 102, 103, 103]  # under 10 % early enhancement: not enhancing
    curves = np.array([persistent, plateau, washout, washout, flat], dtype=float).T  # (T, 5)
    f = kinetic_features(curves, t)
    assert f[f"{PREFIX}enhancing_fraction"] == pytest.approx(4 / 5)
    assert f[f"{PREFIX}fraction_persistent"] == pytest.approx(1 / 4)
    assert f[f"{PREFIX}fraction_plateau"] == pytest.approx(1 / 4)
    assert f[f"{PREFIX}fraction_washout"] == pytest.approx(2 / 4)

    vol = np.full((4, 2, 3, 4), 50.0)
    mask = np.zeros((2, 3, 4), dtype=np.uint8)
    where = [(0, 0, 0), (0, 1, 2), (1, 2, 3), (1, 0, 1), (0, 2, 0)]
    for i, (z, y, x) in enumerate(where):
        vol[:, z, y, x] = curves[:, i]
        mask[z, y, x] = 1
    assert kinetic_features(vol, t, mask) == pytest.approx(f)
    assert list(f) == [PREFIX + n for n in FEATURE_NAMES]


def test_bad_input_raises() -> None:
    with pytest.raises(InputError, match="one time per DCE phase"):
        kinetic_features(np.ones((5, 3)), [0, 60, 120])
    with pytest.raises(InputError, match="strictly increasing"):
        kinetic_features(np.ones((3, 3)), [0, 120, 60])
    with pytest.raises(InputError, match="late phase after the early window"):
        kinetic_features(np.ones((3, 3)), [0, 60, 120])
    with pytest.raises(InputError, match="within early_time_s"):
        kinetic_features(np.ones((3, 3)), [0, 200, 400])
    with pytest.raises(InputError, match="shape"):
        kinetic_features(np.ones((4, 2, 3, 4)), [0, 60, 120, 300], np.ones((2, 3, 3)))
    with pytest.raises(InputError, match="empty mask"):
        kinetic_features(np.ones((4, 2, 3, 4)), [0, 60, 120, 300], np.zeros((2, 3, 4)))
    with pytest.raises(InputError, match="positive baseline"):
        kinetic_features(np.zeros((4, 3)), [0, 60, 120, 300])


def test_ser_undefined_warns() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = _f([100, 150, 130, 110, 90])
    assert np.isnan(f["ser"]) and any("SER is undefined" in str(w.message) for w in caught)


def test_phantom_curve_type_is_recovered() -> None:
    cfg = MRIPhantomConfig(shape_zyx=(16, 48, 48), spacing_zyx_mm=(4.0, 2.0, 2.0), sequences=("dce",))
    rows = simulate_mri_labels(40, seed=5, config=cfg)
    hits, washout_frac = [], {0: [], 2: []}
    for i, row in rows.iterrows():
        case = simulate_mri_case(np.random.default_rng(i), cfg, row=row.to_dict())
        f = kinetic_features(case.volumes["dce"], cfg.dce_times_s, case.mask)
        hits.append(f[f"{PREFIX}curve_type"] == row["trait_curve_type"])
        assert f[f"{PREFIX}late_change"] == pytest.approx(row["trait_late_change_pct"], abs=3.0)
        if row["trait_curve_type"] in washout_frac:
            washout_frac[int(row["trait_curve_type"])].append(f[f"{PREFIX}fraction_washout"])
    assert np.mean(hits) >= 0.95
    assert np.mean(washout_frac[2]) > 0.8 > 0.05 > np.mean(washout_frac[0])
