"""Waterfall plots of per-case scores: one bar per case, sorted, measured from the cut-off.

As in the prostate study's Radscore figure: every case is a bar of height
``score - threshold`` (the score centred at its cut-off), cases sorted by score from the
highest to the lowest, each bar coloured by the case's true label. Bars above zero are the
cases the model calls positive; a positive-coloured bar below zero is a false negative and a
negative-coloured bar above zero a false positive.

``threshold`` defaults to 0 (a linear predictor such as the Radscore, cut at log-odds 0, i.e.
p = 0.5); pass 0.5 for probabilities, or a Youden cut-off. Ties keep the input order.

Example:
    >>> waterfall_table([0.2, 0.9, 0.4], [0, 1, 1], threshold=0.5)["height"].round(2).tolist()
    [0.4, -0.1, -0.3]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.io.errors import InputError

__all__ = ["plot_waterfall", "waterfall_table"]


def waterfall_table(score: Any, y: Any, threshold: float | None = None) -> pd.DataFrame:
    """The bars of the waterfall plot, in drawing order.

    Args:
        score: Per-case scores (a Series keeps its index as the case ids).
        y: True labels, 0/1 (or booleans), one per case.
        threshold: The cut-off the bars are measured from (0 when None).

    Returns:
        Columns ``rank`` (0 = highest score), ``case`` (the input's index label, or position),
        ``score``, ``label`` and ``height`` (``score - threshold``), sorted by score descending.

    Raises:
        InputError: Lengths differ, non-finite scores, or labels other than 0/1.

    Example:
        >>> waterfall_table(pd.Series([1.5, -0.5, 3.0], index=["a", "b", "c"]), [1, 0, 1], threshold=1.0)
           rank case  score  label  height
        0     0    c    3.0      1     2.0
        1     1    a    1.5      1     0.5
        2     2    b   -0.5      0    -1.5
    """
    cases = score.index.tolist() if isinstance(score, pd.Series) else None
    s = np.asarray(score, dtype=np.float64).ravel()
    labels = np.asarray(y).ravel()
    if len(labels) != len(s):
        raise InputError("y", f"one label per score ({len(s)})", f"{len(labels)} labels")
    if not len(s):
        raise InputError("score", "at least one case", "none")
    if not np.isfinite(s).all():
        raise InputError("score", "finite scores", f"{int((~np.isfinite(s)).sum())} NaN or infinite")
    if labels.dtype == bool:
        labels = labels.astype(int)
    if not np.isin(labels, [0, 1]).all():
        raise InputError("y", "labels 0/1", repr(sorted(set(np.unique(labels).tolist()) - {0, 1})[:5]))
    t = 0.0 if threshold is None else float(threshold)
    if not np.isfinite(t):
        raise InputError("threshold", "a finite cut-off", repr(threshold))
    order = np.argsort(-s, kind="stable")
    return pd.DataFrame(
        {
            "rank": np.arange(len(s)),
            "case": [cases[i] for i in order] if cases is not None else order,
            "score": s[order],
            "label": labels[order].astype(int),
            "height": s[order] - t,
        }
    )


def plot_waterfall(
    score: Any,
    y: Any,
    threshold: float | None = None,
    path: str | Path | None = None,
    *,
    score_name: str = "Score",
    class_names: Sequence[str] = ("HER2-negative", "HER2-positive"),
    title: str | None = None,
) -> tuple[Any, pd.DataFrame]:
    """Draw the waterfall plot (see the module docstring); saved as PNG + SVG when ``path`` is given.

    Args:
        score: Per-case scores.
        y: True labels 0/1.
        threshold: The cut-off the bars are measured from (0 when None).
        path: Where to save (suffix replaced by .png and .svg).
        score_name: Name of the score for the y-axis label (``"Radscore"``...).
        class_names: Legend labels of label 0 and label 1.
        title: Optional title.

    Returns:
        The Figure and :func:`waterfall_table`.

    Example:
        >>> import matplotlib.pyplot as plt
        >>> fig, table = plot_waterfall([0.2, 0.9, 0.4], [0, 1, 1], threshold=0.5)
        >>> table["label"].tolist()
        [1, 1, 0]
        >>> plt.close(fig)
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from usher2.evaluate.figures import COLORS, figure_style, save_figure

    if len(class_names) != 2:
        raise InputError("class_names", "two names (label 0, label 1)", str(len(class_names)))
    table = waterfall_table(score, y, threshold)
    colors = np.where(table["label"].to_numpy() == 1, COLORS["positive"], COLORS["negative"])
    t = 0.0 if threshold is None else float(threshold)
    with figure_style():
        fig, ax = plt.subplots(figsize=(max(4.5, min(12.0, 0.03 * len(table) + 3.0)), 3.5))
        ax.bar(table["rank"], table["height"], width=1.0 if len(table) > 60 else 0.8, color=colors, linewidth=0)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xlim(-0.6, len(table) - 0.4)
        ax.set_xticks([])
        ax.grid(axis="x", visible=False)
        ax.set_xlabel("Cases (sorted by score)")
        ax.set_ylabel(f"{score_name} - cut-off ({t:g})" if t != 0.0 else score_name)
        handles = [
            Patch(color=COLORS["positive"], label=class_names[1]),
            Patch(color=COLORS["negative"], label=class_names[0]),
        ]
        ax.legend(handles=handles, loc="upper right")
        if title:
            ax.set_title(title)
        if path is not None:
            save_figure(fig, path)
    return fig, table
