r"""Image-quality metrics for enhancement, each restricted to region masks.

Every metric takes ``(H, W)`` arrays (or any matching shape) and boolean region masks of the
same shape. Definitions (μ and σ are the mean and the population standard deviation of the
pixels inside a region):

=============  ==================================================================================
metric         definition
=============  ==================================================================================
PSNR           :math:`10\log_{10}(R^2 / \mathrm{MSE})`, ``R`` the explicit data range, MSE over
               the region (scikit-image when no region is given).
SSIM           Wang et al. 2004: Gaussian window σ = 1.5 (11 × 11), K1 = 0.01, K2 = 0.03,
               population covariance, explicit data range (scikit-image); the SSIM map is
               averaged over the region.
contrast (dB)  :math:`20\log_{10}(\mu_\mathrm{roi} / \mu_\mathrm{bg})` (amplitude ratio).
CNR            :math:`|\mu_\mathrm{roi} - \mu_\mathrm{bg}| / \sqrt{\sigma^2_\mathrm{roi} +
               \sigma^2_\mathrm{bg}}`.
gCNR           Rodriguez-Molares et al. 2020: :math:`1 - \sum_k \min(p_\mathrm{roi}(k),
               p_\mathrm{bg}(k))`, the two normalised histograms on shared bins spanning both
               regions' values. 1 means fully separable, 0 identical distributions.
speckle SNR    :math:`\mu / \sigma` in a region (1.91 for a fully developed speckle envelope).
ENL            :math:`\mu^2 / \sigma^2` in a region (equivalent number of looks).
=============  ==================================================================================

Example:
    >>> import numpy as np
    >>> img = np.zeros((8, 8)); img[:, 4:] = 1.0
    >>> roi = np.zeros((8, 8), bool); roi[:, 4:] = True
    >>> gcnr(img, roi, ~roi)
    1.0
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = ["cnr", "contrast_db", "enl", "gcnr", "psnr", "region_ring", "speckle_snr", "ssim"]


def _as_float(name: str, a: object) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim < 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has {int((~np.isfinite(arr)).sum())} NaN/inf pixels; expected finite values")
    return arr


def _region(name: str, mask: object, shape: tuple[int, ...], *, min_pixels: int = 1) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"{name} shape {m.shape} differs from the image shape {shape}")
    m = m.astype(bool)
    n = int(m.sum())
    if n < min_pixels:
        raise ValueError(f"{name} has {n} pixels; expected at least {min_pixels}")
    return m


def _pixels(img: object, mask: object, name: str, *, min_pixels: int = 2) -> np.ndarray:
    a = _as_float("image", img)
    return a[_region(name, mask, a.shape, min_pixels=min_pixels)]


def _std(values: np.ndarray, name: str) -> float:
    s = float(values.std())
    if s == 0.0:
        raise ValueError(f"{name} is constant (σ = 0); the metric is undefined")
    return s


def psnr(x: object, ref: object, *, data_range: float, mask: object | None = None) -> float:
    """Peak signal-to-noise ratio in dB of ``x`` against ``ref``.

    Args:
        x: The image under test.
        ref: The reference (clean) image, same shape.
        data_range: ``R`` in the formula: 1.0 for [0, 1] images, 255 for 8-bit.
        mask: Optional region; the MSE is taken over it only.

    Returns:
        PSNR in dB; ``inf`` when the images are equal in the region.

    Example:
        >>> import numpy as np
        >>> round(psnr(np.full((4, 4), 0.1), np.zeros((4, 4)), data_range=1.0), 6)
        20.0
    """
    a, b = _as_float("x", x), _as_float("ref", ref)
    if a.shape != b.shape:
        raise ValueError(f"x and ref shapes differ: {a.shape} vs {b.shape}")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    if mask is None:
        if np.array_equal(a, b):
            return float("inf")
        return float(peak_signal_noise_ratio(b, a, data_range=data_range))
    m = _region("mask", mask, a.shape)
    mse = float(np.mean((a[m] - b[m]) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def ssim(x: object, ref: object, *, data_range: float, mask: object | None = None) -> float:
    """Structural similarity (Wang et al. 2004 settings), optionally averaged over a region.

    Args:
        x: ``(H, W)`` image under test.
        ref: ``(H, W)`` reference image.
        data_range: Explicit data range (1.0 for [0, 1] images).
        mask: Optional ``(H, W)`` region over which the SSIM map is averaged.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0); a = rng.random((32, 32))
        >>> ssim(a, a, data_range=1.0)
        1.0
    """
    a, b = _as_float("x", x), _as_float("ref", ref)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"x and ref must be two (H, W) arrays of one shape, got {a.shape} and {b.shape}")
    if min(a.shape) < 11:
        raise ValueError(f"SSIM's 11x11 Gaussian window needs images of at least 11x11 pixels, got {a.shape}")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    kw = dict(data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    if mask is None:
        return float(structural_similarity(b, a, **kw))
    m = _region("mask", mask, a.shape)
    _, smap = structural_similarity(b, a, full=True, **kw)
    return float(smap[m].mean())


def contrast_db(img: object, roi: object, background: object) -> float:
    """Contrast ``20 log10(μ_roi / μ_bg)`` in dB (negative for a hypoechoic lesion).

    Example:
        >>> import numpy as np
        >>> img = np.full((4, 4), 0.05); img[:2] = 0.5
        >>> roi = np.zeros((4, 4), bool); roi[:2] = True
        >>> round(contrast_db(img, roi, ~roi), 6)
        20.0
    """
    r = _pixels(img, roi, "roi", min_pixels=1)
    g = _pixels(img, background, "background", min_pixels=1)
    mr, mg = float(r.mean()), float(g.mean())
    if mr <= 0 or mg <= 0:
        raise ValueError(f"contrast in dB needs positive region means, got roi {mr:g} and background {mg:g}")
    return float(20.0 * np.log10(mr / mg))


def cnr(img: object, roi: object, background: object) -> float:
    """Contrast-to-noise ratio ``|μ_roi − μ_bg| / sqrt(σ²_roi + σ²_bg)``.

    Example:
        >>> import numpy as np
        >>> img = np.array([[0.0, 2.0, 5.0, 7.0]])
        >>> roi = np.array([[True, True, False, False]])
        >>> round(cnr(img, roi, ~roi), 6)  # |1 - 6| / sqrt(1 + 1)
        3.535534
    """
    r = _pixels(img, roi, "roi")
    g = _pixels(img, background, "background")
    denom = float(np.sqrt(r.var() + g.var()))
    if denom == 0.0:
        raise ValueError("both regions are constant (σ = 0); CNR is undefined")
    return float(abs(r.mean() - g.mean()) / denom)


def gcnr(img: object, roi: object, background: object, *, bins: int = 256) -> float:
    """Generalised CNR: ``1 −`` the overlap of the two regions' histograms.

    Args:
        img: The image.
        roi: Lesion region.
        background: Background region (e.g. :func:`region_ring` around the lesion).
        bins: Number of shared histogram bins over the joint value range.

    Example:
        >>> import numpy as np
        >>> img = np.zeros((4, 4)); img[:2] = 1.0
        >>> roi = np.zeros((4, 4), bool); roi[:2] = True
        >>> gcnr(img, roi, ~roi), gcnr(img, roi, roi)
        (1.0, 0.0)
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    r = _pixels(img, roi, "roi", min_pixels=1)
    g = _pixels(img, background, "background", min_pixels=1)
    lo, hi = float(min(r.min(), g.min())), float(max(r.max(), g.max()))
    if lo == hi:
        return 0.0  # one constant value everywhere: the distributions are identical
    edges = np.linspace(lo, hi, bins + 1)
    pr = np.histogram(r, bins=edges)[0] / r.size
    pg = np.histogram(g, bins=edges)[0] / g.size
    return float(1.0 - np.minimum(pr, pg).sum())


def speckle_snr(img: object, region: object) -> float:
    """Speckle SNR ``μ / σ`` in a region.

    Example:
        >>> import numpy as np
        >>> speckle_snr(np.array([[1.0, 3.0]]), np.array([[True, True]]))
        2.0
    """
    v = _pixels(img, region, "region")
    return float(v.mean() / _std(v, "region"))


def enl(img: object, region: object) -> float:
    """Equivalent number of looks ``μ² / σ²`` in a region.

    Example:
        >>> import numpy as np
        >>> enl(np.array([[1.0, 3.0]]), np.array([[True, True]]))
        4.0
    """
    v = _pixels(img, region, "region")
    return float(v.mean() ** 2 / _std(v, "region") ** 2)


def region_ring(mask: object, *, gap: int = 3, width: int = 10) -> np.ndarray:
    """A background ring around a lesion: pixels between ``gap`` and ``gap + width`` px outside it.

    The gap keeps the blurred lesion edge (and any halo) out of the background statistics.

    Example:
        >>> import numpy as np
        >>> m = np.zeros((41, 41), bool); m[20, 20] = True
        >>> ring = region_ring(m, gap=2, width=3)
        >>> bool(ring[20, 20]), bool(ring[20, 23]), bool(ring[20, 26])
        (False, True, False)
    """
    from scipy.ndimage import distance_transform_edt

    m = np.asarray(mask).astype(bool)
    if not m.any():
        raise ValueError("mask is empty (0 foreground pixels); no ring can be drawn around it")
    if gap < 0 or width < 1:
        raise ValueError(f"gap must be >= 0 and width >= 1, got gap={gap}, width={width}")
    d = distance_transform_edt(~m)
    return (d > gap) & (d <= gap + width)
