"""pyradiomics' grey-level size zone matrix (GLSZM) features for a batch of 2D ROIs, in torch.

A zone is a connected set of ROI pixels with the same binned grey level; in 2D pyradiomics
connects a pixel to its 8 neighbours (its C extension uses every offset of the 3 x 3
neighbourhood; checked against pyradiomics on diagonal-only contacts in
``tests/features/torchrad/test_glszm.py``). ``P(i, j)`` counts the zones of grey level ``i`` and
area ``j``; unlike the GLRLM there are no directions, so the features come from one matrix per
ROI. pyradiomics deletes the grey levels and zone sizes that do not occur from its matrix: they
hold no zones, so no feature changes, and this module never builds them.

**Zones of the whole batch at once.** The pixels of all ROIs get one flat index; every pair of
8-neighbours with the same level (inside one ROI) is an edge. Union-find by hooking: each round
hooks the larger root of every edge whose ends have different roots onto the smaller one
(``scatter_reduce`` with ``amin``), then compresses the forest by pointer jumping
(``label = label[label]``) until every pixel points at its root. An edge whose ends share a root
keeps doing so, so each round only carries on the edges still joining two trees; a handful of
rounds suffices even for long, snaking zones. Zone areas are then a ``bincount`` of the roots.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from usher2.features.torchrad.glrlm import GENERIC, check_binned, check_names, size_features

__all__ = ["FEATURES", "compute", "zones"]

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

_TO_GENERIC = dict(zip(FEATURES, GENERIC, strict=True))
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


def compute(binned: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """pyradiomics' GLSZM features of each ROI of a batch.

    Args:
        binned: ``(B, H, W)`` int64, the discretised grey level ``1..Ng`` inside each ROI and 0
            outside (:mod:`usher2.features.torchrad.discretise`); any device.
        names: Features to compute (names in :data:`FEATURES`); ``None``: all.

    Returns:
        ``{feature name: (B,) float64}`` on ``binned``'s device.

    Raises:
        ValueError: A malformed ``binned`` (see :func:`~usher2.features.torchrad.glrlm.check_binned`)
            or an unknown feature name.

    Example:
        >>> binned = torch.tensor([[[1, 1, 2], [1, 2, 2], [0, 0, 2]]])
        >>> out = compute(binned, ["ZonePercentage", "LargeAreaEmphasis"])
        >>> round(out["ZonePercentage"].item(), 6), out["LargeAreaEmphasis"].item()
        (0.285714, 12.5)
    """
    names = check_names(names, FEATURES, "glszm")
    check_binned(binned)
    roi, level, area = zones(binned.to(torch.int64))
    generic = size_features(roi, level, area, binned.shape[0], [_TO_GENERIC[n] for n in names])
    return {n: generic[_TO_GENERIC[n]] for n in names}
