"""Input checks shared by the statistics: one place, one wording."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from usher2.io.errors import InputError

__all__ = ["check_binary", "check_thresholds"]


def check_binary(
    y: object,
    *scores: object,
    names: Sequence[str] | None = None,
    min_per_class: int = 2,
    allow_constant: bool = False,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``y`` as a 0/1 int array and each score as float64, or an :class:`InputError` naming the problem.

    Refused: ``y`` not 1-D or not 0/1, a single class, fewer than ``min_per_class`` cases of a
    class, a score of another length, a NaN or infinite score, and (unless ``allow_constant``)
    a score with a single value, which ranks nothing.

    Example:
        >>> y, (s,) = check_binary([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8])
        >>> y.tolist(), s.dtype.name
        ([0, 1, 0, 1], 'float64')
        >>> check_binary([1, 1, 1], [0.2, 0.3, 0.4])
        Traceback (most recent call last):
        ...
        usher2.io.errors.InputError: y: expected both classes 0 and 1, got only class 1 (3 cases)
    """
    yy = np.asarray(y)
    if yy.ndim != 1:
        raise InputError("y", "a 1-D array of 0/1 labels", f"shape {yy.shape}")
    try:
        numeric = yy.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError("y", "0/1 labels", f"values like {np.unique(yy.astype(str))[:5].tolist()}") from None
    if not np.isfinite(numeric).all():
        raise InputError("y", "0/1 labels", f"{int((~np.isfinite(numeric)).sum())} missing or infinite labels")
    values = np.unique(numeric)
    if not set(values.tolist()) <= {0.0, 1.0}:
        raise InputError("y", "0/1 labels", f"values {values.tolist()[:5]}")
    if len(values) < 2:
        raise InputError("y", "both classes 0 and 1", f"only class {int(values[0])} ({yy.size} cases)")
    counts = np.bincount(numeric.astype(int), minlength=2)
    if counts.min() < min_per_class:
        raise InputError(
            "y",
            f"at least {min_per_class} cases of each class",
            f"{int(counts[0])} of class 0, {int(counts[1])} of class 1",
        )
    out = []
    labels = (
        list(names)
        if names is not None
        else [f"score {i + 1}" if len(scores) > 1 else "score" for i in range(len(scores))]
    )
    for name, s in zip(labels, scores, strict=True):
        try:
            ss = np.asarray(s, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(name, "numbers", f"values of type {np.asarray(s).dtype}") from None
        if ss.shape != yy.shape:
            raise InputError(name, f"one value per case ({yy.size})", f"shape {ss.shape}")
        bad = ~np.isfinite(ss)
        if bad.any():
            raise InputError(
                name,
                "finite numbers",
                f"{int(bad.sum())} NaN or infinite values (first at index {int(np.argmax(bad))})",
            )
        if not allow_constant and np.ptp(ss) == 0:
            raise InputError(name, "scores that vary between cases", f"the constant {ss[0]:g} for all {ss.size} cases")
        out.append(ss)
    return numeric.astype(int), out


def check_thresholds(thresholds: object, name: str = "thresholds") -> np.ndarray:
    """Thresholds as a 1-D float array, each strictly inside (0, 1).

    Example:
        >>> check_thresholds([0.05, 0.1]).tolist()
        [0.05, 0.1]
        >>> check_thresholds([0.0, 0.5])
        Traceback (most recent call last):
        ...
        usher2.io.errors.InputError: thresholds: expected values strictly between 0 and 1, got [0.0]
    """
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if t.ndim != 1 or t.size == 0:
        raise InputError(name, "a non-empty list of values", f"shape {t.shape}")
    bad = t[~((t > 0) & (t < 1))]
    if bad.size:
        raise InputError(name, "values strictly between 0 and 1", str(bad[:5].tolist()))
    return t
