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
lesion gCNR    gCNR of the lesion against the ring 8–20 px outside it (Euclidean distance
               transform), on 256 fixed bins over [0, 1] so every method is binned alike.
fidelity r     Pearson :math:`r` between an output and the true echogenicity map (e.g. in dB),
               over the tissue below the skin line.
speckle SNR    :math:`\mu / \sigma` in a region (1.91 for a fully developed speckle envelope);
               :func:`homogeneous_patch` picks a background region when there is no truth.
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

__all__ = [
    "cnr",
    "contrast_db",
    "enl",
    "fidelity_r",
    "gcnr",
    "homogeneous_patch",
    "lesion_gcnr",
    "psnr",
    "region_ring",
    "speckle_snr",
    "ssim",
]


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


def gcnr(
    img: object,
    roi: object,
    background: object,
    *,
    bins: int = 256,
    value_range: tuple[float, float] | None = None,
) -> float:
    """Generalised CNR: ``1 −`` the overlap of the two regions' histograms.

    Args:
        img: The image.
        roi: Lesion region.
        background: Background region (e.g. :func:`region_ring` around the lesion).
        bins: Number of shared histogram bins.
        value_range: ``(lo, hi)`` of fixed bins, e.g. ``(0, 1)``, so that images binned alike can
            be compared; None spans the joint value range of the two regions.

    Raises:
        ValueError: A pixel of either region lies outside ``value_range``.

    Example:
        >>> import numpy as np
        >>> img = np.zeros((4, 4)); img[:2] = 1.0
        >>> roi = np.zeros((4, 4), bool); roi[:2] = True
        >>> gcnr(img, roi, ~roi), gcnr(img, roi, roi)
        (1.0, 0.0)
        >>> gcnr(img * 0.001, roi, ~roi, value_range=(0.0, 1.0))  # both in the first of 256 bins
        0.0
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    r = _pixels(img, roi, "roi", min_pixels=1)
    g = _pixels(img, background, "background", min_pixels=1)
    lo, hi = float(min(r.min(), g.min())), float(max(r.max(), g.max()))
    if value_range is not None:
        vlo, vhi = (float(v) for v in value_range)
        if not vlo < vhi:
            raise ValueError(f"value_range must be (lo, hi) with lo < hi, got {value_range}")
        if lo < vlo or hi > vhi:
            raise ValueError(
                f"pixel values span [{lo:g}, {hi:g}], outside value_range ({vlo:g}, {vhi:g}); "
                "rescale the image or widen value_range"
            )
        lo, hi = vlo, vhi
    elif lo == hi:
        return 0.0  # one constant value everywhere: the distributions are identical
    edges = np.linspace(lo, hi, bins + 1)
    pr = np.histogram(r, bins=edges)[0] / r.size
    pg = np.histogram(g, bins=edges)[0] / g.size
    return float(1.0 - np.minimum(pr, pg).sum())


def lesion_gcnr(
    img: object,
    mask: object,
    *,
    ring: tuple[float, float] = (8, 20),
    within: object | None = None,
    bins: int = 256,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> float:
    """gCNR of a lesion against the ring ``ring[0] < d <= ring[1]`` px outside it, on fixed bins.

    ``d`` is the Euclidean distance to the nearest lesion pixel (:func:`region_ring`); the gap
    keeps the blurred margin and any halo out of the background.

    Args:
        img: ``(H, W)`` image, values inside ``value_range``.
        mask: ``(H, W)`` lesion mask.
        ring: Inner and outer distance of the background ring (px).
        within: Optional ``(H, W)`` region the ring is cut to (e.g. the tissue below the skin).
        bins: Number of fixed bins.
        value_range: Range the bins cover ((0, 1) for frames in [0, 1]).

    Example:
        >>> import numpy as np
        >>> m = np.zeros((64, 64), bool); m[24:40, 24:40] = True
        >>> lesion_gcnr(np.where(m, 0.1, 0.6), m), lesion_gcnr(np.full((64, 64), 0.5), m)
        (1.0, 0.0)
    """
    inner, outer = (float(v) for v in ring)
    if not 0 <= inner < outer:
        raise ValueError(f"ring must be (inner, outer) px with 0 <= inner < outer, got {ring}")
    m = np.asarray(mask).astype(bool)
    background = region_ring(m, gap=inner, width=outer - inner)
    if within is not None:
        background &= _region("within", within, background.shape, min_pixels=0)
    return gcnr(img, m, background, bins=bins, value_range=value_range)


def fidelity_r(output: object, truth: object, *, below_skin: object | None = None) -> float:
    """Pearson correlation between an output and the true echogenicity map.

    Pearson r ignores any affine map between the two, so a display in grey levels can be scored
    against a truth in dB (a log-compressed display is affine in dB until it clips).

    Args:
        output: ``(H, W)`` enhanced (or input) frame.
        truth: ``(H, W)`` true echogenicity, e.g. in dB.
        below_skin: Optional ``(H, W)`` region scored (the tissue below the skin line): the gel
            above the skin is black in every output and in the truth, and would inflate r.

    Example:
        >>> import numpy as np
        >>> t = np.arange(12.0).reshape(3, 4)
        >>> fidelity_r(2 * t + 1, t), fidelity_r(-t, t)
        (1.0, -1.0)
    """
    a, b = _as_float("output", output), _as_float("truth", truth)
    if a.shape != b.shape:
        raise ValueError(f"output and truth shapes differ: {a.shape} vs {b.shape}")
    if below_skin is not None:
        m = _region("below_skin", below_skin, a.shape, min_pixels=2)
        a, b = a[m], b[m]
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if den == 0.0:
        raise ValueError("output or truth is constant in the region (σ = 0); Pearson r is undefined")
    return float(np.clip((a * b).sum() / den, -1.0, 1.0))


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


def homogeneous_patch(
    img: object,
    *,
    exclude: object | None = None,
    margin: int = 20,
    size: int = 21,
    smooth_sigma: float = 4.0,
) -> np.ndarray:
    """The flattest ``size`` × ``size`` background patch of a frame, for speckle SNR without truth.

    Speckle is averaged away by a Gaussian blur of σ = ``smooth_sigma`` px; the patch is the window
    where that blurred echogenicity varies least relative to its mean (local std / local mean of
    the blurred frame), among windows that lie inside the frame, more than ``margin`` px from
    ``exclude`` (the lesion), whose mean lies between the 50th and 90th percentiles of the pixels
    the windows cover (dark shadows, gel and padding are flat but hold no speckle, and near-white
    regions are compressed by the display), and with at most 1% of pixels at the
    frame's minimum or maximum value (clipped pixels are flat because the display saturated, which
    would inflate the SNR). Ties go to the first window in raster order. Choose it once on the
    input frame and score every method on the same patch.

    Args:
        img: ``(H, W)`` frame.
        exclude: Optional ``(H, W)`` region to keep away from (e.g. the lesion mask).
        margin: Distance from ``exclude`` the patch keeps (px).
        size: Odd side of the patch (px).
        smooth_sigma: σ of the speckle-averaging blur (px).

    Returns:
        ``(H, W)`` bool mask of the patch.

    Raises:
        ValueError: No window fits (frame too small, or everything near ``exclude``).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> img = rng.rayleigh(0.2, (64, 64)).clip(0, 1)
        >>> img[:, :32] *= np.linspace(0.2, 1.0, 32)  # a ramp on the left: not homogeneous
        >>> patch = homogeneous_patch(img, size=15)
        >>> int(patch.sum()), bool(patch[:, :32].any())
        (225, False)
    """
    from scipy.ndimage import binary_dilation, distance_transform_edt, gaussian_filter, uniform_filter

    a = _as_float("image", img)
    if a.ndim != 2:
        raise ValueError(f"image must be (H, W), got shape {a.shape}")
    if size < 3 or size % 2 == 0:
        raise ValueError(f"size must be an odd integer >= 3, got {size}")
    if margin < 0 or smooth_sigma <= 0:
        raise ValueError(f"margin must be >= 0 and smooth_sigma > 0, got {margin} and {smooth_sigma}")
    allowed = np.ones(a.shape, bool)
    if exclude is not None:
        ex = _region("exclude", exclude, a.shape, min_pixels=0)
        if ex.any():
            allowed = distance_transform_edt(~ex) > margin
    half = size // 2
    # A window is a candidate when every pixel of it is allowed and it lies inside the frame.
    inside = np.zeros(a.shape, bool)
    inside[half : a.shape[0] - half, half : a.shape[1] - half] = True
    full = uniform_filter(allowed.astype(np.float64), size, mode="constant") > 1.0 - 1e-9
    cand = inside & full
    if not cand.any():
        raise ValueError(
            f"no {size}x{size} patch fits in the {a.shape} frame more than {margin} px from the excluded "
            "region; use a smaller size or margin"
        )
    smooth = gaussian_filter(a, smooth_sigma, mode="reflect")
    mean = uniform_filter(a, size, mode="reflect")
    s_mean = uniform_filter(smooth, size, mode="reflect")
    s_var = np.maximum(uniform_filter(smooth * smooth, size, mode="reflect") - s_mean * s_mean, 0.0)
    p50, p90 = np.percentile(a[binary_dilation(cand, np.ones((size, size), bool))], [50, 90])
    clipped = uniform_filter(((a <= a.min()) | (a >= a.max())).astype(np.float64), size, mode="reflect")
    usable = (mean >= p50) & (mean <= p90) & (clipped <= 0.01)
    if (cand & usable).any():  # otherwise fall back to the flattest window that fits
        cand &= usable
    score = np.where(cand, np.sqrt(s_var) / np.maximum(s_mean, 1e-12), np.inf)
    r, c = np.unravel_index(int(np.argmin(score)), a.shape)
    out = np.zeros(a.shape, bool)
    out[r - half : r + half + 1, c - half : c + half + 1] = True
    return out
