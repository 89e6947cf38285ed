r"""Segmentation metrics for binary masks, and bootstrap summaries over a test set.

Masks are ``(H, W)`` or ``(D, H, W)`` arrays of bool or 0/1 values; ``pred`` and ``truth`` must
have one shape. ``spacing`` gives the physical size of a pixel along each axis (``(row, col)``
or ``(z, row, col)``, e.g. mm); without it distances and areas are in pixels.

==========  =========================================================================================
metric      definition
==========  =========================================================================================
Dice        :math:`2|P \cap T| / (|P| + |T|)`.
IoU         :math:`|P \cap T| / |P \cup T|` (Jaccard).
surface     the mask minus its binary erosion by a full 3 × 3 (3 × 3 × 3) element; the array
            border counts as outside, so mask pixels on the border are surface pixels.
HD95        MONAI convention: the larger of the two directed 95th percentiles (linear
            interpolation) of the surface-to-nearest-surface distances.
Hausdorff   the largest surface-to-nearest-surface distance in either direction.
ASSD        the mean of both directed distance arrays pooled (average symmetric surface distance).
==========  =========================================================================================

Empty masks: two empty masks agree perfectly (Dice = IoU = 1, distances 0). When exactly one is
empty, Dice = IoU = 0 and the distance metrics are undefined and returned as ``nan``;
:func:`summarize` skips such values and counts them in ``n_undefined``.

Example:
    >>> import numpy as np
    >>> a = np.zeros((8, 8), bool); a[2:6, 2:6] = True
    >>> b = np.roll(a, 1, axis=1)
    >>> dice(a, b), iou(a, b), hausdorff(a, b)
    (0.75, 0.6, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.ndimage import binary_erosion, distance_transform_edt

__all__ = [
    "assd",
    "bootstrap_ci",
    "dice",
    "hausdorff",
    "hd95",
    "iou",
    "segmentation_metrics",
    "summarize",
    "surface_distances",
]

DEFAULT_METRICS: tuple[str, ...] = ("dice", "iou", "hd95", "assd")


def _mask(name: str, mask: object) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2D (H, W) or 3D (D, H, W) mask, got shape {m.shape}")
    if m.dtype != bool:
        bad = ~np.isin(m, (0, 1))  # NaN is caught here too: it equals neither 0 nor 1
        if bad.any():
            examples = np.unique(m[bad])[:3].tolist()
            raise ValueError(f"{name} must be binary (bool or 0/1 values), got values such as {examples}")
    return m.astype(bool)


def _pair(pred: object, truth: object) -> tuple[np.ndarray, np.ndarray]:
    p, t = _mask("pred", pred), _mask("truth", truth)
    if p.shape != t.shape:
        raise ValueError(f"pred and truth shapes differ: {p.shape} vs {t.shape}")
    return p, t


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    s = np.asarray(spacing, dtype=np.float64)
    if s.shape != (ndim,):
        raise ValueError(f"spacing must have one entry per mask axis ({ndim}), got {np.asarray(spacing).tolist()}")
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"spacing must be finite and > 0 along every axis, got {s.tolist()}")
    return tuple(float(v) for v in s)


def _surface(m: np.ndarray) -> np.ndarray:
    # border_value=0 treats everything outside the array as background, so a mask touching the
    # image edge keeps that edge as surface instead of leaving the contour open.
    structure = np.ones((3,) * m.ndim, dtype=bool)
    return m & ~binary_erosion(m, structure=structure, border_value=0)


def _directed(src: np.ndarray, dst: np.ndarray, spacing: tuple[float, ...] | None) -> np.ndarray:
    if not src.any():
        return np.zeros(0)
    if not dst.any():
        return np.full(int(src.sum()), np.inf)  # no surface to reach
    return distance_transform_edt(~dst, sampling=spacing)[src].astype(np.float64)


def _distances(p: np.ndarray, t: np.ndarray, spacing: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    sp = _spacing(spacing, p.ndim)
    surf_p, surf_t = _surface(p), _surface(t)
    return _directed(surf_p, surf_t, sp), _directed(surf_t, surf_p, sp)


def _overlap(p: np.ndarray, t: np.ndarray) -> tuple[int, int, int]:
    return int(np.count_nonzero(p & t)), int(np.count_nonzero(p)), int(np.count_nonzero(t))


def _dice(p: np.ndarray, t: np.ndarray) -> float:
    inter, n_p, n_t = _overlap(p, t)
    return 1.0 if n_p + n_t == 0 else 2.0 * inter / (n_p + n_t)


def _iou(p: np.ndarray, t: np.ndarray) -> float:
    inter, n_p, n_t = _overlap(p, t)
    union = n_p + n_t - inter
    return 1.0 if union == 0 else inter / union


def _distance_metrics(p: np.ndarray, t: np.ndarray, spacing: Sequence[float] | None) -> dict[str, float]:
    # One pass computes all three so segmentation_metrics runs the distance transforms once.
    d_pt, d_tp = _distances(p, t, spacing)  # validates spacing even for empty masks
    has_p, has_t = bool(p.any()), bool(t.any())
    if not (has_p or has_t):
        return {"hd95": 0.0, "hausdorff": 0.0, "assd": 0.0}
    if has_p != has_t:
        return {"hd95": float("nan"), "hausdorff": float("nan"), "assd": float("nan")}
    return {
        "hd95": float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))),
        "hausdorff": float(max(d_pt.max(), d_tp.max())),
        "assd": float(np.concatenate([d_pt, d_tp]).mean()),
    }


def _distance_metric(pred: object, truth: object, spacing: Sequence[float] | None, name: str) -> float:
    """One of :func:`_distance_metrics` (``hd95``, ``hausdorff`` or ``assd``) of a checked mask pair."""
    p, t = _pair(pred, truth)
    return _distance_metrics(p, t, spacing)[name]


def dice(pred: object, truth: object) -> float:
    """Dice coefficient ``2|P ∩ T| / (|P| + |T|)``.

    Args:
        pred: ``(H, W)`` or ``(D, H, W)`` predicted mask (bool or 0/1).
        truth: Reference mask of the same shape.

    Returns:
        Dice in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.

    Example:
        >>> import numpy as np
        >>> dice(np.array([[1, 1, 0, 0]]), np.array([[0, 1, 1, 0]]))
        0.5
    """
    return _dice(*_pair(pred, truth))


def iou(pred: object, truth: object) -> float:
    """Intersection over union (Jaccard index) ``|P ∩ T| / |P ∪ T|``.

    Args:
        pred: ``(H, W)`` or ``(D, H, W)`` predicted mask (bool or 0/1).
        truth: Reference mask of the same shape.

    Returns:
        IoU in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.

    Example:
        >>> import numpy as np
        >>> round(iou(np.array([[1, 1, 0, 0]]), np.array([[0, 1, 1, 0]])), 6)
        0.333333
    """
    return _iou(*_pair(pred, truth))


def surface_distances(
    pred: object, truth: object, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed distances between the surfaces of two masks.

    Args:
        pred: ``(H, W)`` or ``(D, H, W)`` predicted mask (bool or 0/1).
        truth: Reference mask of the same shape.
        spacing: Physical pixel size per axis (one positive value per axis); pixels when None.

    Returns:
        ``(d_pred_to_truth, d_truth_to_pred)``: ``(N_pred,)`` distances from each surface pixel
        of ``pred`` to the nearest surface pixel of ``truth``, and ``(N_truth,)`` the reverse,
        in row-major pixel order. An empty mask has no surface (a ``(0,)`` array); distances
        towards an empty mask are ``inf``.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((5, 8), bool); a[1:4, 1:4] = True
        >>> d_ab, d_ba = surface_distances(a, np.roll(a, 2, axis=1), spacing=(1.0, 0.5))
        >>> d_ab.tolist()
        [1.0, 0.5, 0.0, 1.0, 0.0, 1.0, 0.5, 0.0]
    """
    p, t = _pair(pred, truth)
    return _distances(p, t, spacing)


def hd95(pred: object, truth: object, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile Hausdorff distance (MONAI convention: max of the directed percentiles).

    Args:
        pred: ``(H, W)`` or ``(D, H, W)`` predicted mask (bool or 0/1).
        truth: Reference mask of the same shape.
        spacing: Physical pixel size per axis; pixels when None.

    Returns:
        HD95 in the units of ``spacing``; 0.0 when both masks are empty, ``nan`` (undefined)
        when exactly one is.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((6, 10), bool); a[1:5, 1:5] = True
        >>> hd95(a, np.roll(a, 3, axis=1))
        3.0
    """
    return _distance_metric(pred, truth, spacing, "hd95")


def hausdorff(pred: object, truth: object, spacing: Sequence[float] | None = None) -> float:
    """Hausdorff distance: the largest directed surface distance in either direction.

    Args:
        pred: ``(H, W)`` or ``(D, H, W)`` predicted mask (bool or 0/1).
        truth: Reference mask of the same shape.
        spacing: Physical pixel size per axis; pixels when None.

    Returns:
        The distance in the units of ``spacing``; 0.0 when both masks are empty, ``nan`` when
        exactly one is.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((6, 10), bool); a[1:5, 1:5] = True
        >>> hausdorff(a, np.roll(a, 3, axis=1), spacing=(1.0, 0.5))
        1.5
    """
    return _distance_metric(pred, truth, spacing, "hausdorff")


def assd(pred: object, truth: object, spacing: Sequence[float] | None = None) -> float:
    """Average symmetric surface distance: the mean of both directed distance arrays pooled.

    Args:
        pred: ``(H, W)`` or ``(D, H, W)`` predicted mask (bool or 0/1).
        truth: Reference mask of the same shape.
        spacing: Physical pixel size per axis; pixels when None.

    Returns:
        ASSD in the units of ``spacing``; 0.0 when both masks are empty, ``nan`` when exactly
        one is.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((5, 8), bool); a[1:4, 1:4] = True
        >>> assd(a, a)
        0.0
    """
    return _distance_metric(pred, truth, spacing, "assd")


def segmentation_metrics(pred: object, truth: object, spacing: Sequence[float] | None = None) -> dict[str, float]:
    """All overlap and distance metrics of one mask pair, plus both areas.

    Args:
        pred: ``(H, W)`` or ``(D, H, W)`` predicted mask (bool or 0/1).
        truth: Reference mask of the same shape.
        spacing: Physical pixel size per axis; pixels when None.

    Returns:
        Keys ``dice``, ``iou``, ``hd95``, ``assd`` (see the module table and empty-mask
        conventions), ``pred_area`` and ``truth_area``: pixel counts, or areas (volumes in 3D)
        in physical units, the count times the product of ``spacing``.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((8, 8), bool); a[2:6, 2:6] = True
        >>> m = segmentation_metrics(a, a, spacing=(0.5, 0.5))
        >>> m["dice"], m["hd95"], m["truth_area"]
        (1.0, 0.0, 4.0)
    """
    p, t = _pair(pred, truth)
    sp = _spacing(spacing, p.ndim)
    unit = 1.0 if sp is None else float(np.prod(sp))
    dist = _distance_metrics(p, t, sp)
    return {
        "dice": _dice(p, t),
        "iou": _iou(p, t),
        "hd95": dist["hd95"],
        "assd": dist["assd"],
        "pred_area": float(np.count_nonzero(p)) * unit,
        "truth_area": float(np.count_nonzero(t)) * unit,
    }


def _group_codes(groups: object, n: int) -> np.ndarray:
    g = np.asarray(groups, dtype=object)
    if g.shape != (n,):
        raise ValueError(f"groups must be a 1D array of one label per value ({n},), got shape {g.shape}")
    codes, _ = pd.factorize(g)
    if (codes < 0).any():
        raise ValueError(f"groups has {int((codes < 0).sum())} missing labels (None/NaN); expected a label per value")
    return codes


def bootstrap_ci(
    values: object,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    groups: object | None = None,
) -> tuple[float, float, float]:
    """Mean of the finite values and its percentile-bootstrap confidence interval.

    Non-finite values (undefined metrics) are skipped. With ``groups`` (e.g. patient ids) the
    bootstrap resamples whole groups with replacement (cluster bootstrap) and takes the mean
    over all rows drawn: frames of one patient are correlated, and resampling them one by one
    would give too narrow an interval.

    Args:
        values: ``(N,)`` per-case values; NaN/inf are skipped.
        n_boot: Number of bootstrap resamples.
        alpha: Two-sided miss rate: the interval spans the ``alpha/2`` to ``1 - alpha/2``
            percentiles of the resampled means.
        seed: Seed of ``numpy.random.default_rng``; equal seeds give equal intervals.
        groups: Optional ``(N,)`` group labels (any hashable values).

    Returns:
        ``(mean, ci_low, ci_high)``.

    Raises:
        ValueError: When no value is finite, or on a bad argument.

    Example:
        >>> bootstrap_ci([0.5, 0.5, float("nan"), 0.5])
        (0.5, 0.5, 0.5)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be a 1D array, got shape {v.shape}")
    if not (isinstance(n_boot, int | np.integer) and n_boot >= 1):
        raise ValueError(f"n_boot must be an integer >= 1, got {n_boot!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    codes = None if groups is None else _group_codes(groups, v.size)
    keep = np.isfinite(v)
    if not keep.any():
        raise ValueError(f"values has no finite entry (got {v.size} values, all NaN/inf); the mean is undefined")
    v = v[keep]
    mean = float(np.mean(v))
    rng = np.random.default_rng(seed)
    if codes is None:
        units, sizes = v, None
    else:
        # Groups whose values were all NaN drop out: renumber the remaining ones densely.
        _, c = np.unique(codes[keep], return_inverse=True)
        units, sizes = np.bincount(c, weights=v), np.bincount(c).astype(np.float64)
    n = units.size
    # Chunks keep the (resamples x n) index array near 32 MB however many values there are.
    chunk = max(1, 2**22 // n)
    boot = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        if sizes is None:
            boot[start:stop] = units[idx].mean(axis=1)
        else:
            boot[start:stop] = units[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    lo, hi = np.percentile(boot, [100.0 * alpha / 2, 100.0 * (1 - alpha / 2)])
    return mean, float(lo), float(hi)


def summarize(
    rows: list[dict[str, float]] | pd.DataFrame,
    metrics: Sequence[str] = DEFAULT_METRICS,
    groups: str | object | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Mean and bootstrap CI of each metric over a test set, one row per metric.

    Args:
        rows: Per-case metrics, e.g. a list of :func:`segmentation_metrics` dicts, or a DataFrame.
        metrics: Names of the columns to summarise.
        groups: Optional ``(N,)`` group labels (e.g. patient ids) for a cluster bootstrap, or the
            name of a column of ``rows`` holding them.
        n_boot: Number of bootstrap resamples.
        seed: Seed of the bootstrap; every metric uses the same one.
        alpha: Two-sided miss rate of the interval.

    Returns:
        DataFrame with columns ``metric``, ``mean``, ``ci_low``, ``ci_high``, ``n`` (finite values)
        and ``n_undefined`` (NaN/inf values, e.g. HD95 with exactly one empty mask). A metric with
        no finite value gets NaN mean and interval.

    Example:
        >>> rows = [{"dice": 0.5, "hd95": 2.0}, {"dice": 0.5, "hd95": float("nan")}]
        >>> summarize(rows, metrics=("dice", "hd95"), n_boot=10).to_dict("records")[1]
        {'metric': 'hd95', 'mean': 2.0, 'ci_low': 2.0, 'ci_high': 2.0, 'n': 1, 'n_undefined': 1}
    """
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if isinstance(groups, str):
        if groups not in df.columns:
            raise ValueError(f"groups column {groups!r} not in rows; columns are {list(df.columns)}")
        groups = df[groups].to_numpy()
    out = []
    for name in metrics:
        if name not in df.columns:
            raise ValueError(f"metrics names {name!r}, which is not a column of rows; columns are {list(df.columns)}")
        v = pd.to_numeric(df[name], errors="raise").to_numpy(dtype=np.float64)
        n = int(np.isfinite(v).sum())
        if n:
            mean, lo, hi = bootstrap_ci(v, n_boot=n_boot, alpha=alpha, seed=seed, groups=groups)
        else:
            mean = lo = hi = float("nan")
        out.append({"metric": name, "mean": mean, "ci_low": lo, "ci_high": hi, "n": n, "n_undefined": v.size - n})
    return pd.DataFrame(out, columns=["metric", "mean", "ci_low", "ci_high", "n", "n_undefined"])
