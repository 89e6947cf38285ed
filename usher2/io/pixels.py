"""Checks and conversions shared by the frame readers (raster images, DICOM, video).

Every reader ends in :func:`make_frame`, so the same rules hold whatever the format:
grey levels are float32 in [0, 1], both sides are at least :data:`MIN_SIDE` pixels and every
value is finite. The largest size is checked earlier, from the header and before decoding, by
:mod:`usher2.io.limits`; after that, no reader makes a float64 copy of a whole frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from usher2.io.errors import InputError
from usher2.types import Frame

MIN_SIDE = 8
"""The smallest accepted image side in pixels: a smaller frame holds no usable anatomy, and
texture features and the segmenter's pooling need at least this many pixels per side."""

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights for R, G, B (the same grey that Pillow's ``"L"`` and OpenCV give)."""


def check_file(path: str | Path, *, what: str = "an image, DICOM or video file") -> Path:
    """Return ``path`` as a ``Path`` after checking that it is an existing, non-empty file.

    Args:
        path: The file to check.
        what: How the error names the expected file.

    Raises:
        InputError: The path is missing, a directory, or a zero-byte file.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
        >>> _ = p.write_bytes(b"abc")
        >>> check_file(p) == p
        True
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, f"an existing {what}", "no such file", fix="check the path and the manifest's directory")
    if not p.is_file():
        raise InputError(p, what, "a directory or special file")
    if p.stat().st_size == 0:
        raise InputError(p, what, "an empty (0-byte) file", fix="the file was not written completely; export it again")
    return p


def rgb_to_grey(rgb: np.ndarray, *, scale: float = 1.0) -> np.ndarray:
    """BT.601 luma ``(0.299 R + 0.587 G + 0.114 B) / scale`` of an ``(..., 3)`` array, as float32.

    The sum is taken in float64 over blocks of about a million pixels, so the result equals the
    float64 formula rounded to float32 while no float64 copy of the whole frame is ever made.
    Channels past the third (alpha) are ignored.

    Args:
        rgb: ``(..., C)`` samples with ``C >= 3``, R, G, B first (any integer or float dtype).
        scale: Divides the luma, e.g. 255 for 8-bit samples to get [0, 1].

    Example:
        >>> round(float(rgb_to_grey(np.array([255, 0, 0], np.uint8), scale=255)), 6)
        0.299
    """
    rgb = np.asarray(rgb)
    out = np.empty(rgb.shape[:-1], np.float32)
    if rgb.ndim < 3:
        out[...] = _luma(rgb) / scale
        return out
    per_row = max(1, math.prod(rgb.shape[1:-1]))
    step = max(1, _BLOCK_PIXELS // per_row)
    for r0 in range(0, rgb.shape[0], step):
        out[r0 : r0 + step] = _luma(rgb[r0 : r0 + step]) / scale
    return out


_BLOCK_PIXELS = 1 << 20  # float64 temporaries of ~8 MB per channel, whatever the frame size


def _luma(rgb: np.ndarray) -> np.ndarray:
    """The float64 BT.601 sum of a (small) block of ``(..., C)`` samples."""
    grey = rgb[..., 0].astype(np.float64) * LUMA[0]
    grey += rgb[..., 1].astype(np.float64) * LUMA[1]
    grey += rgb[..., 2].astype(np.float64) * LUMA[2]
    return grey


def make_frame(
    grey: np.ndarray,
    *,
    source: str | Path,
    spacing: tuple[float, float] | None = None,
    index: int = 0,
    metadata: Mapping[str, Any] | None = None,
    copy: bool = True,
) -> Frame:
    """Check a grey image already scaled to [0, 1] and wrap it in a :class:`Frame`.

    Args:
        grey: ``(H, W)`` grey levels in [0, 1] (any float or integer dtype).
        source: The file the frame came from, named in errors.
        spacing: ``(row_mm, col_mm)`` or None.
        index: Frame number inside a multi-frame file.
        metadata: De-identified metadata.
        copy: False when ``grey`` is the caller's own float32 temporary: it is then clipped in
            place and kept, instead of copied (a reader saves one float32 frame of memory).

    Raises:
        InputError: Not 2-D, smaller than ``MIN_SIDE`` on a side, or holding NaN/inf.

    Example:
        >>> make_frame(np.full((8, 8), 0.5), source="mem").pixels.dtype
        dtype('float32')
    """
    grey = np.asarray(grey)
    if grey.ndim != 2:
        raise InputError(source, "a single-channel (H, W) image", f"an array of shape {grey.shape}")
    h, w = grey.shape
    if h < MIN_SIDE or w < MIN_SIDE:
        raise InputError(
            source,
            f"an image of at least {MIN_SIDE}x{MIN_SIDE} pixels",
            f"{h}x{w} (rows x columns)",
            fix="this is too small to hold a lesion; check that the right file was exported",
        )
    if grey.dtype.kind in "fc" and not np.all(np.isfinite(grey)):
        raise InputError(source, "finite pixel values", f"{int(np.count_nonzero(~np.isfinite(grey)))} NaN/inf pixels")
    if copy or grey.dtype != np.float32 or not grey.flags.writeable:
        grey = grey.astype(np.float32)
    pixels = np.clip(grey, 0.0, 1.0, out=grey)
    return Frame(pixels, spacing=spacing, source=str(source), index=index, metadata=dict(metadata or {}))
