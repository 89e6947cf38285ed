"""pyradiomics' grey-level run length matrix (GLRLM) features for a batch of 2D ROIs.

A run is a maximal line of consecutive ROI pixels with the same binned grey level along one of
the 4 in-plane directions (0, 45, 90 and 135 degrees). A pixel outside the ROI ends a run (its
binned level is 0, which no ROI pixel has). pyradiomics builds one matrix ``P(i, j | angle)`` per
direction (``i`` the grey level, ``j`` the run length), computes every feature on each matrix
(normalised by that direction's number of runs ``Nr``) and returns the mean over the directions.
pyradiomics deletes the grey levels and run lengths that do not occur from its matrix: they hold
no runs, so every feature is the same with or without them (the matrices here keep those that
occur somewhere in the batch). The features are
:func:`~usher2.features.torchrad._zones.size_features`, shared with the GLSZM.

**CPU (numpy).** Every line of every direction of every ROI is laid end to end in one ``uint8``
stream, so one pass finds every run of the batch: in the CPU layout
(:func:`~usher2.features.torchrad._zones.padded`: each ROI block starts with a row of 0s and each
row with a 0) a step along a direction is a constant stride ``s`` of the flat block (1, ``W + 2``,
``W + 1``, ``W`` for 0, 45, 90, 135 degrees), and reading the block reshaped to ``(-1, s)``
column by column (a transposed copy) walks each of its lines in turn; wherever a line leaves the
block's rows it passes through a 0, so no run spans two lines. The stream holds ``(ROI,
direction)`` segments of one length ``L``; a run starts where the level changes and lasts until
the next change, so the change positions (one ``flatnonzero``) give every run's level, length and
``(ROI, direction) = start // L``, and one ``bincount`` gives all ``4 B`` matrices (the runs of 0s
fall in the dropped level 0).

**Other devices (torch).** :func:`runs`: each direction's lines as rows (the diagonals by
shearing the image), starts where the level differs from the previous pixel and ends where it
differs from the next; in line order the ``k``-th start and end belong to the same run.

pyradiomics' ``weightingNorm`` (off in usher2's settings) is not implemented: the features are
always the mean over the directions. Every feature agrees with pyradiomics to ~1e-15 relative.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from usher2.features.torchrad._zones import (
    backend_of,
    check_binned,
    check_names,
    compact,
    layout,
    size_features,
    size_matrix,
    to_device,
)

__all__ = ["FEATURES", "compute", "matrix_np", "runs"]

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

_ROW = {name: k for k, name in enumerate(FEATURES)}  # the row of size_features (GENERIC order)


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


def matrix_np(binned: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The run length matrices of every ROI and direction, on the CPU (see the module docstring).

    Args:
        binned: ``(B, H, W)`` integers, grey levels ``1..Ng`` inside the ROIs, 0 outside.

    Returns:
        ``(P, levels, lengths)``: ``(4 B, Nl, Ns)`` float64 run counts, row ``4 b + d`` for ROI
        ``b`` and direction ``d`` (as :func:`runs`), and the levels and lengths (float64) of the
        rows and columns: those occurring in the batch.

    Raises:
        ValueError: A malformed ``binned`` (see :func:`~usher2.features.torchrad._zones.check_binned`).

    Example:
        >>> p, levels, lengths = matrix_np(torch.tensor([[[1, 1], [2, 1]]]))
        >>> p[0].tolist(), levels.tolist(), lengths.tolist()  # 0 degrees: (1, 2), (2, 1), (1, 1)
        ([[1.0, 1.0], [1.0, 0.0]], [1.0, 2.0], [1.0, 2.0])
    """
    lay = layout(binned)
    (b, h, w), row, block, ng = lay.shape, lay.row, lay.block, lay.ng
    blocks = lay.flat[: b * block].reshape(b, block)
    strides = (row + 1, row, row - 1)  # 45, 90, 135 degrees (0 degrees: the block as it is)
    seg = max(-(-block // s) * s for s in strides)
    stream = np.zeros((b, 4, seg), blocks.dtype)
    stream[:, 0, :block] = blocks
    for d, s in zip((1, 2, 3), strides, strict=True):
        m = -(-block // s)
        src = stream[:, 0, : m * s]  # the block and 0s after it (seg >= m * s)
        stream[:, d, : m * s].reshape(b, s, m)[...] = src.reshape(b, m, s).transpose(0, 2, 1)  # views
    values = stream.reshape(-1)
    # run k starts at values[1 + start[k]]; values[0] is a 0, so every run of ROI pixels is there
    start = np.flatnonzero(values[1:] != values[:-1])
    level = values[1:][start]
    start = start.astype(np.int32)  # half the memory traffic of int64 in every pass below
    length = np.empty_like(start)
    np.subtract(start[1:], start[:-1], out=length[:-1])
    length[-1] = values.size - 1 - start[-1]
    top = max(h, w) + 1  # runs of 0s can be longer than any ROI's: clipped, then dropped with level 0
    np.minimum(length, np.int32(top), out=length)
    start += 1
    key = start // seg  # 4 * roi + direction
    key *= ng + 1
    key += level
    key *= top + 1
    key += length
    counts = np.bincount(key, minlength=4 * b * (ng + 1) * (top + 1)).reshape(4 * b, ng + 1, top + 1)
    p, levels, lengths = compact(counts)
    return p, levels.astype(np.float64), lengths.astype(np.float64)


def compute(
    binned: torch.Tensor, names: Sequence[str] | None = None, *, backend: str = "auto"
) -> dict[str, torch.Tensor]:
    """pyradiomics' GLRLM features of each ROI of a batch (the mean over the 4 directions).

    Args:
        binned: ``(B, H, W)`` int64, the discretised grey level ``1..Ng`` inside each ROI and 0
            outside (:mod:`usher2.features.torchrad.discretise`); any device.
        names: Features to compute (names in :data:`FEATURES`); ``None``: all.
        backend: ``"auto"`` (numpy on the CPU, torch elsewhere), ``"numpy"`` or ``"torch"``.

    Returns:
        ``{feature name: (B,) float64}`` on ``binned``'s device.

    Raises:
        ValueError: A malformed ``binned`` (see :func:`~usher2.features.torchrad._zones.check_binned`),
            an unknown feature name or backend.

    Example:
        >>> binned = torch.tensor([[[1, 1, 2], [1, 2, 2], [0, 0, 2]]])
        >>> out = compute(binned, ["RunPercentage", "GrayLevelNonUniformity"])
        >>> round(out["RunPercentage"].item(), 6), round(out["GrayLevelNonUniformity"].item(), 6)
        (0.714286, 2.55)
    """
    names = check_names(names, FEATURES, "glrlm")
    b = binned.shape[0]
    if backend_of(binned, backend) == "numpy":
        p, levels, lengths = matrix_np(binned)
    else:
        check_binned(binned)
        group, level, length = runs(binned.to(torch.int64))
        p, levels, lengths = size_matrix(group, level, length, 4 * b)
    rows = size_features(p, levels, lengths)[[_ROW[n] for n in names]]
    return to_device(names, rows.reshape(len(names), b, 4).sum(2) / 4, binned.device)
