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
``(roi, level, dependence)``. On the CPU (numpy) the image is the ``uint8`` layout of
:func:`~usher2.features.torchrad._zones.padded` and, for ``gldm_a`` 0 (usher2's default), a
neighbour is dependent when it equals the pixel (0 outside the ROI equals no ROI level); as
dependence is symmetric, the 4 forward neighbours are compared once each (one contiguous pass) and
every hit counted for both pixels of the pair into a ``uint8`` count, then the ``bincount`` runs
over the ROI pixels alone (as ``-ng - 1`` outside and ``|i - k| <= alpha`` for ``gldm_a`` > 0). On other
devices (torch) :func:`matrix` does the same in ``int16`` with a sentinel outside the ROI.
Memory is ``O(B * Ng * 9)`` for the matrices plus a few ``(B, H, W)`` arrays. The features are
computed from the matrices by the same code on both paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from usher2.features.torchrad._zones import (
    EPS,
    OFFSETS,
    backend_of,
    check_binned,
    check_names,
    layout,
    levels_like,
    to_device,
)

__all__ = ["FEATURES", "compute", "level_dtype", "matrix", "matrix_np", "shifted"]

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

_ND = len(OFFSETS) + 1  # dependence j = 1 + number of dependent neighbours, 1..9


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


def matrix_np(binned: torch.Tensor, *, alpha: float = 0) -> np.ndarray:
    """:func:`matrix` on the CPU with numpy (see the module docstring): ``(B, Ng, 9)`` float64.

    Dependence is symmetric, so each of the 4 forward neighbours is compared once and the result
    counted for both pixels of the pair.

    Raises:
        ValueError: A malformed ``binned`` (see :func:`~usher2.features.torchrad._zones.check_binned`).

    Example:
        >>> matrix_np(torch.tensor([[[1, 1], [1, 2]]]))[0].tolist()  # as matrix()
        [[0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    """
    lay = layout(binned)
    b, row, ng = lay.shape[0], lay.row, lay.ng
    cut = min(math.floor(alpha), ng)  # the differences of levels are integers
    flat = lay.flat  # 0 outside the ROI, which equals no ROI level
    if cut:  # -ng - 1 outside, which no ROI level is within `cut` of; differences fit the type
        flat = np.where(flat > 0, flat, -ng - 1).astype(np.int16 if 2 * ng + 1 < 2**15 else np.int32)
    dep = np.zeros(flat.size, np.uint8)  # dependent neighbours of each position
    hit = np.empty(flat.size - 1, bool)
    diff = np.empty(flat.size - 1, flat.dtype) if cut else None
    for step in (1, row - 1, row, row + 1):  # (0, 1), (1, -1), (1, 0), (1, 1)
        here, there = flat[: flat.size - step], flat[step:]
        if diff is None:
            np.equal(here, there, out=hit[: here.size])
        else:
            np.subtract(here, there, out=diff[: here.size])
            np.abs(diff[: here.size], out=diff[: here.size])
            np.less_equal(diff[: here.size], cut, out=hit[: here.size])
        both = hit[: here.size].view(np.uint8)
        dep[: here.size] += both  # the pixel and its forward neighbour
        dep[step:] += both  # the neighbour and its backward one
    key = lay.cell * _ND
    key += dep[lay.where]
    return np.bincount(key, minlength=b * ng * _ND).reshape(b, ng, _ND).astype(np.float64)


def _features(p: Any) -> dict[str, Callable[[], Any]]:
    """pyradiomics' GLDM formulas on ``(B, Ng, Nd)`` matrices (numpy or torch), each a thunk (only
    asked ones run)."""
    xp = np if isinstance(p, np.ndarray) else torch
    ivec, jvec = levels_like(p, p.shape[1]), levels_like(p, p.shape[2])
    nz = p.sum((1, 2))
    nz = xp.where(nz == 0, 1.0, nz)  # pyradiomics: Nz[Nz == 0] = 1
    pd, pg = p.sum(1), p.sum(2)
    i2, j2 = ivec**2, jvec**2
    # the four joint emphases: sum_ij P(i, j) i^+-2 j^+-2 as (i^-2, i^2) x P x (j^-2, j^2)
    joint = xp.stack([1 / i2, i2]) @ p @ xp.stack([1 / j2, j2], 1)

    def variance(q: Any, v: Any) -> Any:
        q = q / nz[:, None]
        mu = (q * v).sum(1)
        return (q * (v - mu[:, None]) ** 2).sum(1)

    def entropy() -> Any:
        q = p / nz[:, None, None]
        return -(q * xp.log2(q + EPS)).sum((1, 2))

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
        "SmallDependenceLowGrayLevelEmphasis": lambda: joint[:, 0, 0] / nz,
        "SmallDependenceHighGrayLevelEmphasis": lambda: joint[:, 1, 0] / nz,
        "LargeDependenceLowGrayLevelEmphasis": lambda: joint[:, 0, 1] / nz,
        "LargeDependenceHighGrayLevelEmphasis": lambda: joint[:, 1, 1] / nz,
    }


def compute(
    binned: torch.Tensor, names: Sequence[str] | None = None, *, alpha: float = 0, backend: str = "auto"
) -> dict[str, torch.Tensor]:
    """pyradiomics' GLDM features of every ROI of a batch.

    Args:
        binned: ``(B, H, W)`` int64 binned grey levels, 1..Ng inside the ROI and 0 outside (the
            ROI is ``binned > 0``; :mod:`usher2.features.torchrad.discretise`, or pyradiomics'
            ``binImage``); any device. ROIs of different sizes share the batch by zero padding;
            the results do not depend on it.
        names: the features to compute (default: all of :data:`FEATURES`).
        alpha: pyradiomics' ``gldm_a`` (default 0): a neighbour is dependent when its binned
            level differs by at most ``alpha``.
        backend: ``"auto"`` (numpy on the CPU, torch elsewhere), ``"numpy"`` or ``"torch"``.

    Returns:
        ``{feature name: (B,) float64 tensor}`` in the order of ``names`` (or :data:`FEATURES`),
        on ``binned``'s device.

    Raises:
        ValueError: A malformed ``binned`` (see :func:`~usher2.features.torchrad._zones.check_binned`:
            not ``(B, H, W)`` integers, a negative level, an empty ROI), a negative ``alpha``, an
            unknown feature name or backend.

    Example:
        >>> b = torch.tensor([[[1, 1, 2], [1, 1, 2]]])  # four 1s with 3 dependants, two 2s with 1
        >>> out = compute(b, ["LargeDependenceEmphasis", "GrayLevelNonUniformity"])
        >>> [round(v.item(), 4) for v in out.values()]
        [12.0, 3.3333]
    """
    wanted = check_names(names, FEATURES, "gldm")
    if alpha < 0:
        raise ValueError(f"gldm: alpha (gldm_a) must be >= 0, got {alpha}")
    if backend_of(binned, backend) == "numpy":
        p = matrix_np(binned, alpha=alpha)
    else:
        check_binned(binned)
        p = matrix(binned.long(), alpha=alpha)
    thunks = _features(p)
    stack = np.stack if isinstance(p, np.ndarray) else torch.stack
    return to_device(wanted, stack([thunks[name]() for name in wanted]), binned.device)
