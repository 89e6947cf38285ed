"""Stage 2: lesion ROI segmentation. One contract, one registry, one function.

Example:
    >>> from usher2.segment import available_segmenters
    >>> available_segmenters()
    ['unet', 'unetplusplus']
"""

from __future__ import annotations

from typing import Any

from usher2.segment import unet as _unet  # noqa: F401  (registers the trained networks)
from usher2.segment.base import SEGMENTERS, Segmentation, Segmenter

__all__ = ["SEGMENTERS", "Segmentation", "Segmenter", "available_segmenters", "create_segmenter", "segment"]


def available_segmenters() -> list[str]:
    """Names accepted by :func:`create_segmenter` and ``usher2 segment --model``."""
    return SEGMENTERS.names()


def create_segmenter(name: str = "unet", **kwargs: Any) -> Segmenter:
    """Build a registered segmenter; an unknown name raises an error listing the available ones."""
    return SEGMENTERS.create(name, **kwargs)


def segment(x: Any, *, model: str = "unet", **kwargs: Any) -> list[Segmentation]:
    """Segment a ``(B, 1, H, W)`` batch in [0, 1] with the named segmenter: one result per frame."""
    return create_segmenter(model, **kwargs).segment(x)
