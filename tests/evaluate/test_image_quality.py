"""Image-quality metrics on hand-built arrays with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from skimage.metrics import peak_signal_noise_ratio

from usher2.evaluate.image_quality import cnr, contrast_db, enl, gcnr, psnr, region_ring, speckle_snr, ssim


def _halves(shape: tuple[int, int] = (64, 64)) -> tuple[np.ndarray, np.ndarray]:
    roi = np.zeros(shape, bool)
    roi[:, : shape[1] // 2] = True
    return roi, ~roi


def test_gcnr_of_disjoint_constants_is_one_and_of_one_region_with_itself_zero() -> None:
    roi, bg = _halves()
    img = np.where(roi, 0.2, 0.7)
    assert gcnr(img, roi, bg) == 1.0
    assert gcnr(img, roi, roi) == 0.0


def test_gcnr_of_identical_distributions_is_near_zero() -> None:
    # Two independent samples of one Rayleigh law: with 256 bins and 100,000 pixels each the
    # expected histogram discrepancy is about 0.03 (sum of |p1 - p2| / 2 over bins).
    rng = np.random.default_rng(0)
    img = rng.rayleigh(1.0, size=(400, 500))
    roi, bg = _halves((400, 500))
    assert gcnr(img, roi, bg) < 0.05


def test_gcnr_of_two_unit_gaussians_matches_the_closed_form() -> None:
    # N(0, 1) vs N(d, 1): the overlap is 2 Φ(-d/2), so gCNR = 1 - 2 Φ(-d/2) = 0.6827 for d = 2.
    rng = np.random.default_rng(1)
    roi, bg = _halves((500, 800))
    img = np.where(roi, rng.normal(0.0, 1.0, roi.shape), rng.normal(2.0, 1.0, roi.shape))
    assert gcnr(img, roi, bg, bins=200) == pytest.approx(1 - 2 * norm.cdf(-1.0), abs=0.01)


def test_cnr_exact_and_gaussian() -> None:
    img = np.array([[0.0, 2.0, 5.0, 7.0]])
    roi = np.array([[True, True, False, False]])
    assert cnr(img, roi, ~roi) == pytest.approx(5 / math.sqrt(2), rel=1e-12)
    rng = np.random.default_rng(2)
    roi, bg = _halves((400, 400))
    img = np.where(roi, rng.normal(1.0, 0.3, roi.shape), rng.normal(2.0, 0.4, roi.shape))
    assert cnr(img, roi, bg) == pytest.approx(1.0 / 0.5, rel=0.02)  # |1 - 2| / sqrt(0.09 + 0.16)


def test_contrast_db() -> None:
    roi, bg = _halves((8, 8))
    assert contrast_db(np.where(roi, 0.5, 0.05), roi, bg) == pytest.approx(20.0, abs=1e-12)
    assert contrast_db(np.where(roi, 0.25, 0.5), roi, bg) == pytest.approx(20 * math.log10(0.5), abs=1e-12)


def test_psnr_exact_masked_and_against_scikit_image() -> None:
    ref = np.zeros((16, 16))
    assert psnr(np.full((16, 16), 0.1), ref, data_range=1.0) == pytest.approx(20.0, abs=1e-12)
    x = np.zeros((16, 16))
    x[:8] = 0.1  # error only in the top half
    top = np.zeros((16, 16), bool)
    top[:8] = True
    assert psnr(x, ref, data_range=1.0, mask=top) == pytest.approx(20.0, abs=1e-12)
    assert psnr(x, ref, data_range=1.0, mask=~top) == math.inf
    assert psnr(x, ref, data_range=1.0) == pytest.approx(10 * math.log10(1 / 0.005), abs=1e-12)
    rng = np.random.default_rng(3)
    a, b = rng.random((32, 32)), rng.random((32, 32))
    assert psnr(a, b, data_range=1.0) == pytest.approx(peak_signal_noise_ratio(b, a, data_range=1.0), abs=1e-12)
    assert psnr(a * 255, b * 255, data_range=255.0) == pytest.approx(psnr(a, b, data_range=1.0), abs=1e-9)


def test_ssim_of_constant_images_has_the_closed_form() -> None:
    # Zero variances leave only the luminance term (2 μx μy + C1) / (μx² + μy² + C1), C1 = (0.01 R)².
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 0.5 * 0.25 + c1) / (0.5**2 + 0.25**2 + c1)
    got = ssim(np.full((32, 32), 0.5), np.full((32, 32), 0.25), data_range=1.0)
    assert got == pytest.approx(expected, abs=1e-9)


def test_ssim_identity_mask_and_degradation() -> None:
    rng = np.random.default_rng(4)
    ref = rng.random((48, 48))
    assert ssim(ref, ref, data_range=1.0) == pytest.approx(1.0, abs=1e-12)
    noisy = ref.copy()
    noisy[:24] = np.clip(noisy[:24] + rng.normal(0, 0.2, (24, 48)), 0, 1)
    bottom = np.zeros((48, 48), bool)
    bottom[34:] = True  # more than one window radius away from the noisy half
    assert ssim(noisy, ref, data_range=1.0, mask=bottom) == pytest.approx(1.0, abs=1e-12)
    top = np.zeros((48, 48), bool)
    top[:24] = True
    assert ssim(noisy, ref, data_range=1.0, mask=top) < 1.0


def test_speckle_snr_and_enl_of_known_laws() -> None:
    assert speckle_snr(np.array([[1.0, 3.0]]), np.ones((1, 2), bool)) == 2.0
    assert enl(np.array([[1.0, 3.0]]), np.ones((1, 2), bool)) == 4.0
    rng = np.random.default_rng(5)
    everything = np.ones((500, 500), bool)
    # Rayleigh amplitude: μ/σ = sqrt(π / (4 - π)) = 1.913; exponential intensity: ENL = 1.
    assert speckle_snr(rng.rayleigh(1.0, (500, 500)), everything) == pytest.approx(
        math.sqrt(math.pi / (4 - math.pi)), rel=0.01
    )
    assert enl(rng.exponential(1.0, (500, 500)), everything) == pytest.approx(1.0, rel=0.02)


def test_region_ring_excludes_the_gap() -> None:
    m = np.zeros((64, 64), bool)
    m[28:36, 28:36] = True
    ring = region_ring(m, gap=3, width=5)
    assert not (ring & m).any()
    from scipy.ndimage import distance_transform_edt

    d = distance_transform_edt(~m)
    assert d[ring].min() > 3 and d[ring].max() <= 8


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: psnr(np.zeros((4, 4)), np.zeros((4, 5)), data_range=1.0), "shapes differ: (4, 4) vs (4, 5)"),
        (lambda: psnr(np.full((4, 4), np.nan), np.zeros((4, 4)), data_range=1.0), "16 NaN/inf pixels"),
        (lambda: cnr(np.zeros((4, 4)), np.zeros((4, 4), bool), np.ones((4, 4), bool)), "roi has 0 pixels"),
        (lambda: gcnr(np.zeros((4, 4)), np.ones((3, 3), bool), np.ones((4, 4), bool)), "roi shape (3, 3)"),
        (lambda: speckle_snr(np.ones((4, 4)), np.ones((4, 4), bool)), "constant"),
        (lambda: ssim(np.zeros((8, 8)), np.zeros((8, 8)), data_range=1.0), "at least 11x11"),
        (lambda: region_ring(np.zeros((4, 4), bool)), "mask is empty"),
    ],
)
def test_bad_input_is_named(call, needle: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        call()
    assert needle in str(info.value)
