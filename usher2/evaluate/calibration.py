"""Calibration of predicted probabilities: binned curve, logistic recalibration, Brier score, Hosmer-Lemeshow.

- :func:`calibration_curve`: cases are binned by predicted probability (``"quantile"``: equal-count
  bins at the quantiles of ``p``; ``"uniform"``: equal-width bins on [0, 1]); intervals are closed
  on the right and empty bins are dropped, as ``sklearn.calibration.calibration_curve``, whose
  ``prob_true``/``prob_pred`` it reproduces. Each bin's observed event rate has a Wilson CI.
- :func:`calibration_slope_intercept`: logistic recalibration (Cox 1958; Steyerberg, *Clinical
  Prediction Models*). The slope is ``b`` in ``logit P(y=1) = a + b logit(p)`` (the "Slope" of R
  ``rms::val.prob``); calibration-in-the-large is ``a`` in ``logit P(y=1) = a + offset(logit(p))``.
  Both are maximum-likelihood fits (statsmodels GLM, binomial family) with Wald CIs. Ideal: slope 1,
  intercept 0. ``p`` must lie strictly inside (0, 1): a probability of exactly 0 or 1 has no logit,
  and clipping it would silently pick an arbitrary, huge logit, so it is refused instead.
- :func:`brier_score` ``= mean((p - y)^2)``; :func:`scaled_brier_score` ``= 1 - Brier / (ybar (1 - ybar))``
  (the Brier score of predicting the prevalence for everyone is ``ybar (1 - ybar)``).
- :func:`hosmer_lemeshow` follows R ``ResourceSelection::hoslem.test`` (version 0.3-5): breaks
  ``unique(quantile(p, seq(0, 1, 1/g)))`` (type-7 quantiles, numpy's default ``"linear"``), groups
  ``cut(p, breaks, include.lowest=TRUE)`` (right-closed, the lowest break included), observed and
  expected counts of both outcomes per group (``sum(1 - y), sum(y)`` and ``sum(1 - p), sum(p)``),
  ``chi2 = sum((obs - exp)^2 / exp)`` over both columns and ``df = g - 2`` with the *requested* ``g``
  (R does so even when tied quantiles leave fewer groups; ``n_groups`` reports how many there were).
  Note: for predictions made outside the sample tested (external validation) the statistic is
  closer to chi-squared with ``g`` df, so ``g - 2`` rejects good calibration somewhat too often
  (about 11% instead of 5% at g = 10); we keep R's df for comparability.
  One deviation: a break interval holding no case (possible with interpolated quantiles) gives 0/0
  and a NaN statistic in R; here it is left out of the sum and reported with ``n = 0`` in the table.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from usher2.evaluate._checks import check_binary
from usher2.evaluate.threshold import wilson_proportion
from usher2.io.errors import InputError

__all__ = [
    "CalibrationFit",
    "HosmerLemeshowResult",
    "brier_score",
    "calibration_curve",
    "calibration_slope_intercept",
    "hosmer_lemeshow",
    "plot_calibration",
    "scaled_brier_score",
]


def _probabilities(y: object, p: object, name: str = "p", open_interval: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``y`` (0/1) and ``p`` checked by ``check_binary``, plus ``p`` inside [0, 1] (or (0, 1))."""
    yy, (pp,) = check_binary(y, p, names=[name])
    bad = ~((pp > 0) & (pp < 1)) if open_interval else ~((pp >= 0) & (pp <= 1))
    if bad.any():
        where = "strictly between 0 and 1" if open_interval else "between 0 and 1"
        fix = "logit(0) and logit(1) are infinite; do not clip, fix the model output" if open_interval else None
        raise InputError(
            name,
            f"probabilities {where}",
            f"{int(bad.sum())} values outside (first {pp[bad][0]:g} at index {int(np.argmax(bad))})",
            fix,
        )
    return yy, pp


def calibration_curve(y: object, p: object, n_bins: int = 10, strategy: str = "quantile") -> pd.DataFrame:
    """Observed event rate against mean predicted probability in bins of ``p``, with Wilson CIs.

    Args:
        y: 0/1 outcomes.
        p: Predicted probabilities in [0, 1].
        n_bins: Number of bins requested (tied quantiles can merge some; empty bins are dropped).
        strategy: ``"quantile"`` (equal counts) or ``"uniform"`` (equal widths on [0, 1]).

    Returns:
        One row per non-empty bin: bin (1-based), lower, upper (the bin's edges), n, events,
        mean_predicted, observed, ci_low, ci_high (95% Wilson CI of ``observed``).

    Example:
        >>> c = calibration_curve([0, 0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7, 0.9], n_bins=2)
        >>> c["n"].tolist(), c["events"].tolist(), c["observed"].round(4).tolist()
        ([3, 3], [1, 2], [0.3333, 0.6667])
    """
    yy, pp = _probabilities(y, p)
    if not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise InputError("n_bins", "a positive whole number", repr(n_bins))
    if strategy == "quantile":
        edges = np.quantile(pp, np.linspace(0, 1, n_bins + 1))
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise InputError("strategy", "'quantile' or 'uniform'", repr(strategy))
    # as sklearn: bin i holds edges[i] < p <= edges[i + 1]; the first bin also holds its lower edge
    ids = np.searchsorted(edges[1:-1], pp, side="left")
    rows = []
    for b in range(len(edges) - 1):
        sel = ids == b
        n = int(sel.sum())
        if n == 0:
            continue
        k = int(yy[sel].sum())
        w = wilson_proportion(k, n)
        rows.append(
            {
                "bin": b + 1,
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "n": n,
                "events": k,
                "mean_predicted": float(pp[sel].mean()),
                "observed": w.value,
                "ci_low": w.ci_low,
                "ci_high": w.ci_high,
            }
        )
    out = pd.DataFrame(rows)
    out["bin"] = np.arange(1, len(out) + 1)
    return out


@dataclass(frozen=True)
class CalibrationFit:
    """Calibration slope and calibration-in-the-large (intercept) with Wald CIs."""

    slope: float
    slope_ci_low: float
    slope_ci_high: float
    intercept: float
    intercept_ci_low: float
    intercept_ci_high: float
    n: int
    alpha: float

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def calibration_slope_intercept(y: object, p: object, alpha: float = 0.05) -> CalibrationFit:
    """Calibration slope (``y ~ logit(p)``) and calibration-in-the-large (``y ~ offset(logit(p))``).

    Args:
        y: 0/1 outcomes.
        p: Predicted probabilities strictly inside (0, 1) (0 or 1 is refused, not clipped).
        alpha: Two-sided miss rate of the Wald CIs.

    Raises:
        InputError: Bad ``y``/``p``, or a perfectly separated sample (the slope is infinite).

    Example (outcome rates 1/4 and 3/4 where the model says expit(-1) and expit(1): slope ln 3):
        >>> from scipy.special import expit
        >>> p = expit(np.repeat([-1.0, 1.0], 4))
        >>> f = calibration_slope_intercept([1, 0, 0, 0, 1, 1, 1, 0], p)
        >>> round(f.slope, 6), round(abs(f.intercept), 6)
        (1.098612, 0.0)
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationError, PerfectSeparationWarning

    yy, pp = _probabilities(y, p, open_interval=True)
    if not 0 < float(alpha) < 1:
        raise InputError("alpha", "a value strictly between 0 and 1", repr(alpha))
    lp = _logit(pp)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PerfectSeparationWarning)
            joint = sm.GLM(yy, sm.add_constant(lp, has_constant="add"), family=sm.families.Binomial()).fit(tol=1e-12)
            citl = sm.GLM(yy, np.ones((yy.size, 1)), family=sm.families.Binomial(), offset=lp).fit(tol=1e-12)
    except (PerfectSeparationError, PerfectSeparationWarning):
        raise InputError(
            "p", "outcomes not perfectly separated by p", "perfect separation (the slope is infinite)"
        ) from None
    ci_joint = np.asarray(joint.conf_int(alpha=alpha))
    ci_citl = np.asarray(citl.conf_int(alpha=alpha))
    return CalibrationFit(
        slope=float(joint.params[1]),
        slope_ci_low=float(ci_joint[1, 0]),
        slope_ci_high=float(ci_joint[1, 1]),
        intercept=float(citl.params[0]),
        intercept_ci_low=float(ci_citl[0, 0]),
        intercept_ci_high=float(ci_citl[0, 1]),
        n=int(yy.size),
        alpha=float(alpha),
    )


def brier_score(y: object, p: object) -> float:
    """Mean squared difference between predicted probability and outcome (0 is perfect).

    Example:
        >>> round(brier_score([0, 1, 0, 1], [0.1, 0.8, 0.3, 0.6]), 4)  # (0.01 + 0.04 + 0.09 + 0.16) / 4
        0.075
    """
    yy, pp = _probabilities(y, p)
    return float(np.mean((pp - yy) ** 2))


def scaled_brier_score(y: object, p: object) -> float:
    """``1 - Brier / (ybar (1 - ybar))``: 1 is perfect, 0 is no better than predicting the prevalence.

    Example:
        >>> round(scaled_brier_score([0, 1, 0, 1], [0.1, 0.8, 0.3, 0.6]), 4)  # 1 - 0.075 / 0.25
        0.7
    """
    yy, _ = _probabilities(y, p)
    ybar = float(yy.mean())
    return 1.0 - brier_score(y, p) / (ybar * (1.0 - ybar))


@dataclass(frozen=True)
class HosmerLemeshowResult:
    """Hosmer-Lemeshow statistic, its df (``g - 2``), p-value and the per-group table."""

    statistic: float
    df: int
    p: float
    g: int
    n_groups: int
    table: pd.DataFrame


def hosmer_lemeshow(y: object, p: object, g: int = 10) -> HosmerLemeshowResult:
    """Hosmer-Lemeshow goodness-of-fit test, as R ``ResourceSelection::hoslem.test(y, p, g)``.

    Args:
        y: 0/1 outcomes.
        p: Predicted probabilities in [0, 1].
        g: Number of quantile groups requested (at least 3; ``df = g - 2``).

    Returns:
        statistic (chi-squared), df, p, g, n_groups (distinct groups after tied quantiles merge)
        and ``table``: group, lower, upper, n, observed_0, observed_1, expected_0, expected_1.

    Example (four groups of two, one event each; chi2 = 29/12 by hand):
        >>> r = hosmer_lemeshow([1, 0, 1, 0, 1, 0, 1, 0], [0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.8, 0.8], g=4)
        >>> round(r.statistic, 6), r.df, round(r.p, 6)
        (2.416667, 2, 0.298695)
    """
    yy, pp = _probabilities(y, p)
    if not isinstance(g, int | np.integer) or g < 3:
        raise InputError("g", "a whole number of groups >= 3 (df = g - 2)", repr(g))
    g = int(g)
    breaks = np.unique(np.quantile(pp, np.arange(g + 1) / g))  # R: unique(quantile(p, seq(0, 1, 1/g)))
    if breaks.size < 2:
        raise InputError("p", "predicted probabilities that vary", f"the single value {breaks[0]:g}")
    # R cut(..., include.lowest=TRUE): (b_i, b_{i+1}], the first interval closed on both sides
    ids = np.clip(np.searchsorted(breaks, pp, side="left") - 1, 0, breaks.size - 2)
    rows = []
    chi2 = 0.0
    for i in range(breaks.size - 1):
        sel = ids == i
        o1 = float(yy[sel].sum())
        o0 = float(sel.sum()) - o1
        e1 = float(pp[sel].sum())
        e0 = float(sel.sum()) - e1
        if sel.any():
            chi2 += sum((o - e) ** 2 / e for o, e in ((o0, e0), (o1, e1)) if e > 0)
        rows.append(
            {
                "group": i + 1,
                "lower": float(breaks[i]),
                "upper": float(breaks[i + 1]),
                "n": int(sel.sum()),
                "observed_0": o0,
                "observed_1": o1,
                "expected_0": e0,
                "expected_1": e1,
            }
        )
    df = g - 2
    return HosmerLemeshowResult(
        statistic=float(chi2),
        df=df,
        p=float(stats.chi2.sf(chi2, df)),
        g=g,
        n_groups=int(breaks.size - 1),
        table=pd.DataFrame(rows),
    )


def plot_calibration(
    y: object,
    p: object | Mapping[str, object],
    n_bins: int = 10,
    strategy: str = "quantile",
    path: str | Path | None = None,
    title: str | None = None,
) -> Any:
    """Calibration plot: observed rate (Wilson 95% CI) against mean predicted probability, per bin.

    ``p`` is one model's probabilities or a mapping name -> probabilities. When every ``p`` lies
    strictly inside (0, 1) the legend gives the calibration slope and intercept. Saved as PNG
    (300 dpi) and SVG when ``path`` is given.

    Example:
        >>> import matplotlib.pyplot as plt
        >>> fig = plot_calibration([0, 0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7, 0.9], n_bins=2)
        >>> fig.axes[0].get_xlabel()
        'Predicted probability'
        >>> plt.close(fig)
    """
    import matplotlib.pyplot as plt

    from usher2.evaluate.figures import COLORS, PALETTE, figure_style, label_and_save

    models = dict(p) if isinstance(p, Mapping) else {"Model": p}
    with figure_style():
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1], ls="--", color=COLORS["reference"], lw=1, label="Ideal")
        for i, (name, probs) in enumerate(models.items()):
            c = calibration_curve(y, probs, n_bins=n_bins, strategy=strategy)
            label = str(name)
            pp = np.asarray(probs, dtype=np.float64)
            if ((pp > 0) & (pp < 1)).all():
                f = calibration_slope_intercept(y, pp)
                label += f" (slope {f.slope:.2f}, intercept {f.intercept:.2f})"
            err = np.vstack([c["observed"] - c["ci_low"], c["ci_high"] - c["observed"]])
            ax.errorbar(
                c["mean_predicted"],
                c["observed"],
                yerr=err,
                fmt="o-",
                ms=4,
                capsize=2,
                color=PALETTE[i % len(PALETTE)],
                label=label,
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        heading = title or f"Calibration ({n_bins} {strategy} bins)"
        label_and_save(fig, ax, ("Predicted probability", "Observed proportion (95% CI)", heading), "upper left", path)
    return fig
