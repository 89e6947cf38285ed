"""Optimism-corrected internal validation of a binary classifier by the bootstrap (Harrell; R ``rms::validate``).

Efron's enhanced bootstrap (Harrell, Lee & Mark, *Stat Med* 1996; Steyerberg, *Clinical Prediction
Models*, ch. 5), the method of R ``rms::validate(fit, method="boot", B=n_boot)``:

1. Fit the model on all ``n`` rows and score it on those same rows: the *apparent* performance.
2. For each of ``n_boot`` resamples (``n`` rows drawn with replacement; with ``groups``, as many
   whole groups drawn with replacement as there are groups, so a patient's rows stay together),
   fit a fresh :func:`sklearn.base.clone` of the estimator on the resample and score it twice: on
   the resample itself (*training* performance) and on the original data (*test* performance).
3. ``optimism = mean(training - test)`` over the resamples used;
   ``corrected = apparent - optimism``.

A resample holding a single class (nothing to fit or rank) is drawn, skipped and counted in
``n_skipped``; so is one where a metric cannot be computed (a model that separates its resample
perfectly has an infinite calibration slope there; rms likewise drops the resamples whose fit fails).
``n_boot`` in the result is the number of resamples actually used.

Metrics (``p`` the predicted probability of class 1, ``lp = logit(p)``):

- ``"auc"``: ROC AUC (concordance c; ties count 1/2). ``"dxy"``: Somers' ``Dxy = 2 AUC - 1`` (rms' Dxy).
- ``"brier"``: ``mean((p - y)^2)`` (rms' B).
- ``"calibration_slope"`` and ``"calibration_intercept"``: ``b`` and ``a`` of the *joint* logistic
  recalibration fit ``logit P(y=1) = a + b lp`` (maximum likelihood), as rms' ``Slope`` and
  ``Intercept``. Note that this intercept is not the calibration-in-the-large of
  :func:`usher2.evaluate.calibration.calibration_slope_intercept` (``a`` with ``b`` fixed at 1).
  For an unpenalised maximum-likelihood logistic regression the fit on its own training rows gives
  exactly ``b = 1, a = 0`` (the score equations), so the apparent values are 1 and 0 and the
  corrected slope is the familiar shrinkage factor. rms does not fit on the training rows but sets 1
  and 0 there by definition; here they are fitted for any estimator, which agrees for unpenalised
  logistic regression and is honest for penalised or other models.

The recalibration is a two-parameter Newton-Raphson fit in numpy (step-halving, at most 50
iterations), so each resample costs little more than the estimator's own fit and prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from scipy.stats import rankdata

from usher2.evaluate._checks import check_binary
from usher2.io.errors import InputError

__all__ = ["METRICS", "BootstrapValidation", "bootstrap_validation"]

METRICS = ("auc", "dxy", "brier", "calibration_slope", "calibration_intercept")
"""Metric names :func:`bootstrap_validation` knows."""


@dataclass(frozen=True)
class BootstrapValidation:
    """Apparent, optimism and optimism-corrected performance per metric.

    Attributes:
        metrics: Metric names, in the order asked for.
        apparent: Full-data fit scored on the full data, per metric.
        optimism: Mean of (resample fit on resample - resample fit on original data), per metric.
        corrected: ``apparent - optimism``, per metric.
        n_boot: Resamples used.
        n_skipped: Resamples drawn but not used (one class only, or a metric not computable).
        seed: Seed of the resampling.
    """

    metrics: tuple[str, ...]
    apparent: dict[str, float]
    optimism: dict[str, float]
    corrected: dict[str, float]
    n_boot: int
    n_skipped: int
    seed: int
    grouped: bool = field(default=False)

    def as_frame(self) -> pd.DataFrame:
        """One row per metric: metric, apparent, optimism, corrected."""
        return pd.DataFrame(
            {
                "metric": list(self.metrics),
                "apparent": [self.apparent[m] for m in self.metrics],
                "optimism": [self.optimism[m] for m in self.metrics],
                "corrected": [self.corrected[m] for m in self.metrics],
            }
        )

    def as_dict(self) -> dict[str, Any]:
        """Flat dict: ``{metric}_apparent``, ``{metric}_optimism``, ``{metric}_corrected``, counts and seed."""
        out: dict[str, Any] = {}
        for m in self.metrics:
            out[f"{m}_apparent"] = self.apparent[m]
            out[f"{m}_optimism"] = self.optimism[m]
            out[f"{m}_corrected"] = self.corrected[m]
        out.update(n_boot=self.n_boot, n_skipped=self.n_skipped, seed=self.seed, grouped=self.grouped)
        return out


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC with midranks (ties count 1/2)."""
    n1 = int(y.sum())
    n0 = y.size - n1
    r = rankdata(p)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _recalibrate(y: np.ndarray, lp: np.ndarray) -> tuple[float, float]:
    """ML fit of ``logit P(y=1) = a + b lp`` by Newton-Raphson; (nan, nan) if it does not converge."""
    if not np.isfinite(lp).all() or np.ptp(lp) == 0:
        return np.nan, np.nan
    # centre and scale lp for a well-conditioned Newton step, transform back at the end
    mu, sd = float(lp.mean()), float(lp.std())
    z = (lp - mu) / sd
    ybar = float(y.mean())
    beta = np.array([np.log(ybar / (1 - ybar)), 0.0])

    def loglik(b: np.ndarray) -> float:
        eta = b[0] + b[1] * z
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    ll = loglik(beta)
    for _ in range(50):
        eta = beta[0] + beta[1] * z
        mu_ = expit(eta)
        w = mu_ * (1.0 - mu_)
        r = y - mu_
        g = np.array([r.sum(), (r * z).sum()])
        h00, h01, h11 = w.sum(), (w * z).sum(), (w * z * z).sum()
        det = h00 * h11 - h01 * h01
        if not det > 1e-300:
            return np.nan, np.nan
        step = np.array([h11 * g[0] - h01 * g[1], h00 * g[1] - h01 * g[0]]) / det
        t = 1.0
        while True:
            new = beta + t * step
            ll_new = loglik(new)
            if ll_new >= ll - 1e-12 * abs(ll) or t < 1e-10:
                break
            t /= 2
        beta, ll_old, ll = new, ll, ll_new
        if abs(beta[1]) > 1e4:  # separation: the MLE is infinite
            return np.nan, np.nan
        if np.max(np.abs(t * step)) < 1e-10 and abs(ll - ll_old) < 1e-12 * (abs(ll) + 1):
            b = beta[1] / sd
            return float(beta[0] - b * mu), float(b)
    return np.nan, np.nan


def _scores(y: np.ndarray, p: np.ndarray, metrics: Sequence[str]) -> np.ndarray:
    """The requested metrics of predictions ``p`` against ``y``, in order."""
    out = np.empty(len(metrics))
    cal: tuple[float, float] | None = None
    auc: float | None = None
    for i, m in enumerate(metrics):
        if m in ("auc", "dxy"):
            if auc is None:
                auc = _auc(y, p)
            out[i] = auc if m == "auc" else 2 * auc - 1
        elif m == "brier":
            out[i] = float(np.mean((p - y) ** 2))
        else:
            if cal is None:
                with np.errstate(divide="ignore", invalid="ignore"):
                    lp = np.log(p) - np.log1p(-p)
                cal = _recalibrate(y, lp)
            out[i] = cal[1] if m == "calibration_slope" else cal[0]
    return out


def _take(X: Any, idx: np.ndarray) -> Any:
    return X.iloc[idx] if hasattr(X, "iloc") else X[idx]


def _predict(model: Any, X: Any) -> np.ndarray:
    proba = np.asarray(model.predict_proba(X))
    classes = list(getattr(model, "classes_", [0, 1]))
    col = classes.index(1) if 1 in classes else proba.shape[1] - 1
    return proba[:, col].astype(np.float64)


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    """``metrics`` as a tuple (one name may be given as a string); an :class:`InputError` for an
    empty selection or an unknown name."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise InputError("metrics", f"a non-empty selection of {list(METRICS)}", repr(unknown or list(metrics)))
    return metrics


def _check_table(X: Any, n: int) -> Any:
    """``X`` as a 2-D table of ``n`` rows: a DataFrame as it is, anything else as an array (a 1-D one
    as a column)."""
    if not hasattr(X, "iloc"):
        X = np.asarray(X)
        if X.ndim == 1:
            X = X[:, None]
    if X.ndim != 2 or X.shape[0] != n:
        raise InputError("X", f"a 2-D table with one row per case ({n})", f"shape {X.shape}")
    return X


def _group_members(groups: object, n: int) -> list[np.ndarray]:
    """The row numbers of each group (groups in sorted order, rows in their order)."""
    g = np.asarray(groups)
    if g.shape != (n,):
        raise InputError("groups", f"one label per case ({n})", f"shape {g.shape}")
    _, inv = np.unique(g, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    counts = np.bincount(inv)
    return np.split(order, np.cumsum(counts)[:-1])


def _apparent(estimator: Any, X: Any, y: np.ndarray, metrics: tuple[str, ...]) -> np.ndarray:
    """The metrics of the estimator fitted on all rows and scored on them.

    Raises:
        InputError: A metric that cannot be computed (e.g. the slope of a perfectly separating model).
    """
    from sklearn.base import clone

    full = clone(estimator).fit(X, y)
    apparent = _scores(y, _predict(full, X), metrics)
    if not np.isfinite(apparent).all():
        bad = [m for m, v in zip(metrics, apparent, strict=True) if not np.isfinite(v)]
        raise InputError(
            "estimator",
            "predictions whose metrics can be computed on the full data",
            f"no value for {bad}",
            "a model that separates the outcomes perfectly has an infinite calibration slope",
        )
    return apparent


def _optimism_draws(
    estimator: Any,
    X: Any,
    y: np.ndarray,
    metrics: tuple[str, ...],
    *,
    n_boot: int,
    seed: int,
    members: list[np.ndarray] | None,
) -> tuple[np.ndarray, int]:
    """Draw resamples (rows, or whole groups of ``members``) until ``n_boot`` are usable.

    Returns:
        ``(diffs, skipped)``: per resample used, training minus test performance of a fit on it;
        and the resamples skipped (one class only, or a metric not computable).

    Raises:
        InputError: Too many unusable resamples (more than ``100 * n_boot + 100`` draws in all).
    """
    from sklearn.base import clone

    n = y.size
    rng = np.random.default_rng(seed)
    diffs = np.empty((n_boot, len(metrics)))
    used = skipped = 0
    max_draws = 100 * n_boot + 100
    while used < n_boot:
        if used + skipped >= max_draws:
            raise InputError(
                "y", "resamples that hold both classes", f"{skipped} of {used + skipped} resamples unusable"
            )
        if members is None:
            idx = rng.integers(0, n, n)
        else:
            idx = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        yb = y[idx]
        k = int(yb.sum())
        if k == 0 or k == yb.size:
            skipped += 1
            continue
        Xb = _take(X, idx)
        model = clone(estimator).fit(Xb, yb)
        d = _scores(yb, _predict(model, Xb), metrics) - _scores(y, _predict(model, X), metrics)
        if not np.isfinite(d).all():
            skipped += 1
            continue
        diffs[used] = d
        used += 1
    return diffs, skipped


def bootstrap_validation(
    estimator: Any,
    X: Any,
    y: object,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    groups: object | None = None,
    metrics: Sequence[str] = ("auc", "brier", "calibration_slope", "calibration_intercept"),
) -> BootstrapValidation:
    """Harrell's optimism-corrected bootstrap validation of a probabilistic binary classifier.

    Args:
        estimator: An unfitted scikit-learn classifier with ``predict_proba`` (cloned, never fitted itself).
        X: Predictors, an array or a DataFrame with one row per case.
        y: 0/1 outcomes.
        n_boot: Resamples to use (at least 1; single-class resamples are drawn again and counted).
        seed: Seed of the resampling (``numpy.random.default_rng``).
        groups: Optional cluster labels (patients), one per row: whole groups are resampled.
        metrics: Any of ``"auc"``, ``"dxy"``, ``"brier"``, ``"calibration_slope"``, ``"calibration_intercept"``.

    Returns:
        :class:`BootstrapValidation` with apparent, optimism and corrected values per metric.

    Raises:
        InputError: Bad ``y``, ``X`` or ``groups`` of another length, ``n_boot < 1``, an unknown
            metric, or a full-data fit whose metrics cannot be computed.

    Example (an unpenalised logistic regression is calibrated on its own training data):
        >>> from sklearn.linear_model import LogisticRegression
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(200, 2))
        >>> y = (rng.uniform(size=200) < 1 / (1 + np.exp(-X[:, 0]))).astype(int)
        >>> r = bootstrap_validation(LogisticRegression(C=1e10, tol=1e-10), X, y, n_boot=50)
        >>> round(r.apparent["calibration_slope"], 4), round(abs(r.apparent["calibration_intercept"]), 4)
        (1.0, 0.0)
        >>> r.n_boot, r.corrected["auc"] < r.apparent["auc"]
        (50, True)
    """
    yy, _ = check_binary(y)
    n = yy.size
    if not isinstance(n_boot, int | np.integer) or isinstance(n_boot, bool) or n_boot < 1:
        raise InputError("n_boot", "a whole number of resamples, at least 1", repr(n_boot))
    metrics = _check_metrics(metrics)
    X = _check_table(X, n)
    members = None if groups is None else _group_members(groups, n)
    if not hasattr(estimator, "fit"):
        raise InputError("estimator", "a scikit-learn classifier with fit and predict_proba", type(estimator).__name__)

    apparent = _apparent(estimator, X, yy, metrics)
    diffs, skipped = _optimism_draws(estimator, X, yy, metrics, n_boot=n_boot, seed=seed, members=members)
    optimism = diffs.mean(axis=0)
    corrected = apparent - optimism
    return BootstrapValidation(
        metrics=metrics,
        apparent={m: float(v) for m, v in zip(metrics, apparent, strict=True)},
        optimism={m: float(v) for m, v in zip(metrics, optimism, strict=True)},
        corrected={m: float(v) for m, v in zip(metrics, corrected, strict=True)},
        n_boot=len(diffs),
        n_skipped=skipped,
        seed=int(seed),
        grouped=groups is not None,
    )
