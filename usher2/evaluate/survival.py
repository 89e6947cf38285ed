"""Kaplan-Meier curves and the log-rank test, typically for groups of a model's score.

- :func:`kaplan_meier`: the product-limit estimate ``S(t) = prod_{t_i <= t} (1 - d_i / n_i)`` (``d_i``
  events among ``n_i`` at risk) with the exponential-Greenwood ("log-log") interval
  ``S(t)^exp(± z sqrt(V))``, ``V = sum d_i / (n_i (n_i - d_i)) / log(S(t))^2`` — lifelines'
  ``KaplanMeierFitter`` (and R ``survfit(conf.type="log-log")``).
- :func:`logrank_test`: the (multi-group) log-rank chi-squared with ``k - 1`` df for ``k`` groups,
  lifelines' ``multivariate_logrank_test`` (= R ``survdiff``; for durations [10, 20, 30, 10, 20, 50],
  groups [1, 1, 1, 0, 0, 0] and all events it gives chi2 = 0.254237, p = 0.614107).
- :func:`score_groups`: "low"/"high" at a threshold (high: ``score >= threshold``, the same rule as
  the threshold metrics) or quantile groups "Q1".."Qk".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.io.errors import InputError

__all__ = ["LogRankResult", "kaplan_meier", "logrank_test", "plot_kaplan_meier", "score_groups"]


def _survival_inputs(
    durations: object, events: object | None, groups: object | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    t = np.asarray(durations, dtype=np.float64) if durations is not None else np.empty(0)
    if t.ndim != 1 or t.size == 0:
        raise InputError("durations", "a non-empty 1-D array of follow-up times", f"shape {t.shape}")
    bad = ~np.isfinite(t) | (t < 0)
    if bad.any():
        raise InputError(
            "durations", "finite times >= 0", f"{int(bad.sum())} bad values (first at index {int(np.argmax(bad))})"
        )
    if events is None:
        e = np.ones(t.size, dtype=int)
    else:
        ev = np.asarray(events)
        if ev.shape != t.shape:
            raise InputError("events", f"one 0/1 value per case ({t.size})", f"shape {ev.shape}")
        try:
            evf = ev.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError("events", "0/1 (1 = event, 0 = censored)", f"values of type {ev.dtype}") from None
        if not np.isin(evf, (0.0, 1.0)).all():
            raise InputError("events", "0/1 (1 = event, 0 = censored)", f"values {np.unique(evf)[:5].tolist()}")
        e = evf.astype(int)
    g = None
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != t.shape:
            raise InputError("groups", f"one label per case ({t.size})", f"shape {g.shape}")
        if pd.isna(g).any():
            raise InputError("groups", "a label for every case", f"{int(pd.isna(g).sum())} missing labels")
    return t, e, g


def kaplan_meier(
    durations: object, events: object | None = None, groups: object | None = None, alpha: float = 0.05
) -> pd.DataFrame:
    """Kaplan-Meier survival with pointwise (log-log) CIs, for all cases or each group.

    Args:
        durations: Follow-up times (>= 0).
        events: 1 = event, 0 = censored (default: every case is an event).
        groups: Optional group label per case (e.g. from :func:`score_groups`).
        alpha: Two-sided miss rate of the intervals.

    Returns:
        One row per group and time (time 0 first): group ("all" without ``groups``), time,
        survival, ci_low, ci_high, at_risk, events, censored.

    Example (2 of 6 die at t = 10, 2 censored at 20, 1 of 2 dies at 30: S = 2/3, 2/3, 1/3):
        >>> km = kaplan_meier([10, 20, 30, 10, 20, 50], [1, 0, 1, 1, 0, 1])
        >>> km[["time", "survival", "at_risk"]].round(4).values.tolist()[:4]
        [[0.0, 1.0, 6.0], [10.0, 0.6667, 6.0], [20.0, 0.6667, 4.0], [30.0, 0.3333, 2.0]]
    """
    from lifelines import KaplanMeierFitter

    t, e, g = _survival_inputs(durations, events, groups)
    if not 0 < float(alpha) < 1:
        raise InputError("alpha", "a value strictly between 0 and 1", repr(alpha))
    labels = ["all"] if g is None else sorted(pd.unique(g).tolist(), key=str)
    frames = []
    for label in labels:
        sel = np.ones(t.size, dtype=bool) if g is None else g == label
        kmf = KaplanMeierFitter(alpha=float(alpha)).fit(t[sel], e[sel])
        sf = kmf.survival_function_.iloc[:, 0]
        ci = kmf.confidence_interval_
        table = kmf.event_table.reindex(sf.index)
        frames.append(
            pd.DataFrame(
                {
                    "group": label,
                    "time": sf.index.to_numpy(dtype=np.float64),
                    "survival": sf.to_numpy(),
                    "ci_low": ci.iloc[:, 0].to_numpy(),
                    "ci_high": ci.iloc[:, 1].to_numpy(),
                    "at_risk": table["at_risk"].to_numpy(dtype=int),
                    "events": table["observed"].to_numpy(dtype=int),
                    "censored": table["censored"].to_numpy(dtype=int),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class LogRankResult:
    """Log-rank chi-squared, its degrees of freedom (groups - 1) and p-value."""

    statistic: float
    df: int
    p: float
    n_groups: int

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def logrank_test(durations: object, groups: object, events: object | None = None) -> LogRankResult:
    """Log-rank test of equal survival across groups (chi-squared with groups - 1 df), as R ``survdiff``.

    Raises:
        InputError: Bad durations/events/groups, or fewer than two groups.

    Example (lifelines' test against R survdiff):
        >>> r = logrank_test([10, 20, 30, 10, 20, 50], [1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 0, 1])
        >>> round(r.statistic, 6), r.df, round(r.p, 6)
        (0.384615, 1, 0.535143)
    """
    from lifelines.statistics import multivariate_logrank_test

    if groups is None:
        raise InputError("groups", "a group label per case", "None")
    t, e, g = _survival_inputs(durations, events, groups)
    assert g is not None
    k = len(pd.unique(g))
    if k < 2:
        raise InputError("groups", "at least two groups to compare", f"the single group {g[0]!r}")
    r = multivariate_logrank_test(t, g, e)
    return LogRankResult(float(r.test_statistic), int(k - 1), float(r.p_value), int(k))


def score_groups(
    score: object, threshold: float | None = None, quantiles: int | Sequence[float] | None = None
) -> np.ndarray:
    """Split cases by a score: "low"/"high" at ``threshold`` (high: ``score >= threshold``) or by quantiles.

    Args:
        score: One finite number per case.
        threshold: Cut point; give this or ``quantiles``.
        quantiles: ``k`` (equal-count groups "Q1".."Qk", lowest scores in Q1) or the inner quantile
            probabilities, e.g. ``[0.25, 0.75]`` for three groups. Bins are closed on the right, so
            a case equal to a cut point goes to the lower group.

    Example:
        >>> score_groups([0.1, 0.5, 0.7, 0.3], threshold=0.5).tolist()
        ['low', 'high', 'high', 'low']
        >>> score_groups([4, 1, 3, 2], quantiles=2).tolist()
        ['Q2', 'Q1', 'Q2', 'Q1']
    """
    s = np.asarray(score, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise InputError("score", "a non-empty 1-D array", f"shape {s.shape}")
    bad = ~np.isfinite(s)
    if bad.any():
        raise InputError("score", "finite numbers", f"{int(bad.sum())} NaN or infinite values")
    if (threshold is None) == (quantiles is None):
        raise InputError("score_groups", "exactly one of threshold or quantiles", f"{threshold=}, {quantiles=}")
    if threshold is not None:
        if not math.isfinite(float(threshold)):
            raise InputError("threshold", "a finite number", repr(threshold))
        return np.where(s >= float(threshold), "high", "low").astype(object)
    if isinstance(quantiles, int | np.integer):
        if quantiles < 2:
            raise InputError("quantiles", "at least 2 groups", repr(quantiles))
        probs = np.arange(1, int(quantiles)) / int(quantiles)
    else:
        probs = np.asarray(quantiles, dtype=np.float64)
        if probs.ndim != 1 or probs.size == 0 or not ((probs > 0) & (probs < 1)).all() or (np.diff(probs) <= 0).any():
            raise InputError("quantiles", "increasing probabilities strictly between 0 and 1", str(quantiles))
    cuts = np.quantile(s, probs)
    idx = np.searchsorted(cuts, s, side="left")  # group i: (c_{i-1}, c_i]
    counts = np.bincount(idx, minlength=probs.size + 1)
    if (counts == 0).any():
        raise InputError(
            "score",
            f"values spread enough for {probs.size + 1} non-empty quantile groups",
            f"group sizes {counts.tolist()} (tied scores at cut points {cuts.tolist()})",
        )
    return np.array([f"Q{i + 1}" for i in idx], dtype=object)


def plot_kaplan_meier(
    durations: object,
    events: object | None = None,
    groups: object | None = None,
    path: str | Path | None = None,
    time_label: str = "Time",
    title: str | None = None,
    alpha: float = 0.05,
) -> Any:
    """Kaplan-Meier curves (shaded pointwise CIs, ``+`` at censored times), log-rank p in the title.

    Saved as PNG (300 dpi) and SVG when ``path`` is given.

    Example:
        >>> import matplotlib.pyplot as plt
        >>> fig = plot_kaplan_meier([10, 20, 30, 10, 20, 50], [1, 0, 1, 1, 0, 1], [1, 1, 1, 0, 0, 0])
        >>> fig.axes[0].get_title()
        'Kaplan-Meier (log-rank p = 0.535)'
        >>> plt.close(fig)
    """
    import matplotlib.pyplot as plt

    from usher2.evaluate.figures import PALETTE, figure_style, label_and_save

    km = kaplan_meier(durations, events, groups, alpha=alpha)
    t, e, g = _survival_inputs(durations, events, groups)
    heading = title or "Kaplan-Meier"
    if g is not None and len(pd.unique(g)) > 1:
        lr = logrank_test(t, g, e)
        heading += f" (log-rank p = {lr.p:.3g})" if lr.p >= 0.001 else " (log-rank p < 0.001)"
    with figure_style():
        fig, ax = plt.subplots()
        for i, (label, d) in enumerate(km.groupby("group", sort=False)):
            color = PALETTE[i % len(PALETTE)]
            n = int(d["at_risk"].iloc[0])
            ax.step(d["time"], d["survival"], where="post", color=color, label=f"{label} (n = {n})")
            ax.fill_between(d["time"], d["ci_low"], d["ci_high"], step="post", color=color, alpha=0.15, lw=0)
            cens = d[d["censored"] > 0]
            ax.plot(cens["time"], cens["survival"], "+", color=color, ms=6, mew=1)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(left=0)
        label_and_save(fig, ax, (time_label, "Survival probability", heading), "lower left", path)
    return fig
