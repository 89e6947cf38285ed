"""Issue 23 (enhancer part): the shifted evaluation set, its metrics and the tuned classical baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from usher2.enhance import create_enhancer
from usher2.enhance.classical import TUNED_CLASSICAL_FILE, tuned_classical_params
from usher2.evaluate.image_quality import fidelity_r, gcnr, homogeneous_patch, lesion_gcnr, speckle_snr
from usher2.io.errors import InputError


def _disk(shape: tuple[int, int] = (96, 96), radius: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    from scipy.ndimage import distance_transform_edt

    yy, xx = np.mgrid[: shape[0], : shape[1]]
    m = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 <= radius**2
    return m, distance_transform_edt(~m)


def test_lesion_gcnr_uses_exactly_the_ring_8_to_20_px_outside() -> None:
    m, d = _disk()
    # Lesion, the 8 px gap and everything beyond 20 px share one value; only the ring differs.
    img = np.where((d > 8) & (d <= 20), 0.7, 0.2)
    assert lesion_gcnr(img, m) == 1.0
    assert lesion_gcnr(img, m, ring=(0, 8)) == 0.0  # the gap alone looks like the lesion
    assert lesion_gcnr(np.full(m.shape, 0.4), m) == 0.0  # identical histograms
    # Half the lesion pixels share the ring's bin, the rest are disjoint from it: overlap 1/2.
    half = np.where(m & (np.arange(96)[None, :] < 48), 0.7, img)
    frac = (half[m] == 0.7).mean()
    assert lesion_gcnr(half, m) == pytest.approx(1.0 - frac, abs=1e-12)
    # "Gel" above row 40 looks like the lesion; cut to the tissue below it, the ring is clean again.
    ring = (d > 8) & (d <= 20)
    gel = img.copy()
    gel[:40] = 0.2
    tissue = np.zeros(m.shape, bool)
    tissue[40:] = True
    assert lesion_gcnr(gel, m) == pytest.approx(1.0 - (ring[:40].sum() / ring.sum()), abs=1e-12)
    assert lesion_gcnr(gel, m, within=tissue) == 1.0
    with pytest.raises(ValueError, match="background has 0 pixels"):
        lesion_gcnr(img, m, within=np.zeros(m.shape, bool))


def test_gcnr_fixed_bins_differ_from_joint_range_bins_and_refuse_values_outside() -> None:
    roi = np.zeros((4, 4), bool)
    roi[:2] = True
    img = np.where(roi, 0.001, 0.002)  # the same 1/256-wide bin of [0, 1]
    assert gcnr(img, roi, ~roi) == 1.0  # joint-range bins separate them
    assert gcnr(img, roi, ~roi, value_range=(0.0, 1.0)) == 0.0
    with pytest.raises(ValueError, match=r"outside value_range \(0, 1\)"):
        gcnr(img * 1000, roi, ~roi, value_range=(0.0, 1.0))


def test_fidelity_r_known_cases() -> None:
    t = np.array([[1.0, 2.0, 3.0, 4.0]])
    assert fidelity_r(3 * t - 2, t) == pytest.approx(1.0, abs=1e-12)  # affine: r = 1
    assert fidelity_r(-t, t) == pytest.approx(-1.0, abs=1e-12)
    # Deviations (-1.5, .5, -.5, 1.5) vs (-1.5, -.5, .5, 1.5): r = 4 / 5.
    assert fidelity_r(np.array([[1.0, 3.0, 2.0, 4.0]]), t) == pytest.approx(0.8, abs=1e-12)
    # Only the region below the skin is scored: garbage above it does not count.
    truth = np.tile(np.arange(10.0)[:, None], (1, 6))
    out = 0.1 * truth + 0.05
    out[:3] = np.random.default_rng(0).random((3, 6))
    skin = np.zeros(truth.shape, bool)
    skin[3:] = True
    assert fidelity_r(out, truth, below_skin=skin) == pytest.approx(1.0, abs=1e-12)
    assert fidelity_r(out, truth) < 0.99
    with pytest.raises(ValueError, match="constant"):
        fidelity_r(np.ones((3, 3)), np.arange(9.0).reshape(3, 3))


def test_homogeneous_patch_avoids_structure_and_the_lesion() -> None:
    rng = np.random.default_rng(1)
    img = rng.rayleigh(0.15, (96, 96)).clip(0, 1)
    img[:, :40] *= np.linspace(0.3, 1.0, 40)  # a ramp: speckle, but not homogeneous
    lesion = np.zeros(img.shape, bool)
    lesion[40:56, 60:76] = True
    img[lesion] *= 0.2
    patch = homogeneous_patch(img, exclude=lesion, margin=10, size=15)
    from scipy.ndimage import distance_transform_edt

    assert patch.sum() == 15 * 15
    assert not patch[:, :40].any() and distance_transform_edt(~lesion)[patch].min() > 10
    # Rayleigh speckle: μ/σ = 1.91 in the patch, up to the sampling error of 225 pixels.
    assert speckle_snr(img, patch) == pytest.approx(1.913, rel=0.2)


def test_tuned_json_loads_and_each_winner_is_in_its_grid_and_best_on_the_objective() -> None:
    params = tuned_classical_params()
    assert set(params) == {"median", "bilateral", "nlm", "srad", "lee"}
    doc = json.loads(TUNED_CLASSICAL_FILE.read_text(encoding="utf-8"))
    assert doc["tuning_set"]["cohort_seed"] == 1000 and "fidelity_r" in doc["objective"]
    assert doc["command"].startswith("python bench/tune_classical.py")
    for name, kwargs in params.items():
        grid = doc["grid"][name]
        assert set(kwargs) == set(grid)
        assert all(kwargs[k] in grid[k] for k in kwargs), f"{name}: {kwargs} outside its grid {grid}"
        rows = doc["scores"][name]
        assert len(rows) == int(np.prod([len(v) for v in grid.values()]))  # the whole grid was scored
        best = max(rows, key=lambda row: (row["fidelity_r"], row["gcnr"]))
        assert best["params"] == kwargs
        create_enhancer(name, **kwargs)  # valid constructor arguments


def test_tuned_loader_names_a_bad_file(tmp_path) -> None:
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"format": "usher2-tuned-classical/1", "tuned": {"pix2pix": {}}}))
    with pytest.raises(InputError, match="classical filters"):
        tuned_classical_params(bad)
    with pytest.raises(InputError, match="no such file"):
        tuned_classical_params(tmp_path / "missing.json")
