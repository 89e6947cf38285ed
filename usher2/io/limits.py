"""The decoded-size limit every frame reader checks from the file's header, before decoding.

A few hundred KB of PNG or deflated DICOM can decode to gigabytes (12000 x 12000 grey PNG: 140 KB
-> 144 MB of pixels, 576 MB as float32). So every reader (:func:`~usher2.io.frames.read_image`,
:func:`~usher2.io.frames.read_mask`, the DICOM and video readers, and therefore the CLI and the
service) reads the dimensions from the header first and refuses a file over :class:`PixelLimits`
with a :class:`DecodedSizeError` that names the file, the size found and the limit.

Two numbers bound the memory a file can take:

* ``frame_pixels`` (default :data:`MAX_FRAME_PIXELS`, 64 megapixels): rows x columns of one frame.
  One megapixel is 2**20 pixels here (as the service's upload limit counts MiB). A frame at the
  limit is 256 MiB as the float32 grey image every stage works on, and about 1 GiB while an RGB
  file is decoded; the largest ultrasound frames (1920 x 1080, 2 megapixels) are 30 times smaller.
* ``file_samples`` (default :data:`MAX_FILE_SAMPLES`, 2**30): rows x columns x samples per pixel x
  frames of a DICOM whose pixel data is held decoded in memory while its frames are read (native
  and deflated transfer syntaxes): at most 1 GiB of 8-bit pixel data (2 GiB at 16 bits), which
  holds 1165 RGB frames of 640 x 480 (39 s at 30 frames/s) or 3495 grey ones. JPEG, JPEG 2000
  and RLE DICOM frames, and video frames, are decoded one at a time, so only ``frame_pixels``
  applies to them.

Where the limit comes from, first match wins: the ``limits=`` argument of a reader; the
:func:`pixel_limits` context; the environment variable :data:`LIMITS_ENV`
(``USHER2_MAX_MEGAPIXELS``, megapixels per frame); the defaults above.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from usher2.io.errors import InputError

__all__ = [
    "LIMITS_ENV",
    "MAX_FILE_SAMPLES",
    "MAX_FRAME_PIXELS",
    "MEGAPIXEL",
    "DecodedSizeError",
    "PixelLimits",
    "default_limits",
    "pixel_limits",
    "resolve_limits",
]

MEGAPIXEL = 2**20
"""Pixels in one megapixel as the limits count them."""

MAX_FRAME_PIXELS = 64 * MEGAPIXEL
"""Default largest frame, rows x columns (64 megapixels; see the module docstring)."""

MAX_FILE_SAMPLES = 2**30
"""Default largest decoded pixel data held at once for one file, in samples (see the module docstring)."""

LIMITS_ENV = "USHER2_MAX_MEGAPIXELS"
"""Environment variable with the per-frame limit in megapixels (read by :func:`default_limits`)."""

_MIN_PIXELS = 64  # an 8 x 8 frame, the smallest any reader accepts
_HOW_TO_RAISE = f"--max-megapixels, {LIMITS_ENV} or limits=PixelLimits(...)"


class DecodedSizeError(InputError):
    """A file whose header declares more pixels than the decoded-size limit allows.

    A subclass of :class:`~usher2.io.errors.InputError`, so callers that handle bad input handle
    it too; the service answers it with 413 instead of 422.

    Example:
        >>> str(DecodedSizeError("a.png", "a frame of at most 4 pixels", "3x3 = 9 pixels"))
        'a.png: expected a frame of at most 4 pixels, got 3x3 = 9 pixels'
    """


def _mp(n: int) -> str:
    return f"{n / MEGAPIXEL:.1f}".removesuffix(".0")


@dataclass(frozen=True)
class PixelLimits:
    """How large a decoded file may be; see the module docstring for the reasons behind the defaults.

    Args:
        frame_pixels: Most rows x columns of one frame.
        file_samples: Most rows x columns x samples x frames of pixel data held decoded at once
            (multi-frame DICOM in a native or deflated transfer syntax).

    Raises:
        InputError: A limit that is not an integer, smaller than one 8 x 8 frame, or a file limit
            below the frame limit.

    Example:
        >>> PixelLimits().frame_pixels == 64 * 2**20
        True
        >>> PixelLimits.from_megapixels(1).frame_pixels
        1048576
    """

    frame_pixels: int = MAX_FRAME_PIXELS
    file_samples: int = MAX_FILE_SAMPLES

    def __post_init__(self) -> None:
        for name in ("frame_pixels", "file_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < _MIN_PIXELS:
                raise InputError(name, f"an integer >= {_MIN_PIXELS} (one 8x8 frame)", repr(value))
        if self.file_samples < self.frame_pixels:
            raise InputError(
                "file_samples",
                f"at least frame_pixels ({self.frame_pixels:,})",
                f"{self.file_samples:,}",
                fix="a file must be able to hold one frame",
            )

    @classmethod
    def from_megapixels(cls, megapixels: float, *, where: str = "max_megapixels") -> PixelLimits:
        """Limits for a per-frame size in megapixels (2**20 pixels).

        The file limit stays :data:`MAX_FILE_SAMPLES`, or four samples per pixel of one frame when
        that is larger, so that one RGBA frame at the limit always fits.

        Raises:
            InputError: Not a finite number, or under one 8 x 8 frame; ``where`` names the setting.
        """
        if isinstance(megapixels, bool) or not isinstance(megapixels, int | float) or not megapixels > 0:
            raise InputError(where, "a number of megapixels > 0", repr(megapixels))
        if megapixels == float("inf"):
            raise InputError(where, "a finite number of megapixels", repr(megapixels))
        frame = int(megapixels * MEGAPIXEL)
        if frame < _MIN_PIXELS:
            raise InputError(where, f"at least {_MIN_PIXELS} pixels (one 8x8 frame)", f"{frame} pixels")
        return cls(frame_pixels=frame, file_samples=max(MAX_FILE_SAMPLES, 4 * frame))

    def check_frame(self, where: str | Path, rows: int, cols: int, *, what: str = "a frame") -> None:
        """Refuse a frame of ``rows x cols`` over ``frame_pixels``.

        Raises:
            DecodedSizeError: Names ``where``, the size found and the limit.

        Example:
            >>> PixelLimits(frame_pixels=100).check_frame("x.png", 20, 10)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            usher2.io.limits.DecodedSizeError: x.png: expected a frame of at most 100 pixels ...
        """
        n = int(rows) * int(cols)
        if n > self.frame_pixels:
            raise DecodedSizeError(
                where,
                f"{what} of at most {self.frame_pixels:,} pixels ({_mp(self.frame_pixels)} megapixels, "
                "the decoded-size limit)",
                f"{int(rows)}x{int(cols)} (rows x columns) = {n:,} pixels ({_mp(n)} megapixels)",
                fix=f"downscale the file, or raise the limit: {_HOW_TO_RAISE}",
            )

    def check_file(self, where: str | Path, rows: int, cols: int, *, samples: int = 1, frames: int = 1) -> None:
        """Refuse decoded pixel data of ``rows x cols x samples x frames`` over ``file_samples``.

        Raises:
            DecodedSizeError: Names ``where``, the size found and the limit.
        """
        n = int(rows) * int(cols) * int(samples) * int(frames)
        if n > self.file_samples:
            raise DecodedSizeError(
                where,
                f"pixel data of at most {self.file_samples:,} samples in all (rows x columns x samples x "
                "frames, the per-file decoded-size limit)",
                f"{int(rows)}x{int(cols)}x{int(samples)}x{int(frames)} = {n:,} samples",
                fix=f"split the file, or raise the limit: {_HOW_TO_RAISE}",
            )


_CURRENT: ContextVar[PixelLimits | None] = ContextVar("usher2_pixel_limits", default=None)


def default_limits() -> PixelLimits:
    """The limits a reader uses when its caller passes none.

    The :func:`pixel_limits` context if one is active, else :data:`LIMITS_ENV` if set, else the
    defaults. The environment is read here and nowhere else.

    Raises:
        InputError: ``USHER2_MAX_MEGAPIXELS`` holds something other than a number > 0.

    Example:
        >>> default_limits().frame_pixels >= 64
        True
    """
    current = _CURRENT.get()
    if current is not None:
        return current
    text = os.environ.get(LIMITS_ENV, "").strip()
    if not text:
        return PixelLimits()
    try:
        value = float(text)
    except ValueError:
        raise InputError(LIMITS_ENV, "a number of megapixels > 0 (e.g. 64)", repr(text[:20])) from None
    return PixelLimits.from_megapixels(value, where=LIMITS_ENV)


def resolve_limits(limits: PixelLimits | None) -> PixelLimits:
    """``limits``, or :func:`default_limits` when None."""
    return limits if limits is not None else default_limits()


@contextlib.contextmanager
def pixel_limits(limits: PixelLimits) -> Iterator[PixelLimits]:
    """Make ``limits`` the default of every reader called inside the ``with`` block.

    The setting is a context variable: it holds in this thread (and asyncio task) only. Worker
    processes and threads started elsewhere read :data:`LIMITS_ENV` instead.

    Example:
        >>> with pixel_limits(PixelLimits.from_megapixels(1)):
        ...     default_limits().frame_pixels
        1048576
    """
    if not isinstance(limits, PixelLimits):
        raise InputError("limits", "a PixelLimits", type(limits).__name__)
    token = _CURRENT.set(limits)
    try:
        yield limits
    finally:
        _CURRENT.reset(token)
