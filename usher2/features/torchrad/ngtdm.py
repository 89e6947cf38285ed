r"""pyradiomics' neighbouring grey-tone difference matrix (NGTDM) features, in 2D, for a batch.

For each ROI pixel of binned grey level :math:`i`, :math:`\bar{A}` is the mean grey level of
its *valid* neighbours: the 8 in-plane neighbours at distance 1 (pyradiomics'
``distances=[1]``) that lie in the ROI. The pixel adds 1 to :math:`n_i` and
:math:`|i - \bar{A}|` to :math:`s_i`. A pixel with no valid neighbour still adds 1 to
:math:`n_i` and 0 to :math:`s_i`: that is what pyradiomics' C ``calculate_ngtdm`` does
(its docstring says such pixels are left out of :math:`N_{v,p}`; the code counts them, and
the values here follow the code). So :math:`N_{v,p} = \sum_i n_i = N_p`, :math:`p_i =
n_i / N_{v,p}`, and :math:`N_{g,p}` is the number of levels with :math:`p_i > 0`; levels
with :math:`n_i = 0` are dropped, as pyradiomics deletes them (every sum below runs over
present levels :math:`i, j` only).

======================================  =========================================================
Coarseness                              :math:`1 / \sum_i p_i s_i`; :math:`10^6` when the sum is 0
Contrast                                :math:`\frac{\sum_{i,j} p_i p_j (i-j)^2}{N_{g,p}(N_{g,p}-1)}
                                        \frac{\sum_i s_i}{N_{v,p}}`; 0 when :math:`N_{g,p} = 1`
Busyness                                :math:`\sum_i p_i s_i / \sum_{i,j} |i p_i - j p_j|`; 0 when
                                        the denominator is 0 (a single level)
Complexity                              :math:`\frac{1}{N_{v,p}} \sum_{i,j} |i-j|
                                        \frac{p_i s_i + p_j s_j}{p_i + p_j}`
Strength                                :math:`\sum_{i,j} (p_i + p_j)(i-j)^2 / \sum_i s_i`; 0 when
                                        :math:`\sum_i s_i = 0`
======================================  =========================================================

An empty ROI is refused by :func:`compute`, as by pyradiomics; :func:`matrix` of one gives 0s.

The whole batch is done at once: neighbour sums and counts from 8 shifted views of the padded
binned image (flattened, so each is a contiguous shift), then a ``bincount`` /
``index_add`` over ``(roi, level)``. On the CPU (numpy, :func:`matrix_np`) the sum and the count
travel together as one integer per pixel, ``16 * level + 1`` in the ROI and 0 outside (a count
is at most 8 < 16), summed over the 3 x 3 window separably (rows, then columns: 4 additions
instead of 8) in the layout of :func:`~usher2.features.torchrad._zones.padded`; the window minus
the pixel is then ``16 * sum + count`` of its valid neighbours, unpacked at the ROI pixels alone.
The features are computed from ``(n, s)`` by the same code on both paths; the pairwise sums (all
but Coarseness) take ``O(B * Ng^2)`` memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from usher2.features.torchrad._zones import (
    as_float64,
    backend_of,
    check_binned,
    check_names,
    layout,
    levels_like,
    to_device,
)
from usher2.features.torchrad.gldm import level_dtype, shifted

__all__ = ["FEATURES", "compute", "matrix", "matrix_np"]

FEATURES: tuple[str, ...] = ("Coarseness", "Contrast", "Busyness", "Complexity", "Strength")


def matrix(binned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The NGTDM of every ROI: the pixel counts ``n_i`` and the difference sums ``s_i`` per level.

    Args:
        binned: ``(B, H, W)`` int64 binned grey levels, 1..Ng in the ROI and 0 outside (the ROI
            is ``binned > 0``).

    Returns:
        ``(n, s)``, each ``(B, Ng)`` float64 (``Ng`` the largest level in the batch); column
        ``i - 1`` holds level ``i``.

    Example:
        >>> b = torch.tensor([[[1, 3], [0, 0], [0, 2]]])  # the lone 2 has no valid neighbour
        >>> n, s = matrix(b)
        >>> n[0].tolist(), s[0].tolist()
        ([1.0, 1.0, 1.0], [2.0, 0.0, 2.0])
    """
    ng = max(int(binned.max()), 1) if binned.numel() else 1  # the matrices' shape: one host sync
    centre, nbs = shifted(binned.to(level_dtype(ng)))
    _, inside = shifted((binned > 0).to(torch.uint8))
    total = torch.zeros_like(centre)
    count = torch.zeros_like(inside[0])
    for nb, nm in zip(nbs, inside, strict=True):
        total += nb  # 0 outside the ROI
        count += nm
    diff = (centre.to(torch.float64) - total.to(torch.float64) / count.clamp(min=1)).abs()
    diff = torch.where(count > 0, diff, torch.zeros_like(diff))  # no valid neighbour: counted, adds 0
    # level 0 collects the pixels outside the ROI (and the padding); it is dropped below
    slot = centre.long()  # explicit cast: mixed-type arithmetic is a slow path
    slot += torch.arange(binned.shape[0], device=binned.device)[:, None] * (ng + 1)
    slot = slot.flatten()
    size = binned.shape[0] * (ng + 1)
    n = torch.bincount(slot, minlength=size).to(torch.float64)
    s = torch.zeros(size, dtype=torch.float64, device=binned.device).index_add_(0, slot, diff.flatten())
    return n.view(-1, ng + 1)[:, 1:], s.view(-1, ng + 1)[:, 1:]


def matrix_np(binned: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """:func:`matrix` on the CPU with numpy (see the module docstring).

    Raises:
        ValueError: A malformed ``binned`` (see :func:`~usher2.features.torchrad._zones.check_binned`).

    Example:
        >>> n, s = matrix_np(torch.tensor([[[1, 3], [0, 0], [0, 2]]]))  # as matrix()
        >>> n[0].tolist(), s[0].tolist()
        ([1.0, 1.0, 1.0], [2.0, 0.0, 2.0])
    """
    lay = layout(binned)
    flat, row, where, ng = lay.flat, lay.row, lay.where, lay.ng
    size = lay.shape[0] * ng
    # 16 * level + 1 summed over 9 pixels: uint16 up to level 454
    packed = np.multiply(flat, 16, dtype=np.uint16 if 9 * (16 * ng + 1) < 2**16 else np.int64)
    packed += flat > 0
    across = packed[:-2] + packed[1:-1]  # across[k]: pixels k, k + 1, k + 2
    across += packed[2:]
    window = across[: -2 * row] + across[row:-row]  # window[k]: the 3 x 3 around k + row + 1
    window += across[2 * row :]
    window -= packed[row + 1 : row + 1 + window.size]  # the pixel itself is no neighbour
    window = window[where - (row + 1)]  # the ROI pixels (never in the first or last row)
    count = window & 15
    level = flat[where].astype(np.float64)
    mean = level.copy()  # no valid neighbour: counted, adds 0 (|level - level|)
    np.divide(window >> 4, count, out=mean, where=count > 0)
    mean -= level
    n = np.bincount(lay.cell, minlength=size).reshape(-1, ng).astype(np.float64)
    s = np.bincount(lay.cell, weights=np.abs(mean, out=mean), minlength=size).reshape(-1, ng)
    return n, s


def _features(n: Any, s: Any) -> dict[str, Callable[[], Any]]:
    """pyradiomics' NGTDM formulas on ``(B, Ng)`` ``n_i`` and ``s_i`` (numpy or torch), each a thunk."""
    xp = np if isinstance(n, np.ndarray) else torch
    ivec = levels_like(n, n.shape[1])
    nvp = n.sum(1)
    nvp = xp.where(nvp == 0, 1.0, nvp)  # an empty ROI: no NaN
    p = n / nvp[:, None]
    present = as_float64(n > 0)
    pair = present[:, :, None] * present[:, None, :]  # 1 where both levels are present
    ngp = present.sum(1)
    ps = p * s
    sum_ps, sum_s = ps.sum(1), s.sum(1)
    dist = ivec[:, None] - ivec[None, :]

    def safe(num: Any, den: Any, zero: float = 0.0) -> Any:  # num / den, `zero` where den is 0
        return xp.where(den != 0, num / xp.where(den != 0, den, 1.0), zero)

    def contrast() -> Any:
        c = (p[:, :, None] * p[:, None, :] * dist**2).sum((1, 2)) * sum_s / nvp
        return safe(c, ngp * (ngp - 1))

    def busyness() -> Any:
        ip = ivec * p
        return safe(sum_ps, (xp.abs(ip[:, :, None] - ip[:, None, :]) * pair).sum((1, 2)))

    def complexity() -> Any:
        num = (ps[:, :, None] + ps[:, None, :]) * pair
        den = p[:, :, None] + p[:, None, :]
        den = xp.where(den == 0, 1.0, den)  # the numerator is 0 there too
        return (xp.abs(dist) * num / den).sum((1, 2)) / nvp

    def strength() -> Any:
        return safe(((p[:, :, None] + p[:, None, :]) * dist**2 * pair).sum((1, 2)), sum_s)

    return {
        "Coarseness": lambda: safe(1.0, sum_ps, 1e6),
        "Contrast": contrast,
        "Busyness": busyness,
        "Complexity": complexity,
        "Strength": strength,
    }


def compute(
    binned: torch.Tensor, names: Sequence[str] | None = None, *, backend: str = "auto"
) -> dict[str, torch.Tensor]:
    """pyradiomics' NGTDM features of every ROI of a batch.

    Args:
        binned: ``(B, H, W)`` int64 binned grey levels, 1..Ng inside the ROI and 0 outside (the
            ROI is ``binned > 0``; :mod:`usher2.features.torchrad.discretise`, or pyradiomics'
            ``binImage``); any device. ROIs of different sizes share the batch by zero padding;
            the results do not depend on it.
        names: the features to compute (default: all of :data:`FEATURES`).
        backend: ``"auto"`` (numpy on the CPU, torch elsewhere), ``"numpy"`` or ``"torch"``.

    Returns:
        ``{feature name: (B,) float64 tensor}`` in the order of ``names`` (or :data:`FEATURES`),
        on ``binned``'s device.

    Raises:
        ValueError: A malformed ``binned`` (see :func:`~usher2.features.torchrad._zones.check_binned`:
            not ``(B, H, W)`` integers, a negative level, an empty ROI), an unknown feature name or
            backend.

    Example:
        >>> b = torch.tensor([[[1, 1], [1, 2]]])  # s = (3 * 1/3, 1), p = (3/4, 1/4)
        >>> out = compute(b, ["Coarseness", "Strength"])
        >>> [round(v.item(), 4) for v in out.values()]
        [1.0, 1.0]
    """
    wanted = check_names(names, FEATURES, "ngtdm")
    if backend_of(binned, backend) == "numpy":
        n, s = matrix_np(binned)
    else:
        check_binned(binned)
        n, s = matrix(binned.long())
    thunks = _features(n, s)
    stack = np.stack if isinstance(n, np.ndarray) else torch.stack
    return to_device(wanted, stack([thunks[name]() for name in wanted]), binned.device)
