"""BI-RADS ultrasound-lexicon descriptors measured from a frame and its lesion mask.

pyradiomics describes a region by itself: its shape, its grey levels and its texture. Four of
the descriptors that the BI-RADS ultrasound lexicon asks a reader for need more than that,
and none of them has a pyradiomics feature:

* **orientation** (parallel or not parallel to the skin): 2D shape features are invariant to
  rotation, so they cannot tell a "taller-than-wide" lesion from a parallel one;
* **margin** (circumscribed, microlobulated, spiculated): lobulation and spiculation are
  properties of the boundary's radius as a function of angle, not of the area;
* **posterior features** (enhancement, shadowing): the brightness behind the lesion *relative
  to the tissue beside it at the same depth*;
* **echogenic halo** and **calcifications**: a bright rim just outside the margin, and bright
  point echoes inside it.

This module measures them with OpenCV and SciPy on the grey frame (0-255, log-compressed as
displayed). Distances are in mm when the pixel spacing is known; otherwise in units of one
twentieth of the lesion's equivalent diameter (so a 16 mm lesion's unit is 0.8 mm).

Columns (``radiomics_lexicon_<name>``, so the fusion core counts them as handcrafted
radiomics):

* shape: ``orientation_sin`` (|sin| of the long axis' angle to the skin, from second moments),
  ``axis_ratio`` (short / long axis), ``depth_width_ratio`` (bounding box),
  ``orientation_sin_elongated`` (``orientation_sin * (1 - axis_ratio)``);
* margin: the boundary radius r(phi) in the coordinates where the moment ellipse is the unit
  circle, sampled at 1 degree; a grey opening over 15 degrees removes spicules (narrow
  outward peaks) and keeps lobes. ``margin_lobulation`` is the amplitude of harmonics 3-7 of
  the opened profile, ``margin_undulation_high`` of harmonics 8-30; ``margin_spicule_mean``,
  ``margin_spicule_max`` and ``margin_spicule_count`` describe what the opening removed;
  ``margin_solidity`` is area / convex-hull area;
* echo pattern: ``echo_median`` and ``echo_vs_surround`` (the lesion's median grey level, and
  minus that of the tissue 5-8 units around it, above and beside the lesion);
  ``heterogeneity_std1``/``heterogeneity_std2`` (standard deviation inside the lesion after a
  Gaussian blur of 0.6 and 1.2 units, which removes most speckle and keeps coarser texture;
  bright points are clipped first);
* posterior features: ``posterior_contrast_near``, ``posterior_contrast_far`` and
  ``posterior_contrast``: mean grey level 3.5-7.5, 7.5-15 and 1-15 units below the lesion's
  bottom edge (as far as the frame reaches), under its thick part, minus the mean of the same
  rows beside the lesion (columns up to one lesion width to its left and right; for a lesion as
  wide as the frame, its thin ends too). The first two skip the
  halo; the last one exists for a lesion close to the frame's bottom too;
* halo: ``halo_0``, ``halo_1``, ``halo_2``, ``halo_3``: mean grey level in the bands 0-0.5,
  0.5-1, 1-2 and 2-3.5 units outside the margin (above and beside the lesion, not below it,
  where posterior features show) minus the mean of the 5-8 band;
* calcifications: ``calcification_count``, the connected spots inside the lesion where the
  scale-normalised Laplacian of Gaussian (sigma 0.15 mm, at least 0.8 px; 1 px when the
  spacing is unknown: about the point-spread function's axial size) exceeds 45 grey levels,
  and ``calcification_log_count`` (``log(1 + count)``). Point echoes are sharper than
  speckle, so a fine-scale blob detector separates them where a brightness threshold cannot.

A value that cannot be measured (no tissue beside or below the lesion, a lesion touching the
frame's edge) is NaN; the fusion core imputes it inside its folds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from usher2.io.errors import InputError

__all__ = ["LEXICON_COLUMNS", "PREFIX", "lexicon_features"]

PREFIX = "radiomics_lexicon_"
_NAMES = (
    "orientation_sin",
    "axis_ratio",
    "depth_width_ratio",
    "orientation_sin_elongated",
    "margin_lobulation",
    "margin_undulation_high",
    "margin_spicule_mean",
    "margin_spicule_max",
    "margin_spicule_count",
    "margin_solidity",
    "echo_median",
    "echo_vs_surround",
    "heterogeneity_std1",
    "heterogeneity_std2",
    "posterior_contrast_near",
    "posterior_contrast_far",
    "posterior_contrast",
    "halo_0",
    "halo_1",
    "halo_2",
    "halo_3",
    "calcification_count",
    "calcification_log_count",
)
LEXICON_COLUMNS: tuple[str, ...] = tuple(PREFIX + n for n in _NAMES)
#: The descriptors computed from the margin's radius profile (one group).
_PROFILE = frozenset(n for n in _NAMES if n.startswith("margin_") and n != "margin_solidity")
_HETEROGENEITY = frozenset(("heterogeneity_std1", "heterogeneity_std2"))
_POSTERIOR_BANDS = {
    "posterior_contrast_near": (3.5, 7.5),
    "posterior_contrast_far": (7.5, 15.0),
    "posterior_contrast": (1.0, 15.0),
}
_HALO_BANDS = {f"halo_{i}": band for i, band in enumerate(((0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 3.5)))}
_CALCIFICATION = frozenset(("calcification_count", "calcification_log_count"))
_BINS = 360


def _moments(mask: np.ndarray) -> tuple[float, float, float, float, float]:
    """Centroid (row, col), long-axis angle (radians, from the horizontal, rows down) and semi-axes."""
    m = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    cy, cx = m["m01"] / m["m00"], m["m10"] / m["m00"]
    mu20, mu02, mu11 = m["mu20"] / m["m00"], m["mu02"] / m["m00"], m["mu11"] / m["m00"]
    theta = 0.5 * math.atan2(2 * mu11, mu20 - mu02)
    common = math.sqrt(max(((mu20 - mu02) / 2) ** 2 + mu11**2, 0.0))
    lam1, lam2 = (mu20 + mu02) / 2 + common, (mu20 + mu02) / 2 - common
    # A uniform ellipse with semi-axes a >= b has second moments a^2/4 and b^2/4.
    return cy, cx, theta, 2 * math.sqrt(max(lam1, 1e-12)), 2 * math.sqrt(max(lam2, 1e-12))


def _radius_profile(mask: np.ndarray, cy: float, cx: float, theta: float, a: float, b: float) -> np.ndarray:
    """Boundary radius per degree in the coordinates where the moment ellipse is the unit circle."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = np.concatenate([c[:, 0, :] for c in contours]).astype(np.float64) + 0.5  # (x, y) pixel centres
    x, y = pts[:, 0] - cx - 0.5, pts[:, 1] - cy - 0.5
    u = (x * math.cos(theta) + y * math.sin(theta)) / a
    v = (-x * math.sin(theta) + y * math.cos(theta)) / b
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    idx = ((phi + math.pi) / (2 * math.pi) * _BINS).astype(int) % _BINS
    prof = np.full(_BINS, np.nan)
    np.fmax.at(prof, idx, rho)
    good = np.flatnonzero(np.isfinite(prof))
    if good.size < 8:
        return np.ones(_BINS)
    # Empty bins (a small lesion has fewer boundary pixels than degrees) are filled circularly.
    xs = np.concatenate([good - _BINS, good, good + _BINS])
    return np.interp(np.arange(_BINS), xs, np.tile(prof[good], 3))


def _harmonics(profile: np.ndarray, lo: int, hi: int) -> float:
    spec = np.abs(np.fft.rfft(profile)) * 2 / profile.size
    return float(np.sqrt(np.sum(spec[lo : hi + 1] ** 2)))


def _band_mean(img: np.ndarray, sel: np.ndarray) -> float:
    return float(img[sel].mean()) if sel.sum() >= 8 else math.nan


def _check_frame(pixels: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frame as float32 0-255 and the mask as bool, or ``InputError``."""
    img = np.asarray(pixels, dtype=np.float32)
    m = np.asarray(mask) > 0
    if img.ndim != 2 or img.shape != m.shape:
        raise InputError("frame", "a 2D frame and a mask of the same shape", f"{img.shape} and {m.shape}")
    if not m.any():
        raise InputError("mask", "a non-empty lesion mask", "an empty mask")
    if img.size and float(img.max()) <= 1.0:
        img = img * 255.0
    return img, m


def _unit(area: float, spacing: Any) -> float:
    """Pixels per distance unit: per mm, or per twentieth of the equivalent diameter without spacing."""
    if spacing is None:
        return math.sqrt(4 * area / math.pi) / 20.0
    sp = np.atleast_1d(np.asarray(spacing, dtype=float))
    unit = 1.0 / float(np.mean(sp))  # pixels per mm
    return max(unit, 1e-6)


def _shape_features(theta: float, a: float, b: float, box: tuple[int, int, int, int]) -> dict[str, float]:
    """Orientation and axis ratios; ``box`` is ``(y0, y1, x0, x1)``, ends exclusive."""
    y0, y1, x0, x1 = box
    axis_ratio = b / a
    return {
        "orientation_sin": abs(math.sin(theta)),
        "axis_ratio": axis_ratio,
        "depth_width_ratio": (y1 - y0) / (x1 - x0),
        "orientation_sin_elongated": abs(math.sin(theta)) * (1 - axis_ratio),
    }


def _margin_features(
    m: np.ndarray,
    moments: tuple[float, float, float, float, float],
    ys: np.ndarray,
    xs: np.ndarray,
    area: float,
    names: frozenset[str],
) -> dict[str, float]:
    """Lobulation, undulation, spicules (what a 15-degree grey opening removes) and solidity;
    only those of ``names`` (the radius profile is skipped when none of its five is asked for)."""
    out: dict[str, float] = {}
    if names & _PROFILE:
        prof = _radius_profile(m, *moments)
        k = 15
        wrapped = np.concatenate([prof[-k:], prof, prof[:k]])
        opened = ndimage.grey_opening(wrapped, size=k)[k:-k]
        spikes = prof - opened
        out["margin_lobulation"] = _harmonics(opened, 3, 7)
        out["margin_undulation_high"] = _harmonics(prof, 8, 30)
        out["margin_spicule_mean"] = float(spikes.mean())
        out["margin_spicule_max"] = float(spikes.max())
        lab, n_spikes = ndimage.label(np.concatenate([spikes, spikes[:1]]) > 0.08)
        if n_spikes and lab[0] and lab[-1] and lab[0] != lab[-1]:
            n_spikes -= 1  # a spicule across 0 degrees counts once
        out["margin_spicule_count"] = float(n_spikes)
    if "margin_solidity" in names:
        hull = cv2.convexHull(np.column_stack([xs, ys]).astype(np.int32))
        out["margin_solidity"] = area / max(float(cv2.contourArea(hull)) + 0.5 * len(hull), area)
    return out


def _band(around: np.ndarray, dist: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Pixels of ``around`` more than ``lo`` and at most ``hi`` units outside the margin."""
    return around & (dist > lo) & (dist <= hi)


def _echo_features(img: np.ndarray, m: np.ndarray, ref: float, unit: float, names: frozenset[str]) -> dict[str, float]:
    """Median echo, its contrast to the 5-8 band (``ref``) and the heterogeneity at two scales
    (only those of ``names``)."""
    inner = cv2.erode(m.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))) > 0
    if inner.sum() < 8:
        inner = m
    vals = img[inner]
    med = float(np.median(vals))
    out = {"echo_median": med, "echo_vs_surround": med - ref}
    if not names & _HETEROGENEITY:
        return out
    clip = np.minimum(img, np.percentile(vals, 95)) * m  # bright points clipped, outside zeroed
    for name, sigma in (("heterogeneity_std1", 0.6), ("heterogeneity_std2", 1.2)):
        if name not in names:
            continue
        s_px = max(sigma * unit, 0.5)
        # Normalised convolution: a blur of the lesion's own pixels only, taken where the lesion
        # is at least one sigma deep (so the margin does not count as texture).
        num = cv2.GaussianBlur(clip, (0, 0), s_px)
        den = cv2.GaussianBlur(m.astype(np.float32), (0, 0), s_px)
        deep = cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 5) > s_px
        if deep.sum() < 8:
            deep = inner
        local = num[deep] / np.maximum(den[deep], 1e-6)
        out[name] = float(local.std())
    return out


def _beside_columns(thick_cols: np.ndarray, x0: int, x1: int, w: int) -> np.ndarray:
    """Columns beside the lesion that posterior features compare with (see the module docstring)."""
    # Beside: columns within one lesion width to its left and right; when the lesion leaves fewer
    # than a quarter of its width there (as wide as the frame), also its thin ends (thickness
    # under a quarter of the greatest).
    width = x1 - x0
    near = np.zeros(w, bool)
    near[max(0, int(x0 - width)) : min(w, int(x1 + width))] = True
    lat = near & (thick_cols == 0)
    if lat.sum() < 0.25 * width:
        lat = near & (thick_cols < 0.25 * thick_cols.max())
    return lat


def _posterior_features(
    img: np.ndarray,
    m: np.ndarray,
    dist: np.ndarray,
    x0: int,
    x1: int,
    unit: float,
    names: frozenset[str],
) -> dict[str, float]:
    """Below the thick part of the lesion minus beside it, at the same depth, per depth band
    (the bands of ``names``)."""
    h, w = m.shape
    thick_cols = m.sum(axis=0)
    cols = np.flatnonzero(thick_cols >= 0.6 * thick_cols.max())
    bottom = (h - 1 - np.argmax(m[::-1], axis=0)).astype(float)
    lat = _beside_columns(thick_cols, x0, x1, w)
    out: dict[str, float] = {}
    for name, (lo, hi) in _POSTERIOR_BANDS.items():
        if name not in names:
            continue
        post = np.zeros_like(m)
        r_lo, r_hi = [], []
        for c in cols:
            a0, a1 = int(bottom[c] + lo * unit), int(bottom[c] + hi * unit)
            if a0 < h:
                post[a0 : min(a1, h), c] = True
                r_lo.append(a0)
                r_hi.append(min(a1, h))
        if not r_lo or post.sum() < 8:
            out[name] = math.nan
            continue
        beside = np.zeros_like(m)
        beside[int(np.median(r_lo)) : int(np.median(r_hi)), :] = True
        beside &= lat[None, :] & (dist > 1.0)
        out[name] = _band_mean(img, post) - _band_mean(img, beside)
    return out


def _calcification_features(img: np.ndarray, m: np.ndarray, unit: float, spacing: Any) -> dict[str, float]:
    """Sharp bright spots inside the lesion (blobs of the scale of the point-spread function)."""
    sigma = max(0.8, 0.15 * unit) if spacing is not None else 1.0
    blobs = -ndimage.gaussian_laplace(img, sigma) * sigma**2
    n_calc = int(ndimage.label(m & (blobs > 45.0))[1])
    return {"calcification_count": float(n_calc), "calcification_log_count": math.log1p(n_calc)}


def _names(columns: Iterable[str] | None) -> frozenset[str]:
    """The descriptor names of ``columns`` (None: all), or ``InputError`` naming an unknown one."""
    if columns is None:
        return frozenset(_NAMES)
    columns = list(columns)
    unknown = [c for c in columns if c not in LEXICON_COLUMNS]
    if unknown:
        raise InputError("lexicon columns", f"names from LEXICON_COLUMNS ({PREFIX}...)", f"{unknown[:3]}")
    return frozenset(c[len(PREFIX) :] for c in columns)


def lexicon_features(
    pixels: np.ndarray, mask: np.ndarray, spacing: Any = None, columns: Iterable[str] | None = None
) -> dict[str, float]:
    """The lexicon descriptors of one frame and lesion mask (see the module docstring).

    Args:
        pixels: ``(H, W)`` grey frame, 0-1 floats or 0-255.
        mask: ``(H, W)`` lesion mask (non-zero = lesion).
        spacing: Pixel spacing in mm (a number or ``(row, col)``); None: lesion-relative units.
        columns: Only these of :data:`LEXICON_COLUMNS` (what a model reads); the descriptors
            none of them needs are not computed (the blurs of the heterogeneity, the calcification
            blob filter, the margin profile...). Each value equals the full call's. None: all.

    Returns:
        ``{column: value}`` in :data:`LEXICON_COLUMNS` order.

    Raises:
        InputError: Shapes differ, the mask is empty, or ``columns`` names an unknown column.

    Example:
        >>> yy, xx = np.mgrid[:200, :200]
        >>> img = np.full((200, 200), 0.5, np.float32)
        >>> tall = ((yy - 100) / 40.0) ** 2 + ((xx - 100) / 20.0) ** 2 < 1
        >>> f = lexicon_features(img, tall, spacing=0.1)
        >>> round(f["radiomics_lexicon_orientation_sin"], 3), round(f["radiomics_lexicon_axis_ratio"], 2)
        (1.0, 0.5)
        >>> lexicon_features(img, tall, 0.1, ["radiomics_lexicon_axis_ratio"]) == {
        ...     "radiomics_lexicon_axis_ratio": f["radiomics_lexicon_axis_ratio"]}
        True
    """
    names = _names(columns)
    img, m = _check_frame(pixels, mask)
    h, w = m.shape
    area = float(m.sum())
    unit = _unit(area, spacing)
    out: dict[str, float] = {}

    moments = _moments(m)
    cy, _, theta, a, b = moments
    ys, xs = np.nonzero(m)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    out.update(_shape_features(theta, a, b, (y0, y1, x0, x1)))
    out.update(_margin_features(m, moments, ys, xs, area, names))

    # --- distance bands around the lesion (above and beside it only: below it are posterior features)
    ref = math.nan
    if names & {"echo_vs_surround", *_POSTERIOR_BANDS, *_HALO_BANDS}:
        dist = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 5) / unit
        rows = np.arange(h)[:, None]
        below = (rows > cy) & (np.arange(w)[None, :] >= x0) & (np.arange(w)[None, :] < x1)
        around = ~m & ~below
        if names & {"echo_vs_surround", *_HALO_BANDS}:
            ref = _band_mean(img, _band(around, dist, 5.0, 8.0))
        out.update(_posterior_features(img, m, dist, x0, x1, unit, names))
        for name, (lo, hi) in _HALO_BANDS.items():
            if name in names:
                out[name] = _band_mean(img, _band(around, dist, lo, hi)) - ref
    if names & {"echo_median", "echo_vs_surround", *_HETEROGENEITY}:
        out.update(_echo_features(img, m, ref, unit, names))
    if names & _CALCIFICATION:
        out.update(_calcification_features(img, m, unit, spacing))
    return {PREFIX + n: float(out[n]) for n in _NAMES if n in names}
