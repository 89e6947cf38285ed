"""What the four neighbourhood classes (GLRLM, GLSZM, GLDM, NGTDM) share: the input checks, the CPU
layout of a batch, and the features of a "count of (grey level, size) items" matrix.

**Two paths.** Each class computes on the CPU with numpy (a few large vectorised passes over a
compact ``uint8`` copy of the batch, with scikit-image's C labelling for the GLSZM zones: on
small arrays numpy's per-call overhead is a half to a third of torch's) and on any other device
with torch. :func:`backend_of` picks one; both are tested equal.

**The CPU layout** (:func:`layout`, :func:`padded`): the ``(B, H, W)`` batch becomes ``B``
blocks of ``(H + 1)`` rows of ``W + 1`` values, the first row and the first column of each block
0 (outside any ROI), followed by two rows of 0s, all in one flat array. The 0s separate the ROIs
and the rows, so on the flat array the 8 neighbours of a pixel are the constant shifts
``dy * (W + 1) + dx`` (:data:`OFFSETS`), one contiguous view each; no neighbour of an ROI pixel
falls off the array. The engine hands every class of an image type the same tensor, so the
layout of the last batch (checked, copied, its ROI pixels found) is kept for the next class.

**Size-zone features** (:func:`size_features`): pyradiomics' GLRLM and GLSZM formulas are the
same on their matrices ``P(i, j)`` (runs or zones of level ``i`` and size ``j``). With ``N`` the
number of items of a matrix and ``Np = sum P(i, j) j`` its pixels: the emphases are
``sum P f(i) g(j) / N``, all eight from one matrix product ``w_i^T P w_j``; the
non-uniformities ``sum_i (sum_j P)^2 / N`` (normalised: ``/ N^2``) and alike for ``j``; the
percentage ``N / Np``; the variances ``sum p (x - mu)^2`` with ``p`` a marginal over ``N``; the
entropy ``-sum p log2(p + eps)`` with ``p = P / N``. pyradiomics drops the levels and sizes that
do not occur; the matrices here keep only the levels and sizes occurring somewhere in the batch
(:func:`compact`): the others hold no item, so no feature changes and the matrices stay small.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch

__all__ = [
    "EPS",
    "GENERIC",
    "OFFSETS",
    "Layout",
    "as_float64",
    "backend_of",
    "check_binned",
    "check_names",
    "compact",
    "layout",
    "levels_like",
    "padded",
    "size_features",
    "size_matrix",
    "to_device",
]

#: numpy.spacing(1), the epsilon pyradiomics adds inside the entropy's logarithm.
EPS = 2.220446049250313e-16
#: The 8 neighbours ``(dy, dx)``, in pyradiomics' angle order (both directions of each).
OFFSETS: tuple[tuple[int, int], ...] = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
#: The generic names :func:`size_features` computes (GLRLM's "run" / "short run" are GLSZM's
#: "zone" / "small area"); each class maps its own names onto these, in the same order.
GENERIC: tuple[str, ...] = (
    "SmallEmphasis",
    "LargeEmphasis",
    "GrayLevelNonUniformity",
    "GrayLevelNonUniformityNormalized",
    "SizeNonUniformity",
    "SizeNonUniformityNormalized",
    "Percentage",
    "GrayLevelVariance",
    "SizeVariance",
    "Entropy",
    "LowGrayLevelEmphasis",
    "HighGrayLevelEmphasis",
    "SmallLowGrayLevelEmphasis",
    "SmallHighGrayLevelEmphasis",
    "LargeLowGrayLevelEmphasis",
    "LargeHighGrayLevelEmphasis",
)
_BACKENDS = ("auto", "numpy", "torch")


def check_names(names: Sequence[str] | None, features: tuple[str, ...], module: str) -> tuple[str, ...]:
    """The requested feature names, checked against a module's ``FEATURES``.

    Args:
        names: Names to compute; ``None``: all of ``features``.
        features: The names the module computes.
        module: The module's name, for the error message.

    Returns:
        The names to compute, in the order given.

    Raises:
        ValueError: A name the module does not compute (the message lists those it does).

    Example:
        >>> check_names(["RunEntropy"], ("RunEntropy", "RunVariance"), "glrlm")
        ('RunEntropy',)
    """
    if names is None:
        return features
    names = tuple(names)
    unknown = [n for n in names if n not in features]
    if unknown:
        raise ValueError(f"unknown {module} feature(s) {unknown}; available: {list(features)}")
    return names


def check_binned(binned: torch.Tensor) -> int:
    """Check a batch of discretised images as the texture classes take it; its largest level.

    Args:
        binned: ``(B, H, W)`` integers, the grey level ``1..Ng`` inside each ROI and 0 outside.

    Returns:
        ``Ng``, the largest level in the batch (one host sync on an accelerator).

    Raises:
        ValueError: Not ``(B, H, W)``, not an integer tensor, a negative level, or an ROI with no
            pixel (pyradiomics refuses an empty mask; its features would be 0/0).

    Example:
        >>> check_binned(torch.ones(1, 2, 2, dtype=torch.int64))
        1
    """
    if binned.ndim != 3:
        raise ValueError(f"binned must be (B, H, W), got shape {tuple(binned.shape)}")
    if binned.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"binned must hold integer grey levels (int64), got {binned.dtype}")
    if not binned.numel():
        raise ValueError(f"binned holds no pixel (shape {tuple(binned.shape)}); drop empty batches")
    if binned.device.type == "cpu":  # numpy's reductions cost a third of torch's on one thread
        flat = binned.numpy().reshape(binned.shape[0], -1)
        top = flat.max(1)
        lo = int(flat.min())
    else:
        top = binned.flatten(1).amax(1)
        lo = int(binned.min())
    hi = int(top.max())
    empty = _flatnonzero(top == 0).tolist()
    if lo < 0:
        raise ValueError("binned holds a negative grey level; ROI pixels are 1..Ng and pixels outside are 0")
    if empty:
        raise ValueError(
            f"ROI(s) {empty} of the batch have no pixel (binned is 0 everywhere); "
            "drop them before computing texture features"
        )
    return hi


def backend_of(binned: torch.Tensor, backend: str) -> str:
    """``"numpy"`` or ``"torch"``: the path a class computes ``binned`` with.

    Args:
        binned: The batch.
        backend: ``"auto"`` (numpy on the CPU, torch on any other device), ``"numpy"`` or
            ``"torch"``.

    Raises:
        ValueError: Another ``backend``.

    Example:
        >>> backend_of(torch.ones(1, 1, 1), "auto")
        'numpy'
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {list(_BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "numpy" if binned.device.type == "cpu" else "torch"
    return backend


def to_device(names: Sequence[str], values: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """``{name: (B,) float64 tensor on device}`` from the ``(len(names), B)`` values (numpy or
    torch): one conversion for all the features (each is a row, a view of one tensor).

    Example:
        >>> to_device(["a", "b"], np.array([[1.0], [2.0]]), torch.device("cpu"))["b"]
        tensor([2.], dtype=torch.float64)
    """
    values = torch.as_tensor(values, dtype=torch.float64).to(device)
    return dict(zip(names, values, strict=True))


@dataclass(frozen=True)
class Layout:
    """A batch in the CPU layout (see the module docstring); its arrays are read-only.

    Attributes:
        flat: The flat ``(B * (H + 1) + 2) * (W + 1)`` levels (``uint8`` up to level 255, else
            ``uint16`` or ``int32``), 0 outside the ROIs; ROI ``b``'s pixel ``(y, x)`` is at
            ``b * block + (y + 1) * row + x + 1``.
        where: ``(n,)`` int64, the positions of the ROI pixels in ``flat``, ascending.
        shape: ``(B, H, W)``.
        row: ``W + 1``.
        block: ``(H + 1) * (W + 1)``.
        ng: The largest level of the batch.
    """

    flat: np.ndarray
    where: np.ndarray
    shape: tuple[int, int, int]
    row: int
    block: int
    ng: int

    @functools.cached_property
    def cell(self) -> np.ndarray:
        """``(n,)`` int64, each ROI pixel's ``roi * ng + level - 1``: its cell in ``(B, ng)``."""
        cell = self.where // self.block
        cell *= self.ng
        cell += self.flat[self.where]
        cell -= 1
        cell.flags.writeable = False
        return cell


#: The last batch laid out: ``(weak reference, version, layout)``; the classes of one image type
#: all take the same tensor, and each would otherwise check, copy and scan it again.
_last: tuple[Any, int, Layout] | None = None


def layout(binned: torch.Tensor) -> Layout:
    """Check a batch (:func:`check_binned`) and lay it out for the CPU path.

    The last batch's layout is kept and returned again for the same tensor, as long as torch has
    not seen it change (its version counter); a tensor changed behind torch's back (through a
    numpy view) must be passed as a new tensor.

    Args:
        binned: ``(B, H, W)`` integers, grey levels ``1..Ng`` inside each ROI and 0 outside.

    Raises:
        ValueError: See :func:`check_binned`.

    Example:
        >>> lay = layout(torch.tensor([[[1, 2]], [[3, 0]]]))
        >>> lay.flat.reshape(-1, lay.row).tolist(), lay.where.tolist(), lay.ng
        ([[0, 0, 0], [0, 1, 2], [0, 0, 0], [0, 3, 0], [0, 0, 0], [0, 0, 0]], [4, 5, 10], 3)
    """
    global _last
    last = _last
    if last is not None and last[0]() is binned and last[1] == binned._version:
        return last[2]
    ng = check_binned(binned)
    flat, row, block = padded(binned, ng)
    where = np.flatnonzero(flat)
    flat.flags.writeable = where.flags.writeable = False
    out = Layout(flat, where, tuple(binned.shape), row, block, ng)
    _last = (weakref.ref(binned), binned._version, out)
    return out


def padded(binned: torch.Tensor, ng: int) -> tuple[np.ndarray, int, int]:
    """The CPU layout of a batch (see the module docstring) in the narrowest dtype for ``0..ng``.

    Args:
        binned: ``(B, H, W)`` levels ``0..ng`` (0 outside the ROIs).
        ng: The largest level.

    Returns:
        ``(flat, row, block)``: the flat array, its row length ``W + 1`` and each ROI's block
        length ``(H + 1) * (W + 1)`` (as :class:`Layout`).

    Example:
        >>> flat, row, block = padded(torch.tensor([[[1, 2]], [[300, 0]]]), 300)
        >>> flat.reshape(-1, row).tolist()[:4], flat.dtype
        ([[0, 0, 0], [0, 1, 2], [0, 0, 0], [0, 300, 0]], dtype('uint16'))
    """
    b, h, w = binned.shape
    dtype = next(t for t in (np.uint8, np.uint16, np.int32) if ng <= np.iinfo(t).max)
    row, block = w + 1, (h + 1) * (w + 1)
    flat = np.zeros(b * block + 2 * row, dtype)
    np.copyto(flat[: b * block].reshape(b, h + 1, row)[:, 1:, 1:], binned.cpu().numpy(), casting="unsafe")
    return flat, row, block


def _xp(a: Any) -> ModuleType:
    return np if isinstance(a, np.ndarray) else torch


def _flatnonzero(a: Any) -> Any:
    return np.flatnonzero(a) if isinstance(a, np.ndarray) else a.flatten().nonzero().flatten()


def as_float64(a: Any) -> Any:
    """``a`` as float64, numpy or torch as it comes.

    Example:
        >>> as_float64(np.array([True, False])).tolist()
        [1.0, 0.0]
    """
    return a.astype(np.float64) if isinstance(a, np.ndarray) else a.to(torch.float64)


def levels_like(p: Any, n: int) -> Any:
    """``1.0, 2.0, ..., n`` (float64), numpy or torch (on ``p``'s device) as ``p``.

    Example:
        >>> levels_like(torch.zeros(1), 3).tolist()
        [1.0, 2.0, 3.0]
    """
    if isinstance(p, np.ndarray):
        return np.arange(1, n + 1, dtype=np.float64)
    return torch.arange(1, n + 1, dtype=torch.float64, device=p.device)


def compact(counts: Any) -> tuple[Any, Any, Any]:
    """Drop the levels and sizes no matrix of the batch holds.

    Args:
        counts: ``(G, L, S)`` integer counts of the items of level ``l`` and size (or size rank)
            ``s`` (numpy or torch); row 0 and column 0 are dropped (no item has level or size 0).

    Returns:
        ``(P, levels, sizes)``: ``(G, Nl, Ns)`` float64 counts, and the ``Nl`` rows and ``Ns``
        columns of ``counts`` they keep (ascending integers).

    Example:
        >>> p, levels, sizes = compact(np.array([[[0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]]))
        >>> p.tolist(), levels.tolist(), sizes.tolist()
        ([[[2.0, 0.0], [0.0, 1.0]]], [1, 3], [1, 3])
    """
    total = counts.sum(0)[1:, 1:]
    levels = _flatnonzero(total.sum(1)) + 1
    sizes = _flatnonzero(total.sum(0)) + 1
    return as_float64(counts[:, levels[:, None], sizes[None, :]]), levels, sizes


def size_matrix(group: Any, level: Any, size: Any, n_groups: int) -> tuple[Any, Any, Any]:
    """The matrices ``P(i, j)`` of a list of items (runs, zones), one per group, compacted.

    Args:
        group: ``(n,)`` integers, each item's matrix ``0..n_groups - 1`` (numpy or torch).
        level: ``(n,)`` integers, each item's grey level ``i >= 1``.
        size: ``(n,)`` integers, each item's size ``j >= 1``.
        n_groups: The number of matrices.

    Returns:
        ``(P, levels, sizes)``: ``(G, Nl, Ns)`` float64 counts and the levels and sizes of its
        rows and columns (float64), those occurring in the batch.

    Example:
        >>> p, levels, sizes = size_matrix(np.array([0, 0, 0]), np.array([1, 1, 2]), np.array([1, 9, 9]), 1)
        >>> p.tolist(), levels.tolist(), sizes.tolist()
        ([[[1.0, 1.0], [0.0, 1.0]]], [1.0, 2.0], [1.0, 9.0])
    """
    xp = _xp(group)
    # the sizes are ranked first: zone areas reach the ROI's size, the distinct ones are few
    present = xp.bincount(size) > 0
    rank = xp.cumsum(present, 0)  # 1-based: column 0 stays empty, as compact() wants
    ns = int(rank[-1]) + 1
    nl = int(level.max()) + 1
    key = (group * nl + level) * ns + rank[size]
    counts = xp.bincount(key, minlength=n_groups * nl * ns).reshape(n_groups, nl, ns)
    p, levels, ranks = compact(counts)
    return p, as_float64(levels), as_float64(_flatnonzero(present)[ranks - 1])


def size_features(p: Any, levels: Any, sizes: Any) -> Any:
    """Every GLRLM/GLSZM feature (see the module docstring) of matrices ``P(i, j)``.

    Args:
        p: ``(G, Nl, Ns)`` float64 item counts (numpy or torch); every matrix holds an item.
        levels: ``(Nl,)`` float64, the grey level of each row.
        sizes: ``(Ns,)`` float64, the size of each column.

    Returns:
        ``(len(GENERIC), G)`` float64, the features in :data:`GENERIC` order (numpy or torch as
        ``p``). All of them take a few dozen vectorised ops on small arrays: cheaper than
        choosing.

    Example:
        >>> p = np.array([[[1.0, 1.0], [0.0, 1.0]]])  # level 1: sizes 1 and 2; level 2: size 2
        >>> size_features(p, np.array([1.0, 2.0]), np.array([1.0, 2.0]))[GENERIC.index("Percentage")]
        array([0.6])
    """
    xp = _xp(p)
    g, nl, ns = p.shape
    pg, ps = p.sum(2), p.sum(1)  # items per level, per size
    n = pg.sum(1)
    wi = xp.stack([levels**0, levels**-2, levels**2])  # (3, Nl)
    wj = xp.stack([sizes**0, sizes**-2, sizes**2, sizes], 1)  # (Ns, 4)
    # every emphasis sum_ij P f(i) g(j) / N at once, (G, 3, 4): f = 1, i^-2, i^2; g = 1, j^-2, j^2, j
    e = wi @ (p.reshape(g * nl, ns) @ wj).reshape(g, nl, 4) / n[:, None, None]
    pgn, psn = pg / n[:, None], ps / n[:, None]
    gln, snu = (pg * pgn).sum(1), (ps * psn).sum(1)  # sum (P_i)^2 / N
    var_i = (pgn * (levels - (pgn @ levels)[:, None]) ** 2).sum(1)
    var_j = (psn * (sizes - (psn @ sizes)[:, None]) ** 2).sum(1)
    q = p.reshape(g, -1) / n[:, None]
    entropy = -(q * xp.log2(q + EPS)).sum(1)
    return xp.stack(
        [
            e[:, 0, 1],
            e[:, 0, 2],
            gln,
            gln / n,
            snu,
            snu / n,
            1.0 / e[:, 0, 3],  # N / Np
            var_i,
            var_j,
            entropy,
            e[:, 1, 0],
            e[:, 2, 0],
            e[:, 1, 1],
            e[:, 2, 1],
            e[:, 1, 2],
            e[:, 2, 2],
        ]
    )
