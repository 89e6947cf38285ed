"""pyradiomics' grey-level size zone matrix (GLSZM) features for a batch of 2D ROIs.

A zone is a connected set of ROI pixels with the same binned grey level; in 2D pyradiomics
connects a pixel to its 8 neighbours (its C extension uses every offset of the 3 x 3
neighbourhood; checked against pyradiomics on diagonal-only contacts in
``tests/features/torchrad/test_glszm.py``). ``P(i, j)`` counts the zones of grey level ``i`` and
area ``j``; unlike the GLRLM there are no directions, so the features
(:func:`~usher2.features.torchrad._zones.size_features`, shared with the GLRLM) come from one
matrix per ROI. pyradiomics deletes the grey levels and zone sizes that do not occur from its
matrix: they hold no zones, so no feature changes, and this module never builds them (the sizes
are ranked among those occurring in the batch: areas reach the ROI's size, distinct ones are few).

**CPU (numpy).** Each ROI's bounding box is labelled by scikit-image's ``label`` (8-connected
regions of equal value, 0 the background: a C union-find, one call per ROI); each label's area
is a ``bincount`` of the labels and its level a scatter of the pixels' levels.

**Other devices (torch)**, :func:`zone_labels`. The pixels of all ROIs get one flat index; every
pair of 8-neighbours with the same level (inside one ROI) is an edge. Union-find by hooking: each
round hooks the larger root of every edge whose ends have different roots onto the smaller one
(``scatter_reduce`` with ``amin``), then compresses the forest by pointer jumping
(``label = label[label]``) until every pixel points at its root. An edge whose ends share a root
keeps doing so, so each round only carries on the edges still joining two trees; a handful of
rounds suffices even for long, snaking zones. Zone areas are then a ``bincount`` of the roots.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from skimage.measure import label as _label

from usher2.features.torchrad._zones import (
    backend_of,
    check_binned,
    check_names,
    layout,
    size_features,
    size_matrix,
    to_device,
)

__all__ = ["FEATURES", "compute", "zones", "zones_np"]

#: pyradiomics' enabled-by-default GLSZM features, in pyradiomics' order.
FEATURES: tuple[str, ...] = (
    "SmallAreaEmphasis",
    "LargeAreaEmphasis",
    "GrayLevelNonUniformity",
    "GrayLevelNonUniformityNormalized",
    "SizeZoneNonUniformity",
    "SizeZoneNonUniformityNormalized",
    "ZonePercentage",
    "GrayLevelVariance",
    "ZoneVariance",
    "ZoneEntropy",
    "LowGrayLevelZoneEmphasis",
    "HighGrayLevelZoneEmphasis",
    "SmallAreaLowGrayLevelEmphasis",
    "SmallAreaHighGrayLevelEmphasis",
    "LargeAreaLowGrayLevelEmphasis",
    "LargeAreaHighGrayLevelEmphasis",
)

_ROW = {name: k for k, name in enumerate(FEATURES)}  # the row of size_features (GENERIC order)
#: Half of the 8-neighbourhood, ``(dy, dx)``: the other half gives the same edges reversed.
_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _compress(label: torch.Tensor) -> torch.Tensor:
    """Point every node of the forest at its root (pointer jumping)."""
    while True:
        nxt = label[label]
        if torch.equal(nxt, label):
            return label
        label = nxt


def zone_labels(binned: torch.Tensor) -> torch.Tensor:
    """Label the 8-connected equal-level zones of every ROI of a batch.

    Args:
        binned: ``(B, H, W)`` int64, grey levels ``1..Ng`` inside the ROIs, 0 outside.

    Returns:
        ``(B, H, W)`` int64: for each ROI pixel the flat index (into ``binned.flatten()``) of the
        first pixel of its zone; pixels outside the ROIs keep their own index.

    Example:
        >>> zone_labels(torch.tensor([[[1, 2, 0], [2, 1, 1]]])).tolist()
        [[[0, 1, 2], [1, 0, 0]]]
    """
    b, h, w = binned.shape
    idx = torch.arange(binned.numel(), device=binned.device).reshape(b, h, w)
    src, dst = [], []
    for dy, dx in _OFFSETS:
        # pixel (y, x) and its neighbour (y + dy, x + dx), both inside the image
        x0, x1 = max(0, -dx), w - max(0, dx)
        here = binned[:, : h - dy, x0:x1]
        there = binned[:, dy:, x0 + dx : x1 + dx]
        same = (here > 0) & (here == there)
        src.append(idx[:, : h - dy, x0:x1][same])
        dst.append(idx[:, dy:, x0 + dx : x1 + dx][same])
    a, c = torch.cat(src), torch.cat(dst)
    label = idx.flatten().clone()
    while a.numel():
        ra, rc = label[a], label[c]
        open_ = ra != rc
        a, c, ra, rc = a[open_], c[open_], ra[open_], rc[open_]
        if not a.numel():
            break
        label.scatter_reduce_(0, torch.maximum(ra, rc), torch.minimum(ra, rc), reduce="amin")
        label = _compress(label)
    return label.reshape(b, h, w)


def zones(binned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every zone of the batch.

    Args:
        binned: ``(B, H, W)`` int64, grey levels ``1..Ng`` inside the ROIs, 0 outside.

    Returns:
        ``(roi, level, area)``, each ``(n_zones,)`` int64.

    Example:
        >>> roi, level, area = zones(torch.tensor([[[1, 2, 0], [2, 1, 1]]]))
        >>> roi.tolist(), level.tolist(), area.tolist()
        ([0, 0], [1, 2], [3, 2])
    """
    h, w = binned.shape[1:]
    flat = binned.flatten()
    label = zone_labels(binned).flatten()
    inside = flat > 0
    area = torch.bincount(label[inside], minlength=flat.numel())
    root = (area > 0).nonzero().flatten()
    return torch.div(root, h * w, rounding_mode="floor"), flat[root], area[root]


def zones_np(binned: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every zone of the batch, on the CPU (scikit-image's labelling of each ROI's bounding box).

    Args:
        binned: ``(B, H, W)`` integers, grey levels ``1..Ng`` inside the ROIs, 0 outside.

    Returns:
        ``(roi, level, area)``, each ``(n_zones,)`` int64, the zones of each ROI in label order.

    Raises:
        ValueError: A malformed ``binned`` (see :func:`~usher2.features.torchrad._zones.check_binned`).

    Example:
        >>> roi, level, area = zones_np(torch.tensor([[[1, 2, 0], [2, 1, 1]]]))
        >>> roi.tolist(), level.tolist(), area.tolist()
        ([0, 0], [1, 2], [3, 2])
    """
    lay = layout(binned)
    (b, h, _), row = lay.shape, lay.row
    blocks = lay.flat[: b * lay.block].reshape(b, h + 1, row)
    inside = blocks != 0
    rows, cols = inside.any(2), inside.any(1)
    rois, found, areas = [], [], []
    for k in range(b):
        ys, xs = np.flatnonzero(rows[k]), np.flatnonzero(cols[k])
        box = blocks[k, ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
        labels, n = _label(box, background=0, return_num=True, connectivity=2)
        flat = labels.reshape(-1)
        level = np.zeros(n + 1, box.dtype)
        level[flat] = box.reshape(-1)  # every pixel of a zone writes the same level
        found.append(level[1:])
        areas.append(np.bincount(flat, minlength=n + 1)[1:])
        rois.append(np.full(n, k))
    return np.concatenate(rois), np.concatenate(found).astype(np.int64), np.concatenate(areas)


def compute(
    binned: torch.Tensor, names: Sequence[str] | None = None, *, backend: str = "auto"
) -> dict[str, torch.Tensor]:
    """pyradiomics' GLSZM features of each ROI of a batch.

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
        >>> out = compute(binned, ["ZonePercentage", "LargeAreaEmphasis"])
        >>> round(out["ZonePercentage"].item(), 6), out["LargeAreaEmphasis"].item()
        (0.285714, 12.5)
    """
    names = check_names(names, FEATURES, "glszm")
    if backend_of(binned, backend) == "numpy":
        roi, level, area = zones_np(binned)
    else:
        check_binned(binned)
        roi, level, area = zones(binned.to(torch.int64))
    p, levels, areas = size_matrix(roi, level, area, binned.shape[0])
    return to_device(names, size_features(p, levels, areas)[[_ROW[n] for n in names]], binned.device)
