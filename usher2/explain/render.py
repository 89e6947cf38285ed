"""The one overlay renderer: a scored frame as the picture every output shows.

``usher2 score DIR`` (overlay PNGs, contact sheets, annotated videos), ``POST /v1/score``
(``overlay_png``) and the cohort report all draw a frame through :func:`render_overlay`, so a
frame looks the same whichever door it came through:

* the heat map (JET, weight :data:`ALPHA`) blended inside its ROI box only (:func:`heat_box`:
  the deep extractors' box around the mask, grown to cover every pixel with heat > 0);
* the mask's outer contour in :data:`CONTOUR` green, ``max(1, round(min(H, W) / 200))`` px wide;
* an optional caption in the top-left corner, white on black.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from usher2.io.errors import InputError

__all__ = ["ALPHA", "CONTOUR", "contact_sheet", "heat_box", "render_overlay"]

#: Weight of the heat map's colour where it is blended.
ALPHA = 0.4
#: RGB of the mask contour (and of a negative frame's border on a contact sheet).
CONTOUR = (60, 220, 60)
_RED, _GREY = (230, 40, 40), (150, 150, 150)


def heat_box(mask: np.ndarray | None, heat: np.ndarray) -> np.ndarray:
    """Where the overlay blends the heat map: the ROI box the CAM was pasted into, ``(H, W)`` bool.

    That is :func:`~usher2.features.deep.roi_box` of the mask (the deep extractors' default
    margin) clipped to the frame, grown to cover every pixel with heat > 0 should a backbone use
    a wider margin.

    Example:
        >>> m = np.zeros((40, 60), bool); m[10:20, 20:30] = True
        >>> h = np.zeros((40, 60), np.float32); h[12, 22] = 0.5
        >>> b = heat_box(m, h); int(b.sum()), bool(b[6, 16]), bool(b[5, 16])
        (324, True, False)
    """
    from usher2.features.deep import roi_box

    h, w = heat.shape
    boxes = []
    if mask is not None and mask.any():
        y0, y1, x0, x1 = roi_box(mask)
        boxes.append((max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)))
    if np.any(heat > 0):
        ys, xs = np.nonzero(heat > 0)
        boxes.append((int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1))
    where = np.zeros((h, w), bool)
    if boxes:
        y0, y1 = min(b[0] for b in boxes), max(b[1] for b in boxes)
        x0, x1 = min(b[2] for b in boxes), max(b[3] for b in boxes)
        where[y0:y1, x0:x1] = True
    return where


def render_overlay(
    pixels: np.ndarray, mask: np.ndarray | None, heat: np.ndarray | None, caption: str = ""
) -> np.ndarray:
    """The frame as RGB uint8 with the heat map (inside its ROI box), the mask contour and a caption.

    Args:
        pixels: ``(H, W)`` grey in [0, 1] (the frame as scored).
        mask: ``(H, W)`` bool lesion mask, or None.
        heat: ``(H, W)`` heat map in [0, 1] (0 outside the ROI box), or None.
        caption: Text for the top-left corner ("" for none).

    Example:
        >>> m = np.zeros((64, 64), bool); m[20:40, 20:40] = True
        >>> rgb = render_overlay(np.zeros((64, 64), np.float32), m, None, "p=0.5")
        >>> rgb.shape, tuple(int(v) for v in rgb[20, 30])  # the contour is green
        ((64, 64, 3), (60, 220, 60))
    """
    from usher2.explain.frame import overlay

    img = np.clip(np.asarray(pixels, np.float32), 0, 1)
    if heat is not None and np.any(heat > 0):
        rgb = overlay(img, heat, alpha=ALPHA, where=heat_box(mask, heat))
    else:
        rgb = np.uint8(np.repeat(img[..., None], 3, axis=2) * 255 + 0.5)
    rgb = np.ascontiguousarray(rgb)
    if mask is not None and mask.any():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(rgb, contours, -1, CONTOUR, max(1, round(min(rgb.shape[:2]) / 200)))
    if caption:
        scale = max(0.35, min(rgb.shape[:2]) / 700)
        (w, h), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(rgb, (0, 0), (w + 6, h + base + 6), (0, 0, 0), -1)
        cv2.putText(rgb, caption, (3, h + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return rgb


def contact_sheet(
    tiles: list[np.ndarray], captions: list[str], positive: list[bool | None], *, width: int = 160, columns: int = 8
) -> np.ndarray:
    """A grid of RGB thumbnails with captions; border red (positive), green (negative), grey (not scored).

    Example:
        >>> t = [np.zeros((32, 48, 3), np.uint8)] * 3
        >>> contact_sheet(t, ["0", "1", "2"], [True, False, None], width=48, columns=2).shape
        (108, 104, 3)
    """
    if not tiles:
        raise InputError("contact sheet", "at least one frame", "none")
    h0, w0 = tiles[0].shape[:2]
    height = max(1, round(h0 * width / w0))
    cap = 18
    cols = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    sheet = np.full((rows * (height + cap + 4), cols * (width + 4), 3), 255, np.uint8)
    for k, (tile, text, pos) in enumerate(zip(tiles, captions, positive, strict=True)):
        r, c = divmod(k, cols)
        y, x = r * (height + cap + 4), c * (width + 4)
        small = cv2.resize(tile, (width, height), interpolation=cv2.INTER_AREA)
        colour = _GREY if pos is None else (_RED if pos else CONTOUR)
        sheet[y : y + height + 4, x : x + width + 4] = colour
        sheet[y + 2 : y + 2 + height, x + 2 : x + 2 + width] = small
        cv2.putText(sheet, text, (x + 2, y + height + cap), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet
