"""BI-RADS lexicon descriptors: each checked on a drawing whose value is known, then against the
simulator's lesion traits."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from usher2.features.lexicon import LEXICON_COLUMNS, PREFIX, lexicon_features
from usher2.io.errors import InputError

H = W = 256


def _ellipse(a: float, b: float, theta_deg: float, centre=(128.0, 128.0), shape=(H, W)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]] + 0.5
    t = math.radians(theta_deg)
    x, y = xx - centre[1], yy - centre[0]
    u = x * math.cos(t) + y * math.sin(t)
    v = -x * math.sin(t) + y * math.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 < 1


def _polar_mask(limit, a: float = 40.0, b: float = 30.0) -> np.ndarray:
    """A lesion whose boundary radius (in ellipse-normalised coordinates) is ``limit(phi)``."""
    yy, xx = np.mgrid[:H, :W] + 0.5
    u, v = (xx - 128) / a, (yy - 128) / b
    return np.hypot(u, v) < limit(np.arctan2(v, u))


def f(img, mask, spacing=0.1):
    return {k[len(PREFIX) :]: v for k, v in lexicon_features(img, mask, spacing).items()}


FLAT = np.full((H, W), 100.0, np.float32)


@pytest.mark.parametrize("theta", [0.0, 30.0, -45.0, 90.0])
def test_orientation_and_axis_ratio_of_a_rotated_ellipse(theta):
    out = f(FLAT, _ellipse(50, 25, theta))
    assert out["orientation_sin"] == pytest.approx(abs(math.sin(math.radians(theta))), abs=0.01)
    assert out["axis_ratio"] == pytest.approx(0.5, abs=0.01)
    assert out["orientation_sin_elongated"] == pytest.approx(out["orientation_sin"] * 0.5, abs=0.01)


def test_a_plain_ellipse_has_no_lobulation_or_spicules():
    out = f(FLAT, _ellipse(50, 30, 20))
    assert out["margin_lobulation"] < 0.01
    assert out["margin_spicule_count"] == 0
    assert out["margin_solidity"] > 0.98


@pytest.mark.parametrize("amp", [0.05, 0.10, 0.15])
def test_lobulation_is_the_amplitude_of_the_low_harmonics(amp):
    out = f(FLAT, _polar_mask(lambda phi: 1 + amp * np.cos(5 * phi)))
    assert out["margin_lobulation"] == pytest.approx(amp, rel=0.2)
    assert out["margin_spicule_count"] == 0


@pytest.mark.parametrize("k", [3, 6])
def test_spicules_are_counted(k):
    angles = np.linspace(-np.pi, np.pi, k, endpoint=False) + 0.2

    def limit(phi):
        out = np.ones_like(phi)
        for ang in angles:
            d = np.abs(np.mod(phi - ang + np.pi, 2 * np.pi) - np.pi)
            out += 0.5 * np.clip(1 - d / 0.06, 0, None) ** 2
        return out

    out = f(FLAT, _polar_mask(limit))
    assert out["margin_spicule_count"] == k
    assert out["margin_spicule_max"] == pytest.approx(0.5, abs=0.15)
    assert out["margin_lobulation"] < 0.05  # the opening removes the spicules before the harmonics


@pytest.mark.parametrize("gain", [-30.0, 25.0])
def test_posterior_contrast_is_the_step_below_the_lesion(gain):
    m = _ellipse(30, 20, 0, centre=(80.0, 128.0))
    img = FLAT.copy()
    bottom = int(np.nonzero(m)[0].max())
    img[bottom + 1 :, 98:158] += gain  # straight below the lesion, as wide as it
    out = f(img, m)
    for key in ("posterior_contrast", "posterior_contrast_near", "posterior_contrast_far"):
        assert out[key] == pytest.approx(gain, abs=1e-3)


def test_halo_bands_measure_a_bright_rim():
    m = _ellipse(30, 20, 0)
    dist = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 5) * 0.1  # mm at 0.1 mm/px
    img = FLAT + 40.0 * ((dist > 0) & (dist <= 0.5))
    out = f(img, m)
    assert out["halo_0"] == pytest.approx(40.0, abs=1.0)
    assert out["halo_2"] == pytest.approx(0.0, abs=1e-3)
    assert out["echo_vs_surround"] == pytest.approx(0.0, abs=1e-3)


def test_calcifications_are_counted():
    m = _ellipse(60, 40, 0)
    img = FLAT.copy()
    spots = [(100, 90), (110, 140), (140, 120), (150, 160), (125, 100)]
    for r, c in spots:
        img[r, c - 1 : c + 2] = 255.0  # a point echo: a short lateral streak
    out = f(img, m)
    assert out["calcification_count"] == len(spots)
    assert out["calcification_log_count"] == pytest.approx(math.log1p(len(spots)))
    assert f(FLAT, m)["calcification_count"] == 0


def test_columns_units_and_scale():
    m = _ellipse(30, 20, 10)
    out = lexicon_features(FLAT / 255.0, m, (0.1, 0.1))
    assert tuple(out) == LEXICON_COLUMNS
    assert out == lexicon_features(FLAT, m, 0.1)  # 0-1 frames are read as 0-255
    assert np.isfinite(list(lexicon_features(FLAT, m, None).values())).all()


def test_a_column_subset_computes_the_full_calls_values(simulated_frames):
    """Asked for some columns, each value is the full call's, bit for bit (the same code runs on
    the same arrays; only the groups no asked column needs are skipped): every single column and
    random subsets, with and without the pixel spacing."""
    rng = np.random.default_rng(5)
    subsets = [[c] for c in LEXICON_COLUMNS] + [
        list(rng.choice(LEXICON_COLUMNS, size=k, replace=False)) for k in (2, 3, 5, 8, 13)
    ]
    for img, mask, spacing in simulated_frames:
        for sp in (spacing, None):
            full = lexicon_features(img, mask, sp)
            for cols in subsets:
                part = lexicon_features(img, mask, sp, columns=cols)
                assert tuple(part) == tuple(c for c in LEXICON_COLUMNS if c in cols)
                np.testing.assert_array_equal(list(part.values()), [full[c] for c in part])


def test_bad_input_names_the_problem():
    with pytest.raises(InputError, match="radiomics_lexicon_nope"):
        lexicon_features(FLAT, _ellipse(30, 20, 10), columns=["radiomics_lexicon_nope"])
    with pytest.raises(InputError, match="empty mask"):
        lexicon_features(FLAT, np.zeros((H, W), bool))
    with pytest.raises(InputError, match="same shape"):
        lexicon_features(FLAT, np.ones((10, 10), bool))


@pytest.fixture(scope="module")
def simulated_cohort(tmp_path_factory) -> tuple:
    from usher2.simulate import simulate_cohort

    root = tmp_path_factory.mktemp("lexsim")
    man = simulate_cohort(60, 11, root, workers=1)
    frames = []
    for r in man.to_dict("records"):
        img = cv2.imread(str(root / r["image"]), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        mask = cv2.imread(str(root / r["mask"]), cv2.IMREAD_GRAYSCALE) > 0
        frames.append((img, mask, r["spacing_mm"]))
    return man, frames


@pytest.fixture(scope="module")
def simulated_frames(simulated_cohort) -> list:
    """(frame, mask, spacing) of 12 of the simulated lesions."""
    return simulated_cohort[1][:12]


@pytest.fixture(scope="module")
def simulated(simulated_cohort) -> pd.DataFrame:
    man, frames = simulated_cohort
    rows = [lexicon_features(*fr) for fr in frames]
    return man.join(pd.DataFrame(rows, index=man.index))


@pytest.mark.parametrize(
    ("trait", "column", "transform", "min_rho"),
    [
        ("trait_orientation_deg", "orientation_sin", lambda x: np.abs(np.sin(np.radians(x))), 0.9),
        ("trait_lobulation", "margin_lobulation", None, 0.9),
        ("trait_spiculation", "margin_undulation_high", None, 0.9),
        ("trait_posterior", "posterior_contrast", None, 0.9),
        ("trait_halo_mm", "halo_0", None, 0.7),
        ("trait_calcifications", "calcification_count", None, 0.85),
    ],
)
def test_descriptors_follow_the_simulated_traits(simulated, trait, column, transform, min_rho):
    """On 60 simulated lesions each descriptor ranks the lesions as its trait does (Spearman rho;
    on 600 lesions the bench measured 0.97, 0.97, 0.98, 0.98, 0.85 and 0.95)."""
    truth = simulated[trait] if transform is None else transform(simulated[trait])
    rho = stats.spearmanr(truth, simulated[PREFIX + column], nan_policy="omit").statistic
    assert rho > min_rho
