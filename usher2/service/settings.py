"""The service's limits and bearer token, checked once when the app is built.

:func:`make_settings` checks :func:`~usher2.service.app.create_app`'s limits and resolves its token
(None: the :data:`TOKEN_ENV` variable) into one :class:`Settings` that the gate, the runner, the
micro-batcher and the scoring adapter read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from usher2.io.errors import InputError
from usher2.io.limits import PixelLimits
from usher2.service.batching import check_batching

__all__ = ["FORM_SLACK", "MIB", "TOKEN_ENV", "Settings", "make_settings"]

TOKEN_ENV = "USHER2_API_TOKEN"
"""Environment variable holding the bearer token when ``create_app(token=None)``."""

MIB = 1024 * 1024
FORM_SLACK = 64 * 1024
"""Bytes allowed over the upload limit for multipart boundaries, part headers and the small form fields."""


@dataclass
class Settings:
    """One app's limits and token (see :func:`make_settings`)."""

    max_upload_bytes: int
    max_upload_mb: float
    token: str | None
    max_concurrent: int
    max_queue: int
    pixel_limits: PixelLimits
    max_batch: int = 16
    max_wait_ms: float = 5.0


def make_settings(
    max_upload_mb: float,
    max_megapixels: float,
    token: str | None,
    max_concurrent: int,
    max_queue: int,
    *,
    max_batch: int = 16,
    max_wait_ms: float = 5.0,
) -> Settings:
    """Check :func:`~usher2.service.app.create_app`'s limits and resolve its token (None: ``USHER2_API_TOKEN``).

    ``max_batch`` frames at most go through the networks together, and a frame waits at most
    ``max_wait_ms`` after its arrival for others to join it (:mod:`usher2.service.batching`); a
    batch never holds more than the ``max_concurrent + max_queue`` requests admitted at once.

    Raises:
        InputError: A limit out of range.

    Example:
        >>> s = make_settings(20, 64, "", 2, 16)
        >>> s.max_upload_bytes == 20 * MIB + 64 * 1024, s.token, s.pixel_limits.file_samples == 4 * 64 * 2**20
        (True, None, True)
        >>> make_settings(20, 64, "", 2, -1)
        Traceback (most recent call last):
        ...
        usher2.io.errors.InputError: max_queue: expected an integer >= 0, got -1
    """
    if not isinstance(max_concurrent, int) or max_concurrent < 1:
        raise InputError("max_concurrent", "an integer >= 1", repr(max_concurrent))
    if not isinstance(max_queue, int) or max_queue < 0:
        raise InputError("max_queue", "an integer >= 0", repr(max_queue))
    check_batching(max_batch, max_wait_ms)
    if not isinstance(max_upload_mb, int | float) or not max_upload_mb > 0:
        raise InputError("max_upload_mb", "a size in MiB > 0", repr(max_upload_mb))
    frame_pixels = PixelLimits.from_megapixels(max_megapixels).frame_pixels
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    return Settings(
        max_upload_bytes=int(max_upload_mb * MIB) + FORM_SLACK,
        max_upload_mb=float(max_upload_mb),
        pixel_limits=PixelLimits(frame_pixels=frame_pixels, file_samples=4 * frame_pixels),
        token=token or None,
        max_concurrent=max_concurrent,
        max_queue=max_queue,
        max_batch=max_batch,
        max_wait_ms=float(max_wait_ms),
    )
