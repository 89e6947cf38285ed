"""Decision-curve analysis: net benefit of one or more risk models against treat-all and treat-none.

At a threshold probability ``t`` a case is test-positive when ``risk >= t``. With ``n`` cases,

    net benefit = TP/n - FP/n * t / (1 - t)             (Vickers & Elkin 2006)

so ``tp_rate = TP/n`` and ``fp_rate = FP/n``. "Treat All" calls everyone positive (``TP/n`` is the
prevalence); "Treat None" calls no one positive (net benefit 0). Matches R ``dcurves::dca()``
(Sjoberg, Apache-2.0) to 1e-9 on its ``df_binary`` example (``tests/data/reference/stats/``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.evaluate._checks import check_binary, check_thresholds
from usher2.io.errors import InputError

__all__ = ["net_benefit", "plot_decision_curve"]

TREAT_ALL = "Treat All"
TREAT_NONE = "Treat None"


def _models(risk: object, names: str | Sequence[str] | None) -> tuple[list[str], list[object]]:
    if isinstance(risk, pd.DataFrame):
        return [str(c) for c in risk.columns], [risk[c].to_numpy() for c in risk.columns]
    if isinstance(risk, Mapping):
        return [str(k) for k in risk], list(risk.values())
    if isinstance(risk, pd.Series) and names is None:
        return [str(risk.name) if risk.name is not None else "model"], [risk.to_numpy()]
    if names is None:
        label = "model"
    elif isinstance(names, str):
        label = names
    else:
        labels = list(names)
        if len(labels) != 1:
            raise InputError("names", "one name for a single risk array", f"{len(labels)} names")
        label = str(labels[0])
    return [label], [risk]


def net_benefit(
    y: object,
    risk: object,
    thresholds: object,
    names: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """Net benefit of each model, of treating all and of treating none, at each threshold.

    Args:
        y: 0/1 outcomes (1 = event); at least 2 cases of each class.
        risk: Predicted risks in [0, 1]: one array (named by ``names``), or a mapping name -> array,
            or a DataFrame (one column per model). A 0/1 marker is a valid risk.
        thresholds: Threshold probabilities, each strictly inside (0, 1).
        names: The model's name when ``risk`` is a single array (default ``"model"``).

    Returns:
        A tidy DataFrame, one row per label and threshold: label (each model, then "Treat All"
        and "Treat None"), threshold, n, tp_rate, fp_rate, test_pos_rate, net_benefit.

    Raises:
        InputError: Bad ``y``, a NaN, constant or out-of-[0, 1] risk, or a threshold outside (0, 1).

    Example:
        >>> nb = net_benefit([0, 0, 1, 1], [0.1, 0.3, 0.2, 0.8], [0.25], names="m")
        >>> nb["label"].tolist(), nb["net_benefit"].round(6).tolist()  # 1/4 - 1/4 * 1/3; 1/2 - 1/2 * 1/3
        (['m', 'Treat All', 'Treat None'], [0.166667, 0.333333, 0.0])
    """
    labels, arrays = _models(risk, names)
    if len(set(labels)) != len(labels) or {TREAT_ALL, TREAT_NONE} & set(labels):
        raise InputError("risk", f"distinct model names other than {TREAT_ALL!r} and {TREAT_NONE!r}", str(labels))
    yy, scores = check_binary(y, *arrays, names=labels)
    for label, s in zip(labels, scores, strict=True):
        bad = (s < 0) | (s > 1)
        if bad.any():
            raise InputError(label, "risks between 0 and 1", f"{int(bad.sum())} values outside (first {s[bad][0]:g})")
    t = check_thresholds(thresholds)
    n = yy.size
    pos = yy == 1
    odds = t / (1.0 - t)
    frames = []
    for label, s in zip([*labels, TREAT_ALL, TREAT_NONE], [*scores, None, None], strict=True):
        if label == TREAT_ALL:
            called = np.ones((t.size, n), dtype=bool)
        elif label == TREAT_NONE:
            called = np.zeros((t.size, n), dtype=bool)
        else:
            called = s[None, :] >= t[:, None]
        tp = (called & pos).sum(axis=1)
        fp = (called & ~pos).sum(axis=1)
        frames.append(
            pd.DataFrame(
                {
                    "label": label,
                    "threshold": t,
                    "n": n,
                    "tp_rate": tp / n,
                    "fp_rate": fp / n,
                    "test_pos_rate": (tp + fp) / n,
                    "net_benefit": tp / n - fp / n * odds,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def plot_decision_curve(
    y: object,
    risk: object,
    thresholds: object | None = None,
    names: str | Sequence[str] | None = None,
    path: str | Path | None = None,
    title: str | None = None,
) -> Any:
    """Decision curves: net benefit against threshold probability for each model, treat-all and treat-none.

    ``thresholds`` defaults to 0.01, 0.02, ..., 0.99. The y-axis runs from a quarter of the
    prevalence below 0 to just above the highest net benefit (treat-all falls steeply beyond the
    prevalence and is cut there, as dcurves' plots do). Saved as PNG (300 dpi) and SVG when ``path``
    is given.

    Example:
        >>> import matplotlib.pyplot as plt
        >>> fig = plot_decision_curve([0, 0, 1, 1], [0.1, 0.3, 0.2, 0.8], [0.1, 0.2, 0.3])
        >>> fig.axes[0].get_ylabel()
        'Net benefit'
        >>> plt.close(fig)
    """
    import matplotlib.pyplot as plt

    from usher2.evaluate.figures import COLORS, PALETTE, figure_style, label_and_save

    t = np.round(np.arange(1, 100) / 100, 2) if thresholds is None else thresholds
    nb = net_benefit(y, risk, t, names=names)
    prevalence = float(nb.loc[nb["label"] == TREAT_ALL, "tp_rate"].iloc[0])
    with figure_style():
        fig, ax = plt.subplots()
        models = [lab for lab in nb["label"].unique() if lab not in (TREAT_ALL, TREAT_NONE)]
        styles = {
            TREAT_ALL: {"color": COLORS["treat_all"], "lw": 1.0},
            TREAT_NONE: {"color": COLORS["treat_none"], "lw": 1.0, "ls": "--"},
        }
        for i, label in enumerate([*models, TREAT_ALL, TREAT_NONE]):
            d = nb[nb["label"] == label]
            style = styles.get(label, {"color": PALETTE[i % len(PALETTE)]})
            ax.plot(d["threshold"], d["net_benefit"], label=label, **style)
        top = max(prevalence, float(nb["net_benefit"].max()))
        ax.set_ylim(-0.25 * prevalence, 1.05 * top)
        ax.set_xlim(float(nb["threshold"].min()), float(nb["threshold"].max()))
        label_and_save(
            fig, ax, ("Threshold probability", "Net benefit", title or "Decision curve"), "upper right", path
        )
    return fig
