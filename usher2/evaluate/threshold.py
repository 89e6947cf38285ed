"""Operating point of a score: Youden's threshold, and the metrics at a threshold with Wilson CIs.

A case is called positive when ``score >= threshold``. From the confusion matrix (tn, fp, fn, tp):

    accuracy = (tp + tn) / n,   sensitivity = tp / (tp + fn),   specificity = tn / (tn + fp),
    PPV = tp / (tp + fp),       NPV = tn / (tn + fn).

Each proportion ``k / m`` gets the Wilson score interval (Wilson 1927; Agresti & Coull 1998),

    (k/m + z^2/(2m) ± z sqrt(k/m (1 - k/m)/m + z^2/(4m^2))) / (1 + z^2/m),   z = z_{1-alpha/2},

as computed by ``statsmodels.stats.proportion.proportion_confint(method="wilson")`` (and by R's
``prop.test(correct=FALSE)``). A proportion with denominator 0 (PPV when no case is called
positive, NPV when none is called negative) is NaN, with a note saying why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from usher2.evaluate._checks import check_binary
from usher2.io.errors import InputError

__all__ = ["Proportion", "ThresholdMetrics", "threshold_metrics", "wilson_proportion", "youden_threshold"]


def youden_threshold(y: Any, p: Any) -> float:
    """The probability threshold that maximises sensitivity + specificity - 1 (ties: the lowest).

    Example:
        >>> youden_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])  # 0.8 and 0.35 tie at J = 0.5
        0.35
    """
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(np.asarray(y), np.asarray(p))
    j = tpr - fpr
    best = int(np.flatnonzero(j == j.max())[-1])  # thresholds decrease: the last maximum is the lowest
    return float(min(thr[best], 1.0))


@dataclass(frozen=True)
class Proportion:
    """``numerator / denominator`` with its Wilson interval; NaN (and a ``note``) when the denominator is 0."""

    value: float
    ci_low: float
    ci_high: float
    numerator: int
    denominator: int
    note: str = ""


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0 < a < 1:
        raise InputError("alpha", "a value strictly between 0 and 1 (0.05: a 95% CI)", repr(alpha))
    return a


def wilson_proportion(numerator: int, denominator: int, alpha: float = 0.05, empty_note: str = "") -> Proportion:
    """``numerator / denominator`` with a Wilson score interval; denominator 0 gives NaN and ``empty_note``.

    Example:
        >>> r = wilson_proportion(8, 10)
        >>> round(r.value, 3), round(r.ci_low, 4), round(r.ci_high, 4)
        (0.8, 0.4902, 0.9433)
        >>> wilson_proportion(0, 7).ci_low  # holds the point estimate exactly at k = 0
        0.0
        >>> wilson_proportion(0, 0, empty_note="no case called positive").note
        'no case called positive'
    """
    k, m = int(numerator), int(denominator)
    if m < 0 or k < 0 or k > m:
        raise InputError("proportion", "0 <= numerator <= denominator", f"{k} / {m}")
    a = _check_alpha(alpha)
    if m == 0:
        return Proportion(math.nan, math.nan, math.nan, k, m, empty_note or "denominator is 0")
    lo, hi = proportion_confint(k, m, alpha=a, method="wilson")
    # the Wilson interval always holds k/m; statsmodels' formula can land 1 ulp beside it at k = 0 or
    # k = m (0 of 7 gives a lower bound of 2.8e-17), which made calibration error bars negative
    return Proportion(k / m, min(float(lo), k / m), max(float(hi), k / m), k, m)


@dataclass(frozen=True)
class ThresholdMetrics:
    """Confusion matrix and the five proportions at one threshold (positive: ``score >= threshold``)."""

    threshold: float
    alpha: float
    tn: int
    fp: int
    fn: int
    tp: int
    accuracy: Proportion
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion

    def confusion_matrix(self) -> np.ndarray:
        """``[[tn, fp], [fn, tp]]`` (rows: true class 0, 1; columns: called negative, positive), as sklearn."""
        return np.array([[self.tn, self.fp], [self.fn, self.tp]])

    def as_frame(self) -> pd.DataFrame:
        """One row per metric: metric, value, ci_low, ci_high, numerator, denominator, note."""
        rows = []
        for name in ("accuracy", "sensitivity", "specificity", "ppv", "npv"):
            p: Proportion = getattr(self, name)
            rows.append(
                {
                    "metric": name,
                    "value": p.value,
                    "ci_low": p.ci_low,
                    "ci_high": p.ci_high,
                    "numerator": p.numerator,
                    "denominator": p.denominator,
                    "note": p.note,
                }
            )
        return pd.DataFrame(rows)


def threshold_metrics(y: object, score: object, threshold: float, alpha: float = 0.05) -> ThresholdMetrics:
    """Accuracy, sensitivity, specificity, PPV and NPV at ``threshold``, each with a Wilson CI.

    Args:
        y: 0/1 outcomes (1 = positive); at least 2 cases of each class.
        score: Higher means more likely positive (a probability or any score); finite, not constant.
        threshold: A case is called positive when ``score >= threshold``; any finite number.
        alpha: Two-sided miss rate of the intervals (0.05: 95% CIs).

    Raises:
        InputError: Bad ``y`` or ``score`` (see :func:`usher2.evaluate._checks.check_binary`), a
            non-finite ``threshold`` or ``alpha`` outside (0, 1).

    Example:
        >>> m = threshold_metrics([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.7, 0.4, 0.8, 0.9], 0.5)
        >>> (m.tn, m.fp, m.fn, m.tp), round(m.sensitivity.value, 4)
        ((2, 1, 1, 2), 0.6667)
        >>> m.as_frame()["metric"].tolist()
        ['accuracy', 'sensitivity', 'specificity', 'ppv', 'npv']
    """
    yy, (s,) = check_binary(y, score, names=["score"])
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise InputError("threshold", "a number", repr(threshold)) from None
    if not math.isfinite(t):
        raise InputError("threshold", "a finite number", repr(threshold))
    a = _check_alpha(alpha)
    called = s >= t
    pos = yy == 1
    tp = int((called & pos).sum())
    fp = int((called & ~pos).sum())
    fn = int((~called & pos).sum())
    tn = int((~called & ~pos).sum())
    return ThresholdMetrics(
        threshold=t,
        alpha=a,
        tn=tn,
        fp=fp,
        fn=fn,
        tp=tp,
        accuracy=wilson_proportion(tp + tn, yy.size, a),
        sensitivity=wilson_proportion(tp, tp + fn, a),
        specificity=wilson_proportion(tn, tn + fp, a),
        ppv=wilson_proportion(tp, tp + fp, a, f"no case has score >= {t:g}, so PPV is undefined"),
        npv=wilson_proportion(tn, tn + fn, a, f"no case has score < {t:g}, so NPV is undefined"),
    )
