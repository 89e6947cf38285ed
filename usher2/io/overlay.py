"""Scan area and burned-in overlays: find the ultrasound region, detect text, calipers and UI graphics.

Clinical ultrasound frames carry marks the scanner burned into the pixels: text labels
("MAMA ESQUERDA QSE"), caliper crosses (``+``, ``x``) with their numbers, depth ticks, grey-scale
bars and logos. They are thin (1-3 px strokes), brighter than the tissue around them, and have
shapes that speckle does not: vertical strokes (speckle is stretched laterally, so tall thin bright
runs are rare in tissue), crosses with dark gaps between the arms, and rows of equal-height strokes.

The detector works on thin-structure top-hats:

* ``V``: white top-hat with a horizontal line (keeps bright structures narrower than 9 px
  horizontally, i.e. vertical strokes); ``T``: top-hat with a 7x7 square (any thin bright mark).
* calipers: a cross response, the darker of the four arms minus the brightest gap between them,
  for ``+`` and ``x``; a blob (specular echo) has bright gaps and scores ~0.
* text: vertical strokes 5-24 px tall, grouped into rows of at least three that share a baseline.
* graphics: long vertical lines (>= 26 px); on the scan area's side rims (12 px), tall strokes
  and crosses (depth-scale numerals and diamonds, focus markers).

Each found mark is grown to its full glyph with the lower ``T`` threshold, then dilated by one
pixel so inpainting also covers the blurred rim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from usher2.io.errors import InputError

__all__ = ["OverlayResult", "detect_overlays", "find_scan_area", "inpaint_overlays"]

# Thresholds in grey levels of an 8-bit frame (the frames these marks come from are 8-bit).
_STROKE_HI = 60  # a vertical stroke must reach this top-hat somewhere ...
_STROKE_LO = 30  # ... and is traced down to this level (hysteresis keeps grey text whole)
_GLYPH_LO = 25  # top-hat level that grows a found mark to its full glyph
_CROSS_MIN = 22  # cross response: weakest arm minus brightest gap
_STROKE_MIN_H, _STROKE_MAX_H, _STROKE_MAX_W = 5, 24, 5
_LONG_LINE_H = 26  # a vertical bright run this tall is a bar, ruler or line, not tissue
_GLYPH_MIN_H, _GLYPH_MAX_H = 6, 24  # cap heights of burned-in text
_TEXT_MIN_STEMS = 3
_RIM = 12  # px from the scan area's side edge where depth scales and markers sit
_STEM_MAX_W = 4
_BLACK = 8 / 255  # below this a pixel is "black" (border/panel background) for the scan area


@dataclass(frozen=True, eq=False)
class OverlayResult:
    """Overlay masks of one frame.

    Attributes:
        mask: ``(H, W)`` bool, union of the three kinds below (what to inpaint).
        text: ``(H, W)`` bool, burned-in text rows.
        calipers: ``(H, W)`` bool, caliper crosses.
        graphics: ``(H, W)`` bool, other UI marks (bars, rulers, lines, edge marks).
        n_text: Number of text rows found.
        n_calipers: Number of caliper crosses found.
        n_graphics: Number of graphic marks found.

    Example:
        >>> import numpy as np
        >>> r = detect_overlays(np.full((64, 64), 0.3, np.float32))
        >>> r.has_overlay, r.n_calipers
        (False, 0)
    """

    mask: np.ndarray
    text: np.ndarray
    calipers: np.ndarray
    graphics: np.ndarray
    n_text: int
    n_calipers: int
    n_graphics: int

    @property
    def has_overlay(self) -> bool:
        """True when any overlay was found."""
        return bool(self.n_text or self.n_calipers or self.n_graphics)

    @property
    def fraction(self) -> float:
        """Fraction of the frame's pixels under the overlay mask."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def _check_pixels(pixels: object, name: str = "pixels") -> np.ndarray:
    """Return ``pixels`` as float32 ``(H, W)`` in [0, 1] or raise ``InputError`` naming what arrived."""
    if not isinstance(pixels, np.ndarray):
        raise InputError(name, "a numpy array (H, W) of float in [0, 1]", type(pixels).__name__)
    if pixels.ndim != 2:
        raise InputError(name, "a 2-D (H, W) array", f"shape {pixels.shape}", "convert RGB to grey first")
    if not np.issubdtype(pixels.dtype, np.floating):
        raise InputError(name, "a float array in [0, 1]", f"dtype {pixels.dtype}", "divide 8-bit data by 255")
    if min(pixels.shape) < 2:
        raise InputError(name, "an image of at least 2x2 pixels", f"shape {pixels.shape}")
    if not np.isfinite(pixels).all():
        raise InputError(name, "finite values", f"{int((~np.isfinite(pixels)).sum())} NaN/inf pixels")
    lo, hi = float(pixels.min()), float(pixels.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(name, "values in [0, 1]", f"range [{lo:.4g}, {hi:.4g}]", "rescale the frame")
    return pixels.astype(np.float32, copy=False)


def _check_mask(mask: object, shape: tuple[int, ...], name: str) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.shape != shape:
        got = getattr(mask, "shape", type(mask).__name__)
        raise InputError(name, f"a bool mask of the frame's shape {shape}", f"{got}")
    return mask.astype(bool, copy=False)


def _to_u8(pixels: np.ndarray) -> np.ndarray:
    return np.round(pixels * 255.0).astype(np.uint8)


def find_scan_area(pixels: np.ndarray) -> np.ndarray:
    """Find the ultrasound image region: no black borders, side UI panels or text bars.

    The scan area is the largest blob of non-black texture once thin marks are opened away;
    its convex hull is returned because linear (rectangle) and convex (fan) probes both give
    convex regions, and the hull closes dark shadows and cysts that touch its edge.

    Args:
        pixels: ``(H, W)`` float in [0, 1].

    Returns:
        ``(H, W)`` bool mask, True inside the scan area. All False for an all-black frame.

    Example:
        >>> import numpy as np
        >>> img = np.zeros((100, 120), np.float32)
        >>> img[10:90, 20:100] = 0.5
        >>> m = find_scan_area(img)
        >>> int(m.sum()), bool(m[50, 60]), bool(m[50, 5])
        (6400, True, False)
    """
    px = _check_pixels(pixels)
    h, w = px.shape
    # Speckle has isolated near-black pixels inside tissue; the local fraction of non-black
    # pixels separates tissue from true black background without a texture model.
    nonblack = (px > _BLACK).astype(np.float32)
    k = max(3, (min(h, w) // 40) | 1)
    frac = cv2.blur(nonblack, (k, k), borderType=cv2.BORDER_CONSTANT)
    region = (frac > 0.5).astype(np.uint8)
    # Opening detaches text and thin graphics in side panels from the scan area.
    ko = max(3, (min(h, w) // 25) | 1)
    opened = cv2.morphologyEx(region, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ko, ko)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if n <= 1:
        return np.zeros((h, w), bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    # Opening rounds the corners; growing back by the same element inside the unopened region
    # restores them without re-attaching what the opening cut off.
    body = cv2.dilate((labels == largest).astype(np.uint8), np.ones((ko, ko), np.uint8))
    contours, _ = cv2.findContours((body & (nonblack > 0)).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(contours))  # outer contours suffice and are ~100x fewer points
    out = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(out, hull, 1)
    return out.astype(bool)


def _mean_kernel(points: list[tuple[int, int]], size: int = 9) -> np.ndarray:
    """Mean over ``points`` given as (dy, dx) offsets from the centre of a ``size`` kernel."""
    k = np.zeros((size, size), np.float32)
    c = size // 2
    for dy, dx in points:
        k[c + dy, c + dx] = 1.0
    return k / len(points)


_REACH = (2, 3)  # arm samples, px from the centre: small GE crosses have arms of 3 px
_ARM_UP, _ARM_DOWN = (_mean_kernel([(-r, 0) for r in _REACH]), _mean_kernel([(r, 0) for r in _REACH]))
_ARM_LEFT, _ARM_RIGHT = (_mean_kernel([(0, -r) for r in _REACH]), _mean_kernel([(0, r) for r in _REACH]))
_QUADRANTS = [
    _mean_kernel([(sy * 2, sx * 2), (sy * 3, sx * 3), (sy * 2, sx * 3), (sy * 3, sx * 2)])
    for sy in (-1, 1)
    for sx in (-1, 1)
]
_AXIS_GAPS = [_mean_kernel([(sy * r, sx * r) for r in (2, 3, 4)]) for sy, sx in ((-1, 0), (1, 0), (0, -1), (0, 1))]
_DIAG = {(sy, sx): _mean_kernel([(sy * r, sx * r) for r in _REACH]) for sy in (-1, 1) for sx in (-1, 1)}


def _filt(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)


def _tophat(u8: np.ndarray, se: np.ndarray) -> np.ndarray:
    return cv2.morphologyEx(u8, cv2.MORPH_TOPHAT, se).astype(np.float32)


def _cross_response(img: np.ndarray, v_hat: np.ndarray, h_hat: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 cross score in grey levels: the weakest arm minus the brightest gap.

    Three scores, best taken: '+' and 'x' on the raw grey levels (a specular blob fills the
    gaps and scores ~0), and '+' on the directional top-hats, so that a cross drawn over a
    bright horizontal tissue line (bright gaps above and below on the raw image) still has dark
    gaps there: its vertical arms are read on ``v_hat``, horizontal arms on ``h_hat``, gaps on
    ``v_hat``.
    """
    raw_plus = np.minimum.reduce(
        [img, _filt(img, _ARM_UP), _filt(img, _ARM_DOWN), _filt(img, _ARM_LEFT), _filt(img, _ARM_RIGHT)]
    )
    raw_plus -= np.maximum.reduce([_filt(img, q) for q in _QUADRANTS])
    raw_x = np.minimum.reduce([img, *(_filt(img, k) for k in _DIAG.values())])
    raw_x -= np.maximum.reduce([_filt(img, k) for k in _AXIS_GAPS])
    hat_plus = np.minimum.reduce(
        [_filt(v_hat, _ARM_UP), _filt(v_hat, _ARM_DOWN), _filt(h_hat, _ARM_LEFT), _filt(h_hat, _ARM_RIGHT)]
    )
    hat_plus -= np.maximum.reduce([_filt(v_hat, q) for q in _QUADRANTS])
    return np.maximum.reduce([raw_plus, raw_x, hat_plus])


def _grow(seed: np.ndarray, glyph: np.ndarray, radius: int) -> np.ndarray:
    """Thin-bright pixels within ``radius`` of ``seed``, plus the seed, dilated by one pixel."""
    if not seed.any():
        return seed
    near = cv2.dilate(seed.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1,) * 2))
    out = ((near > 0) & glyph) | seed
    return cv2.dilate(out.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def _text_rows(labels: np.ndarray, stats: np.ndarray, strong: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes ``(x0, y0, x1, y1)`` of text rows among the vertical-stroke components.

    A glyph component is 6-24 px tall and has at least one column covering 70% of its height
    (a letter stem, at most 4 px wide); letters that touch merge into one component, so a row is
    scored by its number of stems. Components chain when their vertical ranges overlap by 60%
    and the gap between them is under one and a half of their height; a row needs three narrow
    stems in all (wide-stemmed letters join a row but do not make one).
    """
    top, left = stats[:, cv2.CC_STAT_TOP], stats[:, cv2.CC_STAT_LEFT]
    hgt, wid = stats[:, cv2.CC_STAT_HEIGHT], stats[:, cv2.CC_STAT_WIDTH]
    cand = np.flatnonzero(strong & (hgt >= _GLYPH_MIN_H) & (hgt <= _GLYPH_MAX_H) & (wid <= 12 * hgt))
    stems: dict[int, int] = {}
    for i in cand:
        box = labels[top[i] : top[i] + hgt[i], left[i] : left[i] + wid[i]] == i
        tall = np.concatenate([[0], (box.sum(axis=0) >= 0.7 * hgt[i]).astype(np.int8), [0]])
        runs = np.flatnonzero(np.diff(tall))  # starts and ends of runs of tall columns
        # A stem is a run of tall columns at most 4 px wide: a speckle grain is one wide run.
        if len(runs):
            stems[int(i)] = int(((runs[1::2] - runs[0::2]) <= _STEM_MAX_W).sum())
    ids = sorted(stems, key=lambda i: left[i])
    parent = {i: i for i in ids}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a_i, i in enumerate(ids):
        for j in ids[a_i + 1 :]:
            gap = left[j] - (left[i] + wid[i])
            if gap > 1.5 * max(hgt[i], hgt[j]):
                if left[j] > left[i] + wid[i] + 1.5 * _GLYPH_MAX_H:
                    break
                continue
            overlap = min(top[i] + hgt[i], top[j] + hgt[j]) - max(top[i], top[j])
            if overlap >= 0.6 * max(hgt[i], hgt[j]):
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in ids:
        groups.setdefault(find(i), []).append(i)
    rows = []
    for members in groups.values():
        m = np.asarray(members)
        if sum(stems[i] for i in members) < _TEXT_MIN_STEMS:
            continue
        rows.append(
            (
                int(left[m].min()),
                int(top[m].min()),
                int((left[m] + wid[m]).max()),
                int((top[m] + hgt[m]).max()),
            )
        )
    return rows


@dataclass(frozen=True, eq=False)
class _Strokes:
    """Vertical-stroke components of ``V`` found by hysteresis."""

    n: int
    labels: np.ndarray
    stats: np.ndarray
    strong: np.ndarray  # per component: reaches ``_STROKE_HI`` (background excluded)
    is_stroke: np.ndarray  # per component: a stroke of text height
    is_long: np.ndarray  # per component: a long line


def _caliper_centres(u8: np.ndarray, v_hat: np.ndarray, h_hat: np.ndarray, search: np.ndarray) -> np.ndarray:
    """``(N, 2)`` (x, y) centres of crosses with dark gaps between bright arms."""
    resp = _cross_response(u8.astype(np.float32), v_hat, h_hat)
    cross_seed = ((resp >= _CROSS_MIN) & search).astype(np.uint8)
    n_c, _, _, c_cent = cv2.connectedComponentsWithStats(cross_seed, connectivity=8)
    return c_cent[1:] if n_c > 1 else np.zeros((0, 2))


def _strokes(v_hat: np.ndarray, search: np.ndarray) -> _Strokes:
    """Vertical strokes by hysteresis on ``V``."""
    lo = ((v_hat >= _STROKE_LO) & search).astype(np.uint8)
    n_s, s_lab, s_stats, _ = cv2.connectedComponentsWithStats(lo, connectivity=8)
    peak = np.zeros(n_s, np.int32)
    np.maximum.at(peak, s_lab.ravel(), v_hat.ravel().astype(np.int32))
    sh, sw = s_stats[:, cv2.CC_STAT_HEIGHT], s_stats[:, cv2.CC_STAT_WIDTH]
    strong = peak >= _STROKE_HI
    strong[0] = False
    is_stroke = strong & (sh >= _STROKE_MIN_H) & (sh <= _STROKE_MAX_H) & (sw <= _STROKE_MAX_W)
    is_long = strong & (sh >= _LONG_LINE_H) & (sw <= 2 * _STROKE_MAX_W)
    return _Strokes(n_s, s_lab, s_stats, strong, is_stroke, is_long)


def _text_mask(strokes: _Strokes, glyph: np.ndarray) -> tuple[np.ndarray, int]:
    """Text rows grown to their glyphs, and their number."""
    # Glyph components (vertical extent of a cap height, with tall stroke columns) chained left
    # to right on a shared cap line and baseline.
    text_seed = np.zeros(glyph.shape, bool)
    n_text = 0
    for x0, y0, x1, y1 in _text_rows(strokes.labels, strokes.stats, strokes.strong):
        n_text += 1
        # Round letters (S, O, 7) have no stem; at a row's ends they lie outside the stems' box.
        pad = (y1 - y0) * 4 // 5
        text_seed[max(0, y0 - 1) : y1 + 1, max(0, x0 - pad) : x1 + pad] = True
    text = _grow(text_seed & glyph, glyph, 1) if n_text else np.zeros(glyph.shape, bool)
    return text, n_text


def _side_rims(scan: np.ndarray, search: np.ndarray) -> np.ndarray:
    """The search area within ``_RIM`` px of the scan area's side edges (the image edge counts)."""
    # The image edge counts as the scan area's edge (cropped frames such as BUS-BRA's).
    inner = cv2.erode(
        scan.astype(np.uint8),
        np.ones((1, 2 * _RIM + 1), np.uint8),
        borderType=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return search & ~(inner > 0)


def _caliper_mask(
    centres: np.ndarray, text: np.ndarray, rim: np.ndarray, glyph: np.ndarray
) -> tuple[np.ndarray, int, np.ndarray]:
    """Calipers grown to their glyphs, their number, and the boxes of crosses on the side rims."""
    # Calipers not inside text (letters such as X would otherwise double-count); crosses on the
    # side rims are depth-scale diamonds and focus markers, so they go to graphics.
    shape = glyph.shape
    rim_cross = np.zeros(shape, bool)
    cal_seed = np.zeros(shape, np.uint8)
    n_cal = 0
    for cx, cy in centres:
        ix, iy = round(cx), round(cy)
        if text[iy, ix]:
            continue
        if rim[iy, ix]:
            rim_cross[max(0, iy - 4) : iy + 5, max(0, ix - 4) : ix + 5] = True
            continue
        n_cal += 1
        cv2.circle(cal_seed, (ix, iy), 1, 1, -1)
    calipers = _grow(cal_seed > 0, glyph, 6) if n_cal else np.zeros(shape, bool)
    return calipers, n_cal, rim_cross


def _graphics_mask(
    strokes: _Strokes,
    rim: np.ndarray,
    rim_cross: np.ndarray,
    glyph: np.ndarray,
    text: np.ndarray,
    calipers: np.ndarray,
) -> tuple[np.ndarray, int]:
    """Long thin lines, depth scales and strokes on the side rims, and their number."""
    s_lab = strokes.labels
    rim_strokes = np.zeros(strokes.n, bool)
    rim_strokes[np.unique(s_lab[rim & (s_lab > 0)])] = True
    cand = (strokes.is_long | (strokes.is_stroke & rim_strokes))[s_lab]
    cand |= rim_cross & glyph
    cand &= ~text & ~calipers
    n_graphics = 0
    graphics = np.zeros(glyph.shape, bool)
    if cand.any():
        n_graphics = cv2.connectedComponents(cv2.dilate(cand.astype(np.uint8), np.ones((5, 5), np.uint8)))[0] - 1
        graphics = _grow(cand, glyph, 2) & ~text & ~calipers
    return graphics, n_graphics


def detect_overlays(pixels: np.ndarray, scan_mask: np.ndarray | None = None) -> OverlayResult:
    """Detect burned-in text, caliper crosses and UI graphics inside the scan area.

    Args:
        pixels: ``(H, W)`` float in [0, 1].
        scan_mask: ``(H, W)`` bool scan area; computed with :func:`find_scan_area` when None.
            Marks are searched in it (grown by 3 px, so marks on its rim count); what lies
            outside is not image and is never inpainted, so it is not reported.

    Returns:
        An :class:`OverlayResult` with the union mask, per-kind masks and counts.

    Example:
        >>> import cv2, numpy as np
        >>> rng = np.random.default_rng(0)
        >>> img = np.clip(rng.rayleigh(0.15, (128, 128)), 0, 1).astype(np.float32)
        >>> img = cv2.GaussianBlur(img, (0, 0), 1.0)
        >>> _ = cv2.drawMarker(img, (64, 64), 1.0, cv2.MARKER_CROSS, 11, 1)
        >>> r = detect_overlays(img)
        >>> r.n_calipers, bool(r.calipers[64, 64])
        (1, True)
    """
    px = _check_pixels(pixels)
    shape = px.shape
    scan = find_scan_area(px) if scan_mask is None else _check_mask(scan_mask, shape, "scan_mask")
    if not scan.any():
        zeros = np.zeros(shape, bool)
        return OverlayResult(zeros, zeros.copy(), zeros.copy(), zeros.copy(), 0, 0, 0)
    search = cv2.dilate(scan.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0

    u8 = _to_u8(px)
    v_hat = _tophat(u8, np.ones((1, 9), np.uint8))  # a horizontal opening leaves vertical strokes
    h_hat = _tophat(u8, np.ones((9, 1), np.uint8))
    t_hat = _tophat(u8, np.ones((7, 7), np.uint8))
    glyph = (t_hat >= _GLYPH_LO) & search

    centres = _caliper_centres(u8, v_hat, h_hat, search)
    strokes = _strokes(v_hat, search)
    text, n_text = _text_mask(strokes, glyph)
    rim = _side_rims(scan, search)
    calipers, n_cal, rim_cross = _caliper_mask(centres, text, rim, glyph)
    graphics, n_graphics = _graphics_mask(strokes, rim, rim_cross, glyph, text, calipers)
    mask = text | calipers | graphics
    return OverlayResult(mask, text, calipers, graphics, n_text, n_cal, n_graphics)


def inpaint_overlays(
    pixels: np.ndarray,
    mask: np.ndarray,
    *,
    method: Literal["telea", "ns"] = "telea",
    radius: int = 3,
) -> np.ndarray:
    """Fill the masked pixels from their surroundings with OpenCV inpainting.

    Inpainting runs on 16-bit grey levels so float frames keep more than 8-bit precision;
    pixels outside ``mask`` are returned unchanged (bit for bit).

    Args:
        pixels: ``(H, W)`` float in [0, 1].
        mask: ``(H, W)`` bool, True where to inpaint (e.g. ``detect_overlays(...).mask``).
        method: ``"telea"`` (fast marching) or ``"ns"`` (Navier-Stokes).
        radius: Neighbourhood radius in pixels that each filled pixel draws on (>= 1).

    Returns:
        ``(H, W)`` float32 in [0, 1].

    Example:
        >>> import numpy as np
        >>> img = np.full((32, 32), 0.4, np.float32)
        >>> img[15:17, 5:27] = 1.0
        >>> m = img > 0.9
        >>> out = inpaint_overlays(img, m)
        >>> round(float(out[16, 16]), 2)
        0.4
    """
    px = _check_pixels(pixels)
    m = _check_mask(mask, px.shape, "mask")
    flags = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
    if method not in flags:
        raise ValueError(f"method must be one of {sorted(flags)}, got {method!r}")
    if not isinstance(radius, int | np.integer) or radius < 1:
        raise ValueError(f"radius must be an integer >= 1 pixel, got {radius!r}")
    if not m.any():
        return px.copy()
    u16 = np.round(px * 65535.0).astype(np.uint16)
    filled = cv2.inpaint(u16, m.astype(np.uint8), float(radius), flags[method])
    out = px.copy()
    out[m] = filled[m].astype(np.float32) / 65535.0
    return out
