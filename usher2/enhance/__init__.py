"""Stage 1: image enhancement. One contract, one registry, one function.

Example:
    >>> import numpy as np
    >>> from usher2.enhance import enhance, available_enhancers
    >>> x = np.full((2, 1, 16, 20), 0.5, np.float32)
    >>> enhance(x, model="srad").shape
    (2, 1, 16, 20)
    >>> "median" in available_enhancers()
    True
"""

from __future__ import annotations

from typing import Any

from usher2.enhance import classical as _classical  # noqa: F401  (registers the baselines)
from usher2.enhance import gan as _gan  # noqa: F401  (registers the learned enhancers)
from usher2.enhance.base import ENHANCERS, Enhancer, check_batch

__all__ = ["ENHANCERS", "Enhancer", "available_enhancers", "check_batch", "create_enhancer", "enhance"]


def available_enhancers() -> list[str]:
    """Names accepted by :func:`create_enhancer` and ``usher2 enhance --model``."""
    return ENHANCERS.names()


def create_enhancer(name: str, **kwargs: Any) -> Enhancer:
    """Build a registered enhancer; an unknown name raises an error listing the available ones."""
    return ENHANCERS.create(name, **kwargs)


def enhance(x: Any, *, model: str = "none", **kwargs: Any) -> Any:
    """Enhance a ``(B, 1, H, W)`` batch in [0, 1] with the named enhancer (NumPy or torch in, same out)."""
    return create_enhancer(model, **kwargs)(x)
