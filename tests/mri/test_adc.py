"""ADC from DWI: the mono-exponential fit recovers a known ADC exactly, and within the noise-derived
tolerance under Rician noise."""

from __future__ import annotations

import numpy as np
import pytest

from usher2.io.errors import InputError
from usher2.mri.adc import adc_map

B_VALUES = (0.0, 500.0, 1000.0)


def _signal(s0: np.ndarray, adc: np.ndarray, bs=B_VALUES) -> dict[float, np.ndarray]:
    return {b: s0 * np.exp(-b * adc) for b in bs}


@pytest.mark.parametrize("weighted", [False, True])
def test_noise_free_signal_gives_the_adc_exactly(weighted: bool) -> None:
    rng = np.random.default_rng(0)
    true_adc = rng.uniform(0.3e-3, 3.0e-3, size=(4, 5, 6))
    true_s0 = rng.uniform(200.0, 2000.0, size=(4, 5, 6))
    adc, s0 = adc_map(_signal(true_s0, true_adc), weighted=weighted)
    assert adc.shape == (4, 5, 6)
    np.testing.assert_allclose(adc, true_adc, rtol=0, atol=1e-9)
    np.testing.assert_allclose(s0, true_s0, rtol=1e-9)


def test_two_points_give_the_textbook_formula() -> None:
    s1, s2 = np.array([900.0]), np.array([300.0])
    adc, _ = adc_map({50.0: s1, 800.0: s2})
    assert adc[0] == pytest.approx(np.log(3.0) / 750.0, abs=1e-15)


def _rician(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.hypot(clean + rng.normal(0, sigma, clean.shape), rng.normal(0, sigma, clean.shape))


def test_rician_noise_stays_within_the_propagated_tolerance() -> None:
    """S0 = 1000, ADC = 1e-3 mm²/s, σ = 10 (SNR 100 at b = 0, 37 at b = 1000).

    Error propagation for OLS on ln S: var(ln S_i) ≈ σ²/S_i², so
    sd(ADC) = sqrt(Σ (b_i − b̄)² σ²/S_i²) / Σ (b_i − b̄)² ≈ 2.9e-5 mm²/s per voxel. The Rician bias
    of ln S is about σ²/(2 S²) (≤ 3.7e-4 at b = 1000), which shifts ADC by < 4e-7. On 20 000 voxels the
    mean must lie within bias + 5 standard errors of the truth, and the spread within 10% of sd."""
    rng = np.random.default_rng(42)
    n, s0, true_adc, sigma = 20_000, 1000.0, 1.0e-3, 10.0
    bs = np.array(B_VALUES)
    clean = s0 * np.exp(-bs * true_adc)
    dwi = {b: _rician(np.full(n, c), sigma, rng) for b, c in zip(bs, clean, strict=True)}
    adc, _ = adc_map(dwi)
    dev = bs - bs.mean()
    sd = np.sqrt(np.sum(dev**2 * sigma**2 / clean**2)) / np.sum(dev**2)
    bias = np.sum(dev * sigma**2 / (2 * clean**2)) / np.sum(dev**2)  # E[ln S] − ln S, through the slope
    assert sd == pytest.approx(2.9e-5, rel=0.02)
    assert abs(adc.mean() - true_adc) < abs(bias) + 5 * sd / np.sqrt(n)
    assert adc.std() == pytest.approx(sd, rel=0.10)
    weighted, _ = adc_map(dwi, weighted=True)
    assert abs(weighted.mean() - true_adc) < abs(bias) + 5 * sd / np.sqrt(n)
    assert weighted.std() < adc.std()  # weights S² down-weight the noisy b = 1000 point


def test_mask_zeroes_outside_and_non_positive_signal_is_clamped() -> None:
    s = _signal(np.full((2, 2), 1000.0), np.full((2, 2), 1e-3))
    s[1000.0][0, 0] = 0.0
    s[500.0][0, 0] = -5.0
    mask = np.array([[True, True], [False, True]])
    adc, s0 = adc_map(s, mask, floor=1.0)
    assert np.all(np.isfinite(adc))
    assert adc[1, 0] == 0.0 and s0[1, 0] == 0.0
    assert adc[0, 1] == pytest.approx(1e-3, abs=1e-12)
    # ln S = (ln 1000, 0, 0) at b = (0, 500, 1000): OLS slope −500·ln 1000 / 5e5, finite, not NaN
    assert adc[0, 0] == pytest.approx(np.log(1000.0) / 1000.0, rel=1e-12)


@pytest.mark.parametrize(
    ("dwi", "mask", "match"),
    [
        ({0.0: np.ones(3)}, None, "two or more distinct b-values"),
        ({0.0: np.ones(3), 1000.0: np.ones(4)}, None, "arrays of one shape"),
        ({0.0: np.array([1.0, np.nan]), 1000.0: np.ones(2)}, None, "1 NaN or infinite"),
        ({-1.0: np.ones(2), 1000.0: np.ones(2)}, None, "non-negative b-values"),
        ({0.0: np.ones(2), 1000.0: np.ones(2)}, np.ones(3), "mask"),
    ],
)
def test_bad_input_is_a_clear_error(dwi, mask, match: str) -> None:
    with pytest.raises(InputError, match=match):
        adc_map(dwi, mask)
