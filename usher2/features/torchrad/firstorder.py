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

**Batched, on the ROI pixels.** :func:`compute_pixels` works on the ``(N,)`` ROI pixels of a
:class:`~usher2.features.torchrad.discretise.RoiPixels` layout (:func:`compute` gathers them
from ``(B, H, W)`` tensors; the engine passes them directly): sums and moments are segment
sums; the order statistics come from each ROI's values sorted once (numpy's sort ROI by ROI on
the CPU, several times faster there than ``torch.sort``; one batched ``torch.sort`` of the
packed rows elsewhere; the same sorted values, tested equal), gathered at numpy's percentile
positions; the values within ``[P10, P90]`` are a contiguous run of the sorted values, so the
robust mean absolute deviation is a few differences of the rows' cumulative sums; the
histogram is one ``bincount`` over ``(roi, level)``. No Python loop over ROIs except numpy's sort.

**Agreement.** Everything agrees with pyradiomics to ~1e-12 relative (the sums run in another
order: sequential segment sums, and the robust deviation in sorted order from cumulative
sums); the tests hold 1e-6 relative, 1e-9 absolute, the issue's bar
(``tests/features/torchrad/test_firstorder.py``). Skewness of a near-symmetric ROI is a small
difference of large cubes; the absolute 1e-9 covers its rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from usher2.features.torchrad.discretise import RoiPixels
from usher2.io.errors import InputError

__all__ = ["FEATURES", "compute", "compute_pixels"]

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
_PAD = torch.finfo(torch.float64).max  # after every ROI's values when sorted; finite, so 0 * _PAD = 0


def _percentile(sorted_x: torch.Tensor, n: torch.Tensor, q: Sequence[float]) -> torch.Tensor:
    """``numpy.nanpercentile(x, q)`` (method linear) ``(B, len(q))`` from each row's first ``n`` sorted values."""
    qs = torch.tensor(q, dtype=torch.float64, device=sorted_x.device) / 100  # numpy: true_divide(q, 100)
    last = (n - 1)[:, None]
    v = last.double() * qs  # numpy: (n - 1) * q / 100
    prev = torch.floor(v)
    gamma = v - prev
    top = v >= last.double()  # numpy takes the last value for both
    prev_i = torch.where(top, last, prev.to(torch.int64)).clamp_(min=0)
    nxt_i = torch.where(top, last, prev_i + 1).clamp_(min=0)
    a = sorted_x.gather(1, prev_i)
    b = sorted_x.gather(1, nxt_i)
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
    if mask.dim() != 3 or image.shape != mask.shape:
        raise InputError(
            "image and mask", "(B, H, W) tensors of one shape", f"{tuple(image.shape)} and {tuple(mask.shape)}"
        )
    pixels = RoiPixels.from_mask(mask.bool())
    levels = None if binned is None else pixels.values(binned)
    return compute_pixels(
        pixels.values(image).double(),
        pixels,
        levels,
        names=names,
        spacing=spacing,
        voxel_array_shift=voxel_array_shift,
    )


def compute_pixels(
    values: torch.Tensor,
    pixels: RoiPixels,
    levels: torch.Tensor | None = None,
    *,
    names: Sequence[str] | None = None,
    spacing: torch.Tensor | None = None,
    voxel_array_shift: float = 0.0,
    numpy_sort: bool | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`compute` on the ROI pixels: ``values`` ``(N,)`` float64 and ``levels`` ``(N,)`` int64
    in the layout of ``pixels`` (what :func:`compute` gathers; the engine passes them directly).

    ``numpy_sort``: sort each ROI's values with numpy (True) or torch (False); ``None``: numpy on
    the CPU (several times faster there), torch elsewhere. Both give the same sorted values.
    """
    wanted = list(FEATURES) if names is None else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in FEATURES]
    if unknown:
        raise InputError("firstorder features", f"names among {list(FEATURES)}", str(unknown))
    if levels is None and _HISTOGRAM.intersection(wanted):
        raise InputError("binned", "the discretised image for Entropy and Uniformity", "None")
    n = pixels.counts
    if bool((n == 0).any()):
        raise InputError("mask", "at least one pixel in every ROI", f"empty ROIs {(n == 0).nonzero()[:, 0].tolist()}")
    b = n.shape[0]
    nf = n.double()
    x = values.double()
    out: dict[str, torch.Tensor] = {}
    if {"Energy", "TotalEnergy", "RootMeanSquared"}.intersection(wanted):
        energy = pixels.sum((x + voxel_array_shift).square_())
        out["Energy"] = energy
        area = torch.ones(b, dtype=torch.float64, device=x.device) if spacing is None else spacing.double().prod(1)
        out["TotalEnergy"] = energy * area
        out["RootMeanSquared"] = torch.sqrt(energy / nf)
    mean = pixels.sum(x) / nf
    out["Mean"] = mean
    if {"Variance", "Skewness", "Kurtosis", "MeanAbsoluteDeviation"}.intersection(wanted):
        dev = x - pixels.per_pixel(mean)
        out["MeanAbsoluteDeviation"] = pixels.sum(dev.abs()) / nf
        dev2 = dev * dev
        m2 = pixels.sum(dev2) / nf
        out["Variance"] = m2
        m2_safe = torch.where(m2 == 0, 1.0, m2)  # pyradiomics: a flat ROI gives 0
        out["Skewness"] = (pixels.sum(dev.mul_(dev2)) / nf) / m2_safe**1.5
        out["Kurtosis"] = (pixels.sum(dev2.square_()) / nf) / m2_safe**2.0
    if _ORDER.intersection(wanted):
        out.update(_order_statistics(x, pixels, numpy_sort))
    elif {"Minimum", "Maximum", "Range"}.intersection(wanted):
        out["Minimum"] = pixels.reduce(x, "min", 0.0)
        out["Maximum"] = pixels.reduce(x, "max", 0.0)
    if "Minimum" in out:
        out["Range"] = out["Maximum"] - out["Minimum"]
    if _HISTOGRAM.intersection(wanted):
        assert levels is not None
        out.update(_histogram(levels, pixels, nf))
    return {name: out[name] for name in wanted}


def _sorted_rows(x: torch.Tensor, pixels: RoiPixels, numpy_sort: bool | None) -> torch.Tensor:
    """``(B, n_max)``: each ROI's values ``x`` ascending, then :data:`_PAD` (numpy sorts on the CPU
    by default, ROI by ROI: several times faster than torch's sort there)."""
    if numpy_sort is None:
        numpy_sort = x.device.type == "cpu"
    if not numpy_sort:
        return pixels.packed(x, _PAD).sort(1).values
    rows = np.full((pixels.shape[0], pixels.n_max), _PAD)
    values = x.cpu().numpy()
    for row, first, count in zip(rows, pixels.first.tolist(), pixels.counts.tolist(), strict=True):
        row[:count] = values[first : first + count]
        row[:count].sort()
    return torch.from_numpy(rows).to(x.device)


def _order_statistics(x: torch.Tensor, pixels: RoiPixels, numpy_sort: bool | None) -> dict[str, torch.Tensor]:
    """Extremes, percentiles, median, IQR and the robust mean absolute deviation from each ROI's
    sorted values (one sort, then a few gathers)."""
    n = pixels.counts
    srt = _sorted_rows(x, pixels, numpy_sort)
    out: dict[str, torch.Tensor] = {}
    ends = srt.gather(1, torch.stack([torch.zeros_like(n), n - 1, (n - 1) // 2, n // 2], 1))
    out["Minimum"], out["Maximum"] = ends[:, 0], ends[:, 1]
    out["Median"] = (ends[:, 2] + ends[:, 3]) / 2
    pct = _percentile(srt, n, (10, 90, 25, 75))
    out["10Percentile"], out["90Percentile"] = pct[:, 0], pct[:, 1]
    out["InterquartileRange"] = pct[:, 3] - pct[:, 2]
    out["RobustMeanAbsoluteDeviation"] = _robust_mad(srt, pct[:, :1].contiguous(), pct[:, 1:2].contiguous())
    return out


def _robust_mad(srt: torch.Tensor, p10: torch.Tensor, p90: torch.Tensor) -> torch.Tensor:
    """Mean ``|x - m|`` of the values in ``[P10, P90]`` (``p10``, ``p90`` ``(B, 1)``; ``m`` their mean)
    of sorted rows ``srt``.

    Those values are the run ``[lo, hi)`` of each sorted row, and those above ``m`` the run
    ``[k, hi)``, so every sum is a difference of the rows' cumulative sums: one pass over the
    values. (Sums in sorted order, not pyradiomics' order: ~1e-12 relative apart.)
    """
    cs = torch.nn.functional.pad(srt.cumsum(1), (1, 0))  # cs[:, j] = sum of the first j values
    lo = torch.searchsorted(srt, p10)  # values < P10
    hi = torch.searchsorted(srt, p90, right=True)  # values <= P90
    n_in = (hi - lo).double()
    s_lo, s_hi = cs.gather(1, lo), cs.gather(1, hi)
    mean_in = (s_hi - s_lo) / n_in
    k = torch.searchsorted(srt, mean_in).clamp_(min=lo, max=hi)  # first value >= m
    s_k = cs.gather(1, k)
    above = (s_hi - s_k) - mean_in * (hi - k).double()
    below = mean_in * (k - lo).double() - (s_k - s_lo)
    return ((above + below) / n_in)[:, 0]


def _histogram(levels: torch.Tensor, pixels: RoiPixels, nf: torch.Tensor) -> dict[str, torch.Tensor]:
    """Entropy and Uniformity of the discretised levels (one ``bincount`` over ``(roi, level)``)."""
    b = nf.shape[0]
    k = int(levels.max()) + 1  # one device sync: the histogram's size
    counts = torch.bincount(pixels.roi * k + levels, minlength=b * k)
    p = counts.view(b, k).double() / nf[:, None]
    eps = torch.finfo(torch.float64).eps  # numpy.spacing(1)
    return {"Entropy": -(p * torch.log2(p + eps)).sum(1), "Uniformity": (p * p).sum(1)}
