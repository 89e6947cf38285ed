r"""pyradiomics' grey-level dependence matrix (GLDM) features, in 2D, for a batch of ROIs.

For each ROI pixel with binned grey level :math:`i`, a neighbour is *dependent* when it lies
in the ROI, at Chebyshev distance 1 (the 8 in-plane neighbours: pyradiomics' ``distances=[1]``
with both directions of its 4 angles) and its binned grey level :math:`k` has
:math:`|i - k| \le \alpha` (``gldm_a``). The pixel adds one to :math:`\textbf{P}(i, j)` with
:math:`j` = 1 + its number of dependent neighbours (pyradiomics' C ``calculate_gldm`` stores
the count ``c`` in column ``c``, and ``jvector`` numbers the columns from 1). Neighbours
outside the ROI (or outside the frame) never count, so cropping and padding do not matter.

pyradiomics deletes the rows of grey levels absent from the ROI and the columns of dependence
counts nobody has; every feature below sums terms that are 0 on such rows and columns (a
``P = 0`` entry times a finite weight, and :math:`0 \log_2(0 + \epsilon) = 0`), so the full
``(Ng, 9)`` matrix gives the same values. :math:`N_z = N_p` (every pixel has a dependence
zone); an empty ROI (pyradiomics refuses it) is refused by :func:`compute`.

With :math:`p(i,j) = \textbf{P}(i,j)/N_z`, :math:`p_g(i) = \sum_j \textbf{P}(i,j)` and
:math:`p_d(j) = \sum_i \textbf{P}(i,j)`, the features (pyradiomics' enabled-by-default ones)
are:

======================================  =========================================================
SmallDependenceEmphasis                 :math:`\sum_j p_d(j)/j^2 / N_z`
LargeDependenceEmphasis                 :math:`\sum_j p_d(j) j^2 / N_z`
GrayLevelNonUniformity                  :math:`\sum_i p_g(i)^2 / N_z`
DependenceNonUniformity                 :math:`\sum_j p_d(j)^2 / N_z`
DependenceNonUniformityNormalized       :math:`\sum_j p_d(j)^2 / N_z^2`
GrayLevelVariance                       :math:`\sum_i p_g(i)/N_z (i - \mu_i)^2`
DependenceVariance                      :math:`\sum_j p_d(j)/N_z (j - \mu_j)^2`
DependenceEntropy                       :math:`-\sum_{i,j} p(i,j) \log_2(p(i,j) + \epsilon)`
LowGrayLevelEmphasis                    :math:`\sum_i p_g(i)/i^2 / N_z`
HighGrayLevelEmphasis                   :math:`\sum_i p_g(i) i^2 / N_z`
SmallDependenceLowGrayLevelEmphasis     :math:`\sum_{i,j} \textbf{P}(i,j)/(i^2 j^2) / N_z`
SmallDependenceHighGrayLevelEmphasis    :math:`\sum_{i,j} \textbf{P}(i,j) i^2/j^2 / N_z`
LargeDependenceLowGrayLevelEmphasis     :math:`\sum_{i,j} \textbf{P}(i,j) j^2/i^2 / N_z`
LargeDependenceHighGrayLevelEmphasis    :math:`\sum_{i,j} \textbf{P}(i,j) i^2 j^2 / N_z`
======================================  =========================================================

(:math:`\epsilon` is numpy's ``spacing(1)``; the deprecated GrayLevelNonUniformityNormalized
and DependencePercentage, off by default in pyradiomics, are not computed.)

The whole batch is done at once: the dependence counts from 8 shifted views of the padded
binned image (flattened, so each is a contiguous shift), then one ``bincount`` over
``(roi, level, dependence)``. Memory is ``O(B * Ng * 9)`` for the matrices plus a few
``(B, H, W)`` tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from usher2.features.torchrad.glrlm import check_binned, check_names

__all__ = ["FEATURES", "OFFSETS", "compute", "level_dtype", "matrix", "shifted"]

FEATURES: tuple[str, ...] = (
    "SmallDependenceEmphasis",
    "LargeDependenceEmphasis",
    "GrayLevelNonUniformity",
    "DependenceNonUniformity",
    "DependenceNonUniformityNormalized",
    "GrayLevelVariance",
    "DependenceVariance",
    "DependenceEntropy",
    "LowGrayLevelEmphasis",
    "HighGrayLevelEmphasis",
    "SmallDependenceLowGrayLevelEmphasis",
    "SmallDependenceHighGrayLevelEmphasis",
    "LargeDependenceLowGrayLevelEmphasis",
    "LargeDependenceHighGrayLevelEmphasis",
)

#: The 8 in-plane neighbours at distance 1 (pyradiomics' 4 angles, both directions).
OFFSETS: tuple[tuple[int, int], ...] = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_ND = len(OFFSETS) + 1  # dependence j = 1 + number of dependent neighbours, 1..9
_EPS = float(torch.finfo(torch.float64).eps)  # numpy.spacing(1)


def level_dtype(ng: int) -> torch.dtype:
    """The narrowest integer type for the neighbour arithmetic on levels ``0..ng``.

    A sum of 8 neighbours must fit: int16 up to ``ng = 4095``, else int32. Narrow types halve
    or quarter the memory traffic of the 8 shifted passes (about 3x faster on a CPU than int64).

    Example:
        >>> level_dtype(33), level_dtype(5000)
        (torch.int16, torch.int32)
    """
    return torch.int16 if 8 * ng < 2**15 else torch.int32


def shifted(x: torch.Tensor, fill: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Every pixel of a ``(B, H, W)`` batch and its 8 neighbours, as aligned ``(B, L)`` views.

    ``x`` is padded by one pixel of ``fill`` and each image flattened; a neighbour at ``(dy,
    dx)`` is then a constant shift along the flat axis, so the 8 neighbour views are contiguous
    rows (fast elementwise passes) rather than 2D strided windows. The views also cover the
    padding columns; there the centre holds ``fill``, so callers drop those positions by their
    value.

    Returns:
        ``(centre, [neighbour per entry of OFFSETS])``, each ``(B, L)`` with
        ``L = (H + 2) * (W + 2) - 2 * (W + 3)``.

    Example:
        >>> centre, nbs = shifted(torch.arange(1, 5).view(1, 2, 2))
        >>> centre.tolist(), nbs[7].tolist()  # (1, 1): the pixel below-right; 0s are padding
        ([[1, 2, 0, 0, 3, 4]], [[4, 0, 0, 0, 0, 0]])
    """
    row = x.shape[-1] + 2
    flat = F.pad(x, (1, 1, 1, 1), value=fill).reshape(x.shape[0], -1)
    lo, hi = row + 1, flat.shape[1] - row - 1
    return flat[:, lo:hi], [flat[:, lo + dy * row + dx : hi + dy * row + dx] for dy, dx in OFFSETS]


def matrix(binned: torch.Tensor, *, alpha: float = 0) -> torch.Tensor:
    """The GLDM of every ROI: ``P[b, i - 1, j - 1]`` pixels of level ``i`` with dependence ``j``.

    Args:
        binned: ``(B, H, W)`` int64 binned grey levels, 1..Ng in the ROI and 0 outside (the ROI
            is ``binned > 0``).
        alpha: pyradiomics' ``gldm_a``: a neighbour is dependent when its level differs by <= alpha.

    Returns:
        ``(B, Ng, 9)`` float64 counts, ``Ng`` the largest level in the batch.

    Example:
        >>> matrix(torch.tensor([[[1, 1], [1, 2]]]))[0].tolist()  # three 1s with 2 dependent 1s, a lone 2
        [[0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    """
    ng = max(int(binned.max()), 1) if binned.numel() else 1  # the matrices' shape: one host sync
    cut = min(math.floor(alpha), ng)  # the differences of levels are integers
    # outside the ROI a level that no ROI level is within `cut` of, so one test per neighbour
    outside = -ng - 1
    levels = binned.to(level_dtype(ng), copy=True)  # never write into the caller's tensor
    levels.masked_fill_(levels == 0, outside)
    centre, nbs = shifted(levels, outside)
    dep = torch.zeros(centre.shape, dtype=torch.uint8, device=binned.device)
    for nb in nbs:
        diff = centre - nb
        dep += diff.abs_() <= cut
    # level 0 collects the pixels outside the ROI (and the padding); it is dropped below
    slot = centre.clamp(min=0).long()  # explicit casts: mixed-type arithmetic is a slow path
    slot += torch.arange(binned.shape[0], device=binned.device)[:, None] * (ng + 1)
    slot *= _ND
    slot += dep.long()
    counts = torch.bincount(slot.flatten(), minlength=binned.shape[0] * (ng + 1) * _ND)
    return counts.view(-1, ng + 1, _ND)[:, 1:].to(torch.float64)


def _features(p: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """pyradiomics' GLDM formulas on ``(B, Ng, Nd)`` matrices, each a thunk (only asked ones run)."""
    ivec = torch.arange(1, p.shape[1] + 1, dtype=p.dtype, device=p.device)
    jvec = torch.arange(1, p.shape[2] + 1, dtype=p.dtype, device=p.device)
    nz = p.sum((1, 2))
    nz = torch.where(nz == 0, torch.ones_like(nz), nz)  # pyradiomics: Nz[Nz == 0] = 1
    pd, pg = p.sum(1), p.sum(2)
    i2, j2 = ivec**2, jvec**2

    def variance(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = q / nz[:, None]
        mu = (q * v).sum(1, keepdim=True)
        return (q * (v - mu) ** 2).sum(1)

    def entropy() -> torch.Tensor:
        q = p / nz[:, None, None]
        return -(q * torch.log2(q + _EPS)).sum((1, 2))

    return {
        "SmallDependenceEmphasis": lambda: (pd / j2).sum(1) / nz,
        "LargeDependenceEmphasis": lambda: (pd * j2).sum(1) / nz,
        "GrayLevelNonUniformity": lambda: (pg**2).sum(1) / nz,
        "DependenceNonUniformity": lambda: (pd**2).sum(1) / nz,
        "DependenceNonUniformityNormalized": lambda: (pd**2).sum(1) / nz**2,
        "GrayLevelVariance": lambda: variance(pg, ivec),
        "DependenceVariance": lambda: variance(pd, jvec),
        "DependenceEntropy": entropy,
        "LowGrayLevelEmphasis": lambda: (pg / i2).sum(1) / nz,
        "HighGrayLevelEmphasis": lambda: (pg * i2).sum(1) / nz,
        "SmallDependenceLowGrayLevelEmphasis": lambda: (p / (i2[:, None] * j2)).sum((1, 2)) / nz,
        "SmallDependenceHighGrayLevelEmphasis": lambda: (p * i2[:, None] / j2).sum((1, 2)) / nz,
        "LargeDependenceLowGrayLevelEmphasis": lambda: (p * j2 / i2[:, None]).sum((1, 2)) / nz,
        "LargeDependenceHighGrayLevelEmphasis": lambda: (p * (i2[:, None] * j2)).sum((1, 2)) / nz,
    }


def compute(binned: torch.Tensor, names: Sequence[str] | None = None, *, alpha: float = 0) -> dict[str, torch.Tensor]:
    """pyradiomics' GLDM features of every ROI of a batch.

    Args:
        binned: ``(B, H, W)`` int64 binned grey levels, 1..Ng inside the ROI and 0 outside (the
            ROI is ``binned > 0``; :mod:`usher2.features.torchrad.discretise`, or pyradiomics'
            ``binImage``); any device. ROIs of different sizes share the batch by zero padding;
            the results do not depend on it.
        names: the features to compute (default: all of :data:`FEATURES`).
        alpha: pyradiomics' ``gldm_a`` (default 0): a neighbour is dependent when its binned
            level differs by at most ``alpha``.

    Returns:
        ``{feature name: (B,) float64 tensor}`` in the order of ``names`` (or :data:`FEATURES`),
        on ``binned``'s device.

    Raises:
        ValueError: A malformed ``binned`` (see :func:`~usher2.features.torchrad.glrlm.check_binned`:
            not ``(B, H, W)`` integers, a negative level, an empty ROI), a negative ``alpha`` or an
            unknown feature name.

    Example:
        >>> b = torch.tensor([[[1, 1, 2], [1, 1, 2]]])  # four 1s with 3 dependants, two 2s with 1
        >>> out = compute(b, ["LargeDependenceEmphasis", "GrayLevelNonUniformity"])
        >>> [round(v.item(), 4) for v in out.values()]
        [12.0, 3.3333]
    """
    wanted = check_names(names, FEATURES, "gldm")
    if alpha < 0:
        raise ValueError(f"gldm: alpha (gldm_a) must be >= 0, got {alpha}")
    check_binned(binned)
    thunks = _features(matrix(binned.long(), alpha=alpha))
    return {name: thunks[name]() for name in wanted}
