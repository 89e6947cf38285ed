"""pyradiomics' grey-level run length matrix (GLRLM) features for a batch of 2D ROIs, in torch.

A run is a maximal line of consecutive ROI pixels with the same binned grey level along one of
the 4 in-plane directions (0, 45, 90 and 135 degrees). A pixel outside the ROI ends a run (its
binned level is 0, which no ROI pixel has). pyradiomics builds one matrix ``P(i, j | angle)`` per
direction (``i`` the grey level, ``j`` the run length), computes every feature on each matrix
(normalised by that direction's number of runs ``Nr``) and returns the mean over the directions.
pyradiomics deletes the grey levels and run lengths that do not occur from its matrix: they hold
no runs, so every feature is the same with or without them, and this module never builds the
empty rows and columns at all.

Runs are found with vectorised ops, with no loop over the ROIs: each direction's lines are laid
out as rows (the diagonals by shearing the image), a run starts where the level differs from the
previous pixel on its line and ends where it differs from the next, and, read in line order, the
``k``-th start and the ``k``-th end belong to the same run. One ``bincount`` then gathers the
runs into the non-empty cells of the (ROI and direction, level, length) matrices, and every
feature is a weighted sum over those cells or over their level and length marginals
(``scatter_add``). Every feature agrees with pyradiomics to ~1e-15 relative: none is numerically
unstable on a ROI pyradiomics accepts. pyradiomics' ``weightingNorm`` (off in usher2's settings)
is not implemented: the features are always the mean over the directions.

:func:`size_features` (the features of any "count of (grey level, size) items" matrix) is shared
with :mod:`usher2.features.torchrad.glszm`, whose zones take the place of runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["FEATURES", "compute", "size_features"]

#: pyradiomics' enabled-by-default GLRLM features, in pyradiomics' order.
FEATURES: tuple[str, ...] = (
    "ShortRunEmphasis",
    "LongRunEmphasis",
    "GrayLevelNonUniformity",
    "GrayLevelNonUniformityNormalized",
    "RunLengthNonUniformity",
    "RunLengthNonUniformityNormalized",
    "RunPercentage",
    "GrayLevelVariance",
    "RunVariance",
    "RunEntropy",
    "LowGrayLevelRunEmphasis",
    "HighGrayLevelRunEmphasis",
    "ShortRunLowGrayLevelEmphasis",
    "ShortRunHighGrayLevelEmphasis",
    "LongRunLowGrayLevelEmphasis",
    "LongRunHighGrayLevelEmphasis",
)

#: The generic names :func:`size_features` computes, in the order of :data:`FEATURES` (GLRLM's
#: "run" is GLSZM's "zone", GLRLM's "short run" GLSZM's "small area").
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

_TO_GENERIC = dict(zip(FEATURES, GENERIC, strict=True))
#: numpy.spacing(1), the epsilon pyradiomics adds inside the entropy's logarithm.
_EPS = 2.220446049250313e-16


def check_names(names: Sequence[str] | None, features: tuple[str, ...], module: str) -> tuple[str, ...]:
    """The requested feature names, checked against a module's :data:`FEATURES`.

    Args:
        names: Names to compute; ``None``: all of ``features``.
        features: The names the module computes.
        module: The module's name, for the error message.

    Returns:
        The names to compute, in the order given.

    Raises:
        ValueError: A name the module does not compute (the message lists those it does).

    Example:
        >>> check_names(["RunEntropy"], FEATURES, "glrlm")
        ('RunEntropy',)
    """
    if names is None:
        return features
    names = tuple(names)
    unknown = [n for n in names if n not in features]
    if unknown:
        raise ValueError(f"unknown {module} feature(s) {unknown}; available: {list(features)}")
    return names


def check_binned(binned: torch.Tensor) -> None:
    """Check a batch of discretised images as the texture classes take it.

    Args:
        binned: ``(B, H, W)`` int64, the grey level ``1..Ng`` inside each ROI and 0 outside.

    Raises:
        ValueError: Not ``(B, H, W)``, not an integer tensor, a negative level, or an ROI with no
            pixel (pyradiomics refuses an empty mask; its features would be 0/0).

    Example:
        >>> check_binned(torch.ones(1, 2, 2, dtype=torch.int64))
    """
    if binned.ndim != 3:
        raise ValueError(f"binned must be (B, H, W), got shape {tuple(binned.shape)}")
    if binned.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"binned must hold integer grey levels (int64), got {binned.dtype}")
    if binned.numel() and int(binned.min()) < 0:
        raise ValueError("binned holds a negative grey level; ROI pixels are 1..Ng and pixels outside are 0")
    empty = (binned.reshape(binned.shape[0], -1) > 0).sum(1) == 0
    if bool(empty.any()):
        raise ValueError(
            f"ROI(s) {empty.nonzero().flatten().tolist()} of the batch have no pixel (binned is 0 everywhere); "
            "drop them before computing texture features"
        )


def _compact(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct values (ascending) of a non-negative int64 tensor, and each value's rank."""
    present = torch.bincount(values) > 0
    rank = torch.cumsum(present, 0) - 1
    return present.nonzero().flatten(), rank[values]


def _cells(
    group: torch.Tensor, level: torch.Tensor, size: torch.Tensor, n_groups: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-empty cells ``(group, level, size)`` of the items' matrices and their counts.

    The levels and sizes are first ranked among those occurring in the batch (as pyradiomics
    drops the empty rows and columns), which keeps the matrices small: distinct sizes are at most
    ``sqrt(2 * pixels)``, since their sum cannot exceed the number of pixels.

    Returns:
        ``(group, level rank, size rank, levels, sizes, count)``: per cell its group, the rank of
        its level in ``levels`` and of its size in ``sizes`` (the distinct values, ascending, in
        the batch) and its count (float64).
    """
    levels, li = _compact(level)
    sizes, si = _compact(size)
    nl, ns = len(levels), len(sizes)
    key = (group * nl + li) * ns + si
    span = n_groups * nl * ns
    if span <= max(1 << 22, 4 * key.numel()):  # a dense histogram: much faster than sorting
        counts = torch.bincount(key, minlength=span)
        key = counts.nonzero().flatten()
        counts = counts[key]
    else:
        key, counts = torch.unique(key, return_counts=True)
    return key // (nl * ns), key // ns % nl, key % ns, levels, sizes, counts.to(torch.float64)


def size_features(
    group: torch.Tensor, level: torch.Tensor, size: torch.Tensor, n_groups: int, names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Features of the matrices ``P(i, j)`` counting items (runs, zones) of grey level ``i`` and
    size ``j``, one matrix per group, given the list of the items.

    pyradiomics' formulas (its ``glrlm.py``/``glszm.py``), with ``N`` the number of items of the
    group and ``Np = sum_items j`` (its number of pixels): the emphases are
    ``sum_items f(i, j) / N``, the non-uniformities ``sum_i (sum_j P)^2 / N`` (normalised: ``/ N^2``),
    the percentage ``N / Np``, the variances ``sum p (i - mu)^2`` with ``p = P / N``, and the
    entropy ``-sum p log2(p + eps)``.

    Args:
        group: ``(n,)`` int64, the group (matrix) of each item, ``0..n_groups - 1``.
        level: ``(n,)`` int64, each item's grey level ``i >= 1``.
        size: ``(n,)`` int64, each item's size ``j >= 1`` (run length, zone area).
        n_groups: The number of groups; every group must hold at least one item.
        names: The generic names (:data:`GENERIC`) to compute.

    Returns:
        ``{generic name: (n_groups,) float64}``.

    Example:
        >>> g = torch.tensor([0, 0, 0]); i = torch.tensor([1, 1, 2]); j = torch.tensor([1, 2, 2])
        >>> size_features(g, i, j, 1, ["Percentage", "SmallEmphasis"])["Percentage"]
        tensor([0.6000], dtype=torch.float64)
    """
    dt = torch.float64
    dev = group.device
    g, li, si, levels, sizes, c = _cells(group, level, size, n_groups)
    nl, ns = len(levels), len(sizes)
    ivec, jvec = levels.to(dt), sizes.to(dt)

    def per_group(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n_groups, dtype=dt, device=dev).scatter_add_(0, g, values)

    def marginal(rank: torch.Tensor, width: int) -> torch.Tensor:
        # items per (group, level) or per (group, size): pyradiomics' pg and pr/ps
        flat = torch.zeros(n_groups * width, dtype=dt, device=dev).scatter_add_(0, g * width + rank, c)
        return flat.view(n_groups, width)

    n = per_group(c)
    i2, j2 = (ivec * ivec)[li], (jvec * jvec)[si]
    weights = {
        "SmallEmphasis": lambda: 1.0 / j2,
        "LargeEmphasis": lambda: j2,
        "LowGrayLevelEmphasis": lambda: 1.0 / i2,
        "HighGrayLevelEmphasis": lambda: i2,
        "SmallLowGrayLevelEmphasis": lambda: 1.0 / (i2 * j2),
        "SmallHighGrayLevelEmphasis": lambda: i2 / j2,
        "LargeLowGrayLevelEmphasis": lambda: j2 / i2,
        "LargeHighGrayLevelEmphasis": lambda: i2 * j2,
    }
    out: dict[str, torch.Tensor] = {}
    for name in names:
        if name in weights:
            out[name] = per_group(c * weights[name]()) / n
        elif name == "Percentage":
            out[name] = n / per_group(c * jvec[si])
        elif name.startswith(("GrayLevelNonUniformity", "SizeNonUniformity")):
            total = ((marginal(li, nl) if name.startswith("Gray") else marginal(si, ns)) ** 2).sum(1)
            out[name] = total / n**2 if name.endswith("Normalized") else total / n
        elif name in ("GrayLevelVariance", "SizeVariance"):
            p, v = (marginal(li, nl), ivec) if name == "GrayLevelVariance" else (marginal(si, ns), jvec)
            p = p / n[:, None]
            mu = (p * v).sum(1, keepdim=True)
            out[name] = (p * (v - mu) ** 2).sum(1)
        elif name == "Entropy":
            p = c / n[g]
            out[name] = -per_group(p * torch.log2(p + _EPS))
        else:  # pragma: no cover - names are checked by the callers
            raise ValueError(f"unknown feature {name!r}; available: {list(GENERIC)}")
    return out


def _direction_lines(binned: torch.Tensor, angle: int) -> torch.Tensor:
    """The ``(B, H, W)`` batch's lines along one direction as the rows of ``(B, lines, length)``,
    with zeros (outside any ROI) filling the sheared diagonals' ends."""
    b, h, w = binned.shape
    if angle == 0:  # 0 degrees: along x
        return binned
    if angle == 2:  # 90 degrees: along y
        return binned.transpose(1, 2).contiguous()
    yy, xx = torch.meshgrid(torch.arange(h, device=binned.device), torch.arange(w, device=binned.device), indexing="ij")
    # (y, x) and (y + 1, x + 1) share column x - y + h - 1; (y, x) and (y + 1, x - 1) share x + y
    cols = xx - yy + (h - 1) if angle == 1 else xx + yy
    sheared = torch.zeros(b, h, w + h - 1, dtype=binned.dtype, device=binned.device)
    sheared[:, yy, cols] = binned
    return sheared.transpose(1, 2).contiguous()


def runs(binned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every run of the batch along the 4 in-plane directions.

    Args:
        binned: ``(B, H, W)`` int64, grey levels ``1..Ng`` inside the ROIs, 0 outside.

    Returns:
        ``(group, level, length)``, each ``(n_runs,)`` int64, with ``group = 4 * roi + direction``;
        the directions, as ``(row, column)`` steps: 0 ``(0, 1)``, 1 ``(1, 1)``, 2 ``(1, 0)``,
        3 ``(1, -1)``.

    Example:
        >>> group, level, length = runs(torch.tensor([[[1, 1], [2, 1]]]))
        >>> [(i, j) for d, i, j in zip(group.tolist(), level.tolist(), length.tolist()) if d == 0]
        [(1, 2), (2, 1), (1, 1)]
        >>> torch.bincount(group).tolist()  # runs per direction
        [3, 3, 3, 4]
    """
    groups, levels, lengths = [], [], []
    for angle in range(4):
        lines = _direction_lines(binned, angle)
        per_roi = lines.shape[1] * lines.shape[2]
        inside = lines > 0
        change = lines[..., 1:] != lines[..., :-1]
        # runs are disjoint and lie on one line, so in line order the k-th start and end pair up
        starts = (inside & torch.nn.functional.pad(change, (1, 0), value=True)).flatten().nonzero().flatten()
        ends = (inside & torch.nn.functional.pad(change, (0, 1), value=True)).flatten().nonzero().flatten()
        groups.append(4 * torch.div(starts, per_roi, rounding_mode="floor") + angle)
        levels.append(lines.flatten()[starts])
        lengths.append(ends - starts + 1)
    return torch.cat(groups), torch.cat(levels).to(torch.int64), torch.cat(lengths)


def compute(binned: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """pyradiomics' GLRLM features of each ROI of a batch (the mean over the 4 directions).

    Args:
        binned: ``(B, H, W)`` int64, the discretised grey level ``1..Ng`` inside each ROI and 0
            outside (:mod:`usher2.features.torchrad.discretise`); any device.
        names: Features to compute (names in :data:`FEATURES`); ``None``: all.

    Returns:
        ``{feature name: (B,) float64}`` on ``binned``'s device.

    Raises:
        ValueError: A malformed ``binned`` (see :func:`check_binned`) or an unknown feature name.

    Example:
        >>> binned = torch.tensor([[[1, 1, 2], [1, 2, 2], [0, 0, 2]]])
        >>> out = compute(binned, ["RunPercentage", "GrayLevelNonUniformity"])
        >>> round(out["RunPercentage"].item(), 6), round(out["GrayLevelNonUniformity"].item(), 6)
        (0.714286, 2.55)
    """
    names = check_names(names, FEATURES, "glrlm")
    check_binned(binned)
    b = binned.shape[0]
    group, level, length = runs(binned.to(torch.int64))
    generic = size_features(group, level, length, 4 * b, [_TO_GENERIC[n] for n in names])
    return {n: generic[_TO_GENERIC[n]].reshape(b, 4).mean(1) for n in names}
