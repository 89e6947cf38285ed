"""pyradiomics' first-order statistics (``radiomics.firstorder``), batched over ROIs.

The grey levels ``X`` are the ROI's pixels; pyradiomics takes them from its float32 image and
casts them to float64 (``imageArray[mask].astype('float')``) before any arithmetic, so every
feature here is float64 on the same values. With ``N`` pixels, mean ``m``, shift ``c``
(``voxelArrayShift``) and the discretised histogram ``p(i)`` (the levels of ``binned``):

==============================  ==============================================================
Energy, TotalEnergy             ``sum (X + c)^2``; times the pixel area ``dy * dx`` (mm^2)
RootMeanSquared                 ``sqrt(Energy / N)``
Minimum, Maximum, Range         extremes and their difference
Mean, Variance                  ``m``, ``mean (X - m)^2``
MeanAbsoluteDeviation           ``mean |X - m|``
RobustMeanAbsoluteDeviation     the same on the pixels within ``[P10, P90]`` (closed)
Skewness, Kurtosis              ``mu3 / mu2^1.5``, ``mu4 / mu2^2`` (0 for a flat ROI)
10Percentile, 90Percentile,     ``numpy.nanpercentile``'s linear interpolation between order
Median, InterquartileRange      statistics (its ``a + (b - a) t`` / ``b - (b - a)(1 - t)`` lerp),
                                the median as the mean of the two middle values, IQR P75 - P25
Entropy, Uniformity             ``-sum p log2(p + eps)``, ``sum p^2`` (``eps`` = float64 spacing)
==============================  ==============================================================

**Batched.** Sums, moments and extremes are masked reductions; the order statistics come from
one sort per batch with the padding (and the pixels outside each ROI) sorted last as ``+inf``;
the histogram is one ``scatter_add`` with a per-ROI offset. No Python loop over ROIs.

**Agreement.** Everything agrees with pyradiomics to ~1e-13 relative (numpy's pairwise sums vs
torch's reductions round differently); the tests hold 1e-6 relative, 1e-9 absolute, the
issue's bar (``tests/features/torchrad/test_firstorder.py``). Skewness of a near-symmetric ROI
is a small difference of large cubes; the absolute 1e-9 covers its rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from usher2.io.errors import InputError

__all__ = ["FEATURES", "compute"]

FEATURES: tuple[str, ...] = (
    "Energy",
    "TotalEnergy",
    "Entropy",
    "Minimum",
    "10Percentile",
    "90Percentile",
    "Maximum",
    "Mean",
    "Median",
    "InterquartileRange",
    "Range",
    "MeanAbsoluteDeviation",
    "RobustMeanAbsoluteDeviation",
    "RootMeanSquared",
    "Skewness",
    "Kurtosis",
    "Variance",
    "Uniformity",
)
_HISTOGRAM = {"Entropy", "Uniformity"}
_ORDER = {"10Percentile", "90Percentile", "Median", "InterquartileRange", "RobustMeanAbsoluteDeviation"}


def _percentile(sorted_x: torch.Tensor, n: torch.Tensor, q: float) -> torch.Tensor:
    """``numpy.nanpercentile(x, q)`` (method linear) from each row's first ``n`` sorted values."""
    v = (n - 1).double() * (q / 100)  # numpy: (n - 1) * true_divide(q, 100)
    prev = torch.floor(v)
    gamma = v - prev
    prev_i = prev.to(torch.int64)
    nxt_i = prev_i + 1
    top = v >= (n - 1).double()  # numpy takes the last value for both
    prev_i = torch.where(top, n - 1, prev_i)
    nxt_i = torch.where(top, n - 1, nxt_i)
    a = sorted_x.gather(1, prev_i[:, None].clamp(min=0))[:, 0]
    b = sorted_x.gather(1, nxt_i[:, None].clamp(min=0))[:, 0]
    diff = b - a
    return torch.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def compute(
    image: torch.Tensor,
    mask: torch.Tensor,
    binned: torch.Tensor | None = None,
    *,
    names: Sequence[str] | None = None,
    spacing: torch.Tensor | None = None,
    voxel_array_shift: float = 0.0,
) -> dict[str, torch.Tensor]:
    """pyradiomics' first-order features of each ROI.

    Args:
        image: ``(B, H, W)`` float grey levels (pyradiomics' float32 values).
        mask: ``(B, H, W)`` bool ROIs (zero-padded to a common size).
        binned: ``(B, H, W)`` int64 discretised levels (:func:`~usher2.features.torchrad.discretise.discretise`);
            needed only for Entropy and Uniformity.
        names: Features to compute (default: all of :data:`FEATURES`).
        spacing: ``(B, 2)`` pixel size in mm (rows, columns) for TotalEnergy; ``None``: 1 mm.
        voxel_array_shift: pyradiomics' ``voxelArrayShift``, added to the grey levels in Energy,
            TotalEnergy and RootMeanSquared.

    Returns:
        ``{feature name: (B,) float64}``, pyradiomics' names.

    Raises:
        InputError: An unknown feature name, mismatched shapes, an empty ROI, or Entropy or
            Uniformity without ``binned``.

    Example:
        >>> img = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 9.0]]])
        >>> m = torch.tensor([[[True, True, True], [True, False, False]]])
        >>> out = compute(img, m, names=["Mean", "Median", "10Percentile", "Energy"])
        >>> {k: round(float(v[0]), 4) for k, v in out.items()}
        {'Mean': 2.5, 'Median': 2.5, '10Percentile': 1.3, 'Energy': 30.0}
    """
    wanted = list(FEATURES) if names is None else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in FEATURES]
    if unknown:
        raise InputError("firstorder features", f"names among {list(FEATURES)}", str(unknown))
    if mask.dim() != 3 or image.shape != mask.shape:
        raise InputError(
            "image and mask", "(B, H, W) tensors of one shape", f"{tuple(image.shape)} and {tuple(mask.shape)}"
        )
    if binned is None and _HISTOGRAM.intersection(wanted):
        raise InputError("binned", "the discretised image for Entropy and Uniformity", "None")
    mask = mask.bool()
    b = mask.shape[0]
    n = mask.sum((1, 2))
    if bool((n == 0).any()):
        raise InputError("mask", "at least one pixel in every ROI", f"empty ROIs {(n == 0).nonzero()[:, 0].tolist()}")
    nf = n.double()
    x = image.double()
    zero = torch.zeros((), dtype=torch.float64, device=x.device)
    out: dict[str, torch.Tensor] = {}

    def msum(v: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, v, zero).sum((1, 2))

    if {"Energy", "TotalEnergy", "RootMeanSquared"}.intersection(wanted):
        energy = msum((x + voxel_array_shift) ** 2)
        out["Energy"] = energy
        area = torch.ones(b, dtype=torch.float64, device=x.device) if spacing is None else spacing.double().prod(1)
        out["TotalEnergy"] = energy * area
        out["RootMeanSquared"] = torch.sqrt(energy / nf)
    if {"Minimum", "Maximum", "Range"}.intersection(wanted):
        inf = torch.tensor(float("inf"), dtype=torch.float64, device=x.device)
        lo = torch.where(mask, x, inf).amin((1, 2))
        hi = torch.where(mask, x, -inf).amax((1, 2))
        out["Minimum"], out["Maximum"], out["Range"] = lo, hi, hi - lo
    mean = (msum(x) / nf)[:, None, None]
    out["Mean"] = mean[:, 0, 0]
    dev = x - mean
    if {"Variance", "Skewness", "Kurtosis"}.intersection(wanted):
        m2 = msum(dev * dev) / nf
        out["Variance"] = m2
        m2_safe = torch.where(m2 == 0, torch.ones_like(m2), m2)  # pyradiomics: a flat ROI gives 0
        out["Skewness"] = (msum(dev**3) / nf) / m2_safe**1.5
        out["Kurtosis"] = (msum(dev**4) / nf) / m2_safe**2.0
    if "MeanAbsoluteDeviation" in wanted:
        out["MeanAbsoluteDeviation"] = msum(dev.abs()) / nf
    if _ORDER.intersection(wanted):
        out.update(_order_statistics(x, mask, n))
    if _HISTOGRAM.intersection(wanted):
        assert binned is not None
        out.update(_histogram(binned, mask, nf))
    return {name: out[name] for name in wanted}


def _order_statistics(x: torch.Tensor, mask: torch.Tensor, n: torch.Tensor) -> dict[str, torch.Tensor]:
    """Percentiles, median, IQR and the robust mean absolute deviation (one sort of the batch)."""
    b = mask.shape[0]
    zero = torch.zeros((), dtype=torch.float64, device=x.device)
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=x.device)
    srt = torch.where(mask, x, inf).reshape(b, -1).sort(1).values
    out: dict[str, torch.Tensor] = {}
    p10, p90 = _percentile(srt, n, 10), _percentile(srt, n, 90)
    out["10Percentile"], out["90Percentile"] = p10, p90
    out["InterquartileRange"] = _percentile(srt, n, 75) - _percentile(srt, n, 25)
    lo_mid = srt.gather(1, ((n - 1) // 2)[:, None])[:, 0]
    hi_mid = srt.gather(1, (n // 2)[:, None])[:, 0]
    out["Median"] = (lo_mid + hi_mid) / 2
    inner = mask & (x >= p10[:, None, None]) & (x <= p90[:, None, None])
    n_in = inner.sum((1, 2)).double()
    mean_in = torch.where(inner, x, zero).sum((1, 2)) / n_in
    out["RobustMeanAbsoluteDeviation"] = torch.where(inner, (x - mean_in[:, None, None]).abs(), zero).sum((1, 2)) / n_in
    return out


def _histogram(binned: torch.Tensor, mask: torch.Tensor, nf: torch.Tensor) -> dict[str, torch.Tensor]:
    """Entropy and Uniformity of the discretised levels (one ``scatter_add`` with a per-ROI offset)."""
    b = mask.shape[0]
    levels = torch.where(mask, binned, 0).reshape(b, -1)
    k = int(levels.max()) + 1  # one device sync: the histogram's size
    flat = (levels + k * torch.arange(b, device=levels.device)[:, None]).reshape(-1)
    counts = torch.zeros(b * k, dtype=torch.float64, device=levels.device)
    counts.scatter_add_(0, flat, mask.reshape(-1).double())
    p = counts.reshape(b, k) / nf[:, None]
    eps = torch.finfo(torch.float64).eps  # numpy.spacing(1)
    return {"Entropy": -(p * torch.log2(p + eps)).sum(1), "Uniformity": (p * p).sum(1)}
