"""Clinical values at scoring time: numbers, checked against the range the model was trained on.

``usher2 fit`` records each clinical column's training range in the bundle
(``config["clinical_ranges"]``: the smallest and largest finite training value). When a frame is
scored, through any door (``usher2 score``, :class:`~usher2.score.engine.FrameScorer`, the service),
each clinical value is read by :func:`check_clinical`:

* empty (None, NaN, an empty string): missing; the model imputes it and the result is flagged
  ``clinical_missing``;
* a number, or text that is one (``"54"``, from a CSV): used;
* anything else (``"abc"``, a boolean, a list): an error naming the field; never a silent imputation;
* a number outside the training range: used, and the result is flagged ``clinical_out_of_range``;
* a number outside the training range by more than :data:`CLINICAL_MARGIN` times the range's width
  (``age`` -5000 where training ages were 31-84): refused, since no model extrapolates that far
  and such a value is almost always a unit or typing error.

Values are never echoed in messages (they may be identifying); the field, the training range and
whether the value lay below or above it are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from usher2.io.errors import InputError

__all__ = ["CLINICAL_MARGIN", "check_clinical", "clinical_ranges"]

CLINICAL_MARGIN = 0.5
"""How far beyond the training range a value is still scored (flagged), as a fraction of the
range's width (of ``max(|value|, 1)`` for a column that was constant in training). A 0/1 variable
accepts [-0.5, 1.5]; ages trained on 30-80 are flagged outside 30-80 and refused outside 5-105."""


def clinical_ranges(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``{column: {"min": ..., "max": ...}}`` of each column's finite values (columns without any are left out).

    Example:
        >>> clinical_ranges(pd.DataFrame({"age": [40.0, 71.0, np.nan], "er": [0.0, 1.0, 1.0]}))
        {'age': {'min': 40.0, 'max': 71.0}, 'er': {'min': 0.0, 'max': 1.0}}
    """
    out = {}
    for c in table.columns:
        v = pd.to_numeric(table[c], errors="coerce").to_numpy(float)
        v = v[np.isfinite(v)]
        if len(v):
            out[str(c)] = {"min": float(v.min()), "max": float(v.max())}
    return out


def _number(field: str, value: Any) -> float:
    """The value as a float (NaN for missing), or an InputError naming ``field``."""
    if value is None:
        return math.nan
    if isinstance(value, bool | np.bool_):
        raise InputError(field, "a number or an empty value", "a boolean", fix="send 0/1 for no/yes")
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return math.nan
        try:
            return float(text)
        except ValueError:
            raise InputError(
                field,
                "a number or an empty value",
                "non-numeric text",
                fix="use numbers (e.g. 0/1 for no/yes); leave the cell empty when the value is unknown",
            ) from None
    raise InputError(field, "a number or an empty value", f"a value of type {type(value).__name__}")


def check_clinical(
    values: Mapping[str, Any] | None,
    columns: Sequence[str],
    ranges: Mapping[str, Mapping[str, float]] | None = None,
    *,
    where: str = "clinical",
) -> tuple[dict[str, float], list[str]]:
    """Read one case's clinical values for a model (see the module docstring).

    Args:
        values: ``{column: value}`` (missing keys are missing values), or None.
        columns: The model's clinical columns.
        ranges: The bundle's ``clinical_ranges`` (None or a column left out: no range check,
            as for bundles written before ranges were recorded).
        where: Names the case in errors (``"clinical"``, ``"case bus_0042"``).

    Returns:
        ``({column: float, NaN when missing}, [columns outside their training range])``.

    Raises:
        InputError: A value that is not a number, infinite, or beyond the margin of its range.

    Example:
        >>> ranges = {"age": {"min": 30.0, "max": 80.0}}
        >>> check_clinical({"age": "85"}, ["age", "er"], ranges)
        ({'age': 85.0, 'er': nan}, ['age'])
        >>> try:
        ...     check_clinical({"age": -5000}, ["age"], ranges)
        ... except InputError as exc:
        ...     print(exc.expected, "|", exc.got)
        a value near the training range 30-80 (scored up to 25 beyond it) | a value below 5
    """
    values = values or {}
    out: dict[str, float] = {}
    outside: list[str] = []
    for c in columns:
        field = f"clinical.{c}" if where == "clinical" else f"{where}: clinical.{c}"
        v = _number(field, values.get(c))
        if math.isinf(v):
            raise InputError(field, "a finite number or an empty value", "infinity")
        rng = (ranges or {}).get(c)
        if rng is not None and not math.isnan(v):
            lo, hi = float(rng["min"]), float(rng["max"])
            width = hi - lo if hi > lo else max(abs(hi), 1.0)
            slack = CLINICAL_MARGIN * width
            if v < lo - slack or v > hi + slack:
                below = v < lo - slack
                raise InputError(
                    field,
                    f"a value near the training range {lo:g}-{hi:g} (scored up to {slack:g} beyond it)",
                    f"a value {'below' if below else 'above'} {(lo - slack if below else hi + slack):g}",
                    fix="check the unit and the coding of this variable",
                )
            if v < lo or v > hi:
                outside.append(c)
        out[c] = v
    return out, outside
