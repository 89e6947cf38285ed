"""Run-length encoding of binary masks, as the service returns them.

The format is COCO's *uncompressed* RLE, so ``pycocotools.mask.frPyObjects`` reads it as is::

    {"size": [H, W], "counts": [n0, n1, n2, ...], "order": "F"}

* The mask is flattened in **column-major** (Fortran) order: down the first column, then the
  second, ... (COCO's order; ``"order": "F"`` says so explicitly).
* ``counts`` are the lengths of alternating runs, **starting with a run of 0s** (background),
  which is 0 when the first pixel is foreground. They sum to ``H * W``.
* A mask with no foreground is ``[H * W]``.

Example:
    >>> import numpy as np
    >>> m = np.array([[0, 1, 1], [0, 1, 0]], bool)  # column-major: 0 0 | 1 1 | 1 0
    >>> rle_encode(m)
    {'size': [2, 3], 'counts': [2, 3, 1], 'order': 'F'}
    >>> bool((rle_decode(rle_encode(m)) == m).all())
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from usher2.io.errors import InputError

__all__ = ["rle_decode", "rle_encode"]


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Encode a ``(H, W)`` binary mask as COCO uncompressed RLE (column-major, 0-run first).

    Args:
        mask: ``(H, W)`` array; nonzero is foreground.

    Returns:
        ``{"size": [H, W], "counts": [...], "order": "F"}`` with plain ``int`` counts.

    Raises:
        InputError: ``mask`` is not 2-D.

    Example:
        >>> import numpy as np
        >>> rle_encode(np.ones((2, 2), bool))["counts"]  # starts with an empty 0-run
        [0, 4]
        >>> rle_encode(np.zeros((2, 3), bool))["counts"]
        [6]
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError("mask", "a 2-D (H, W) mask", f"shape {m.shape}")
    flat = m.astype(bool).ravel(order="F")
    # Indices where the value changes, plus both ends: the differences are the run lengths.
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(edges).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": [int(c) for c in counts], "order": "F"}


def rle_decode(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode :func:`rle_encode`'s output (or any COCO uncompressed RLE) into a ``(H, W)`` bool mask.

    Args:
        rle: ``{"size": [H, W], "counts": [...]}``; ``"order"`` may be ``"F"`` (default, COCO's)
            or ``"C"`` (row-major).

    Raises:
        InputError: Missing keys, negative counts, or counts that do not sum to ``H * W``.

    Example:
        >>> rle_decode({"size": [2, 3], "counts": [2, 3, 1]}).astype(int).tolist()
        [[0, 1, 1], [0, 1, 0]]
    """
    try:
        h, w = (int(v) for v in rle["size"])
        counts = np.asarray(rle["counts"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError("rle", "{'size': [H, W], 'counts': [int, ...]}", f"{type(exc).__name__}: {exc}") from exc
    order = str(rle.get("order", "F"))
    if order not in ("F", "C"):
        raise InputError("rle.order", "'F' (column-major) or 'C' (row-major)", repr(order))
    if counts.ndim != 1 or (counts < 0).any() or int(counts.sum()) != h * w:
        raise InputError("rle.counts", f"non-negative run lengths summing to H*W = {h * w}", f"sum {int(counts.sum())}")
    values = np.arange(counts.size) % 2 == 1  # runs alternate 0, 1, 0, ...
    flat = np.repeat(values, counts)
    return flat.reshape((h, w), order=order)
