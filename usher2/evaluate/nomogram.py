"""Points-scale nomograms for fitted logistic models, in the style of R ``rms::nomogram``.

A fitted model is first written as one linear predictor over its predictors in their original
units, ``LP = b_0 + sum_j b_j x_j`` (the pre-processing steps are folded into the coefficients,
see below). Each predictor ``j`` has a range ``[lo_j, hi_j]`` (given, taken from data, or the
training mean +/- 2 SD that a StandardScaler in the model recorded). Then, as rms does:

* ``min_j = min(b_j lo_j, b_j hi_j)`` (the smallest contribution over the range) and
  ``span_j = |b_j| (hi_j - lo_j)``; the predictor with the largest span gets 0-100 points:
  ``scale = max_j span_j`` (linear-predictor units per 100 points).
* ``points_j(x) = 100 (b_j x - min_j) / scale``; total points ``T = sum_j points_j(x_j)``.
* ``LP = b_0 + sum_j min_j + T scale / 100``: exact, since the map is linear (values outside
  the drawn range give points outside 0-100 and still map back exactly).
* ``p = expit(s LP + o)``: the model's own probability; ``s = 1, o = 0`` for a logistic
  regression, and the Platt parameters (``s = -a``, ``o = -b``) when the model is wrapped in
  ``CalibratedClassifierCV(method="sigmoid", ensemble=False)``. Isotonic and temperature
  calibration are refused: an isotonic map is a step function with flat runs (one probability
  has many positions, so the Probability axis cannot be drawn); re-fit with sigmoid calibration
  or draw the uncalibrated model.

**Models.** A binary ``LogisticRegression``; a ``Pipeline`` ending in one whose earlier steps
are per-feature affine maps or selections (``SimpleImputer``: identity on observed values,
``StandardScaler``, ``MinMaxScaler``, ``MaxAbsScaler``, ``RobustScaler``, any selector such as
usher2's ICC/univariate/correlation/LASSO selectors, a ``ColumnTransformer`` of those, nested
pipelines): the early-fusion models of :func:`usher2.fusion.models.build_model`; usher2's
:class:`~usher2.fusion.models.LateFusionClassifier`, whose predictors are the source scores
(Radscore ``radiomics_score``, Deep Score ``deep_score``) and the clinical variables, as the
nomogram studies draw them; and ``CalibratedClassifierCV(ensemble=False, method="sigmoid")``
around any of these (what :func:`usher2.fusion.cv.fit_final` returns). Predictors whose
coefficient is 0 (dropped by a selector) are left out. A missing value is scored at the value
the model's imputer fills in (in original units), so total points still match the model.

Example:
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> rng = np.random.default_rng(0); X = rng.normal(size=(200, 2)); y = (X[:, 0] + rng.normal(size=200) > 0)
    >>> nomo = nomogram(LogisticRegression().fit(X, y), ["age", "size"], ranges={"age": (-3, 3), "size": (-3, 3)})
    >>> float(nomo.points(np.array([[3.0, 0.0]]))["age"].iloc[0])
    100.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from usher2.fusion.introspect import SUPPORTED_MODELS
from usher2.fusion.introspect import linear_form as _linear_form
from usher2.io.errors import InputError

__all__ = ["SUPPORTED_MODELS", "Nomogram", "nomogram"]

_PROB_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
_PROB_PRIORITY = (0.5, 0.1, 0.9, 0.01, 0.99, 0.05, 0.95, 0.2, 0.8, 0.3, 0.7, 0.02, 0.98, 0.4, 0.6)


def _nice_ticks(lo: float, hi: float, nbins: int) -> np.ndarray:
    from matplotlib.ticker import MaxNLocator

    ticks = MaxNLocator(nbins=max(nbins, 2), steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    tol = 1e-9 * max(abs(hi - lo), 1e-300)
    ticks = ticks[(ticks >= lo - tol) & (ticks <= hi + tol)]
    ticks = np.round(ticks, 12)
    return ticks if len(ticks) >= 2 else np.array([lo, hi])


def _label(v: float) -> str:
    return f"{float(np.round(v, 10)):g}"


@dataclass
class Nomogram:
    """A drawn points scale for a linear logistic model (see the module docstring for the formulas).

    Attributes:
        coefficients: One row per predictor: ``predictor``, ``coef`` (log-odds per original unit),
            ``low``, ``high`` (the drawn range), ``min_contribution`` (``min_j``),
            ``max_points`` (points at the range's far end), ``fill`` (value used for a missing input).
        intercept: ``b_0`` in original units.
        scale: Linear-predictor units per 100 points (``max_j span_j``).
        axes: The tick table: ``predictor`` (axis name), ``value`` (tick value in the axis' units),
            ``points`` (the tick's position: predictor points on the predictor axes and the
            ``Points`` axis, total points on the ``Total Points``, ``Linear Predictor`` and
            ``Probability`` axes).
        prob_slope, prob_offset: ``p = expit(prob_slope * LP + prob_offset)``.
        outcome: Label of the probability axis.
    """

    coefficients: pd.DataFrame
    intercept: float
    scale: float
    axes: pd.DataFrame
    prob_slope: float = 1.0
    prob_offset: float = 0.0
    outcome: str = "Probability"
    input_names: list[str] = field(default_factory=list)
    to_predictors: Callable[[pd.DataFrame], pd.DataFrame] | None = field(default=None, repr=False)

    @property
    def predictors(self) -> list[str]:
        return self.coefficients["predictor"].tolist()

    @property
    def points_per_unit(self) -> float:
        """Points per unit of the linear predictor (``100 / scale``)."""
        return 100.0 / self.scale

    @property
    def max_total_points(self) -> float:
        return float(self.coefficients["max_points"].sum())

    def predictor_values(self, X: Any) -> pd.DataFrame:
        """The predictors of ``X`` in original units (missing values filled as the model fills them).

        ``X``: a DataFrame holding the predictor columns; for a late-fusion model also the raw
        feature table (the source scores are computed from it); or an array whose columns are
        the model's input columns in order.
        """
        preds = self.predictors
        if not isinstance(X, pd.DataFrame):
            arr = np.asarray(X, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] != len(self.input_names):
                raise InputError(
                    "X", f"an array of shape (n, {len(self.input_names)}) (the model's input columns)", str(arr.shape)
                )
            X = pd.DataFrame(arr, columns=self.input_names)
        if not set(preds) <= set(map(str, X.columns)):
            if self.to_predictors is None:
                missing = sorted(set(preds) - set(map(str, X.columns)))
                raise InputError("X", "a table holding the nomogram's predictors", f"missing {missing}")
            X = self.to_predictors(X)
        values = X.rename(columns=str)[preds].astype(np.float64)
        fill = dict(zip(preds, self.coefficients["fill"], strict=True))
        return values.fillna({k: v for k, v in fill.items() if np.isfinite(v)})

    def points(self, X: Any) -> pd.DataFrame:
        """Points of every predictor for every case (``100 (b_j x - min_j) / scale``).

        Example:
            >>> from sklearn.linear_model import LogisticRegression
            >>> lr = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
            >>> nomogram(lr, ranges={"x0": (0, 3)}).points(np.array([[1.5]]))["x0"].round(6).tolist()
            [50.0]
        """
        values = self.predictor_values(X)
        c = self.coefficients
        pts = (values.to_numpy() * c["coef"].to_numpy() - c["min_contribution"].to_numpy()) * self.points_per_unit
        return pd.DataFrame(pts, index=values.index, columns=self.predictors)

    def total_points(self, X: Any) -> np.ndarray:
        """Total points of every case.

        Example:
            >>> from sklearn.linear_model import LogisticRegression
            >>> lr = LogisticRegression().fit([[0.0, 1], [1, 0], [2, 1], [3, 0]], [0, 0, 1, 1])
            >>> nomo = nomogram(lr, ranges={"x0": (0, 3), "x1": (0, 1)})
            >>> X = np.array([[2.0, 1.0]])
            >>> bool(np.isclose(nomo.linear_predictor_from_points(nomo.total_points(X))[0], lr.decision_function(X)[0]))
            True
        """
        return self.points(X).to_numpy().sum(axis=1)

    def linear_predictor_from_points(self, total: Any) -> np.ndarray:
        """``LP = b_0 + sum_j min_j + T scale / 100``.

        Example:
            >>> from sklearn.linear_model import LogisticRegression
            >>> lr = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
            >>> nomo = nomogram(lr, ranges={"x0": (0, 3)})
            >>> bool(np.isclose(nomo.linear_predictor_from_points([100.0])[0], lr.decision_function([[3.0]])[0]))
            True
        """
        t = np.asarray(total, dtype=np.float64)
        return self.intercept + float(self.coefficients["min_contribution"].sum()) + t * self.scale / 100.0

    def points_from_linear_predictor(self, lp: Any) -> np.ndarray:
        """The inverse of :meth:`linear_predictor_from_points`."""
        offset = self.intercept + float(self.coefficients["min_contribution"].sum())
        return (np.asarray(lp, dtype=np.float64) - offset) * self.points_per_unit

    def probability_from_points(self, total: Any) -> np.ndarray:
        """The model's probability at total points ``T``: ``expit(s LP(T) + o)``.

        Example:
            >>> from sklearn.linear_model import LogisticRegression
            >>> lr = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
            >>> nomo = nomogram(lr, ranges={"x0": (0, 3)})
            >>> bool(np.isclose(nomo.probability_from_points([50.0])[0], lr.predict_proba([[1.5]])[0, 1]))
            True
        """
        return expit(self.prob_slope * self.linear_predictor_from_points(total) + self.prob_offset)

    def plot(self, path: str | Path | None = None, title: str | None = None) -> Any:
        """Draw the nomogram (rms layout) and save it as PNG + SVG when ``path`` is given.

        Rows from the top: ``Points`` (0-100), one axis per predictor (ticks in original units),
        ``Total Points``, ``Linear Predictor`` and the probability axis. The total-points rows
        are drawn on the same width as the points row (``0 .. max total`` squeezed to 0-100).

        Example:
            >>> import matplotlib.pyplot as plt
            >>> from sklearn.linear_model import LogisticRegression
            >>> lr = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
            >>> fig = nomogram(lr, ranges={"x0": (0, 3)}).plot()
            >>> plt.close(fig)
        """
        import matplotlib.pyplot as plt

        from usher2.evaluate.figures import COLORS, figure_style, save_figure

        total_axes = ("Total Points", "Linear Predictor", self.outcome)
        rows = ["Points", *self.predictors, *total_axes]
        squeeze = 100.0 / self.max_total_points
        with figure_style():
            fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 0.6))
            for i, name in enumerate(rows):
                y = -float(i)
                ticks = self.axes[self.axes["predictor"] == name]
                x = ticks["points"].to_numpy() * (squeeze if name in total_axes else 1.0)
                if not len(x):
                    continue
                color = COLORS["model"] if name in total_axes else "black"
                span = [x.min(), x.max()]
                if name in self.predictors:  # the whole drawn range, 0 .. the predictor's maximum points
                    span = [0.0, float(self.coefficients.set_index("predictor").at[name, "max_points"])]
                ax.plot(span, [y, y], color=color, lw=0.9, solid_capstyle="butt")
                for xi, value in zip(x, ticks["value"], strict=True):
                    ax.plot([xi, xi], [y, y + 0.12], color=color, lw=0.7)
                    ax.text(xi, y + 0.17, _label(value), ha="center", va="bottom", fontsize=6.5)
                ax.text(-4, y, name, ha="right", va="center", fontsize=8)
            ax.set_xlim(-2, 102)
            ax.set_ylim(-len(rows) + 0.5, 0.6)
            ax.axis("off")
            if title:
                ax.set_title(title)
            if path is not None:
                save_figure(fig, path)
        return fig


def _combined(form: Any, combine: Mapping[str, Sequence[str]]) -> Any:
    """``form`` with each group of input columns replaced by one predictor: its summed contribution."""
    from usher2.fusion.introspect import Affine, LinearForm

    index = {n: i for i, n in enumerate(form.names)}
    grouped: dict[str, list[int]] = {}
    for axis, cols in combine.items():
        unknown = sorted(set(map(str, cols)) - set(index))
        if unknown:
            raise InputError(f"combine[{axis!r}]", "input columns of the model", f"unknown {unknown}")
        grouped[str(axis)] = [index[str(c)] for c in cols]
    taken = {i for idx in grouped.values() for i in idx}
    rest = [i for i in range(len(form.names)) if i not in taken]
    names = [*grouped, *(form.names[i] for i in rest)]
    coef = np.r_[np.ones(len(grouped)), form.coef[rest]]
    cols = [Affine(k) for k in range(len(grouped))]
    cols += [replace(form.cols[i], source=len(grouped) + k) for k, i in enumerate(rest)]
    inner = form.to_predictors

    def to_predictors(X: pd.DataFrame) -> pd.DataFrame:
        X = X.rename(columns=str)
        base = inner(X) if inner is not None and not set(form.names) <= set(X.columns) else X
        out = {}
        for axis, idx in grouped.items():
            parts = [
                base[form.names[i]]
                .astype(np.float64)
                .fillna(form.cols[i].fill if form.cols[i].fill is not None else np.nan)
                * form.coef[i]
                for i in idx
            ]
            out[axis] = sum(parts) if parts else pd.Series(0.0, index=base.index)
        for i in rest:
            out[form.names[i]] = base[form.names[i]]
        return pd.DataFrame(out, index=base.index)

    return LinearForm(names, coef, form.intercept, cols, form.prob, to_predictors)


def _axis_rows(
    form: Any, keep: list[int], preds: list[str], given: Mapping[str, Any], data: pd.DataFrame | None
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray | None]]:
    """Per predictor: its coefficient, drawn range, smallest contribution and span (rms), and the
    tick levels of a two-valued predictor."""
    rows: list[dict[str, Any]] = []
    ticks_of: dict[str, np.ndarray | None] = {}
    for i, name in zip(keep, preds, strict=True):
        col = form.cols[i]
        levels = None
        if name in given:
            lo, hi = (float(v) for v in given[name])
        elif data is not None and data[name].notna().any():
            observed = data[name].dropna()
            lo, hi = float(observed.min()), float(observed.max())
            levels = np.unique(observed) if observed.nunique() == 2 else None
        elif col.center is not None and col.spread is not None and col.spread > 0:
            lo, hi = col.center - 2 * col.spread, col.center + 2 * col.spread
        else:
            raise InputError(
                f"ranges[{name!r}]", "a (low, high) range for every predictor, or data X to take them from", "none"
            )
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise InputError(f"ranges[{name!r}]", "finite low < high", f"({lo}, {hi})")
        b = float(form.coef[i])
        rows.append(
            {
                "predictor": name,
                "coef": b,
                "low": lo,
                "high": hi,
                "min_contribution": min(b * lo, b * hi),
                "span": abs(b) * (hi - lo),
                "fill": col.fill if col.fill is not None else np.nan,
            }
        )
        ticks_of[name] = levels
    return rows, ticks_of


def nomogram(
    model: Any,
    feature_names: Sequence[str] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    *,
    X: pd.DataFrame | np.ndarray | None = None,
    outcome: str = "Probability",
    combine: Mapping[str, Sequence[str]] | None = None,
) -> Nomogram:
    """The points-scale nomogram of a fitted logistic model (see the module docstring).

    Args:
        model: A fitted model of :data:`SUPPORTED_MODELS`.
        feature_names: Names of the model's input columns, for a model fitted without them.
        ranges: ``{predictor: (low, high)}`` of the drawn axes, in original units.
        X: Data for the ranges of the predictors ``ranges`` does not give (their observed
            min and max; a predictor with two values, such as a 0/1 variable, gets ticks at just
            those); for a late-fusion model the raw feature table works (scores are computed).
            Without either, a predictor that a StandardScaler in the model standardised spans
            its training mean +/- 2 SD.
        outcome: Label of the probability axis.
        combine: ``{axis: [input columns]}``: draw those inputs as one axis, their summed
            contribution ``sum_j b_j x_j`` (log-odds; a missing input at the model's fill), as
            the studies draw a Radscore or Deep Score beside the clinical variables. Exact: the
            linear predictor is unchanged. Its range comes from ``X`` (or ``ranges``).

    Raises:
        InputError: An unsupported model (the message names the supported ones), a model
            with no non-zero coefficient, or a predictor without a range.

    Example:
        >>> from sklearn.linear_model import LogisticRegression
        >>> lr = LogisticRegression().fit([[0.0, 5], [1, 3], [2, 4], [3, 1]], [0, 0, 1, 1])
        >>> nomo = nomogram(lr, ["a", "b"], X=np.array([[0.0, 1], [3, 5]]))
        >>> nomo.coefficients[["predictor", "low", "high"]].to_numpy().tolist()
        [['a', 0.0, 3.0], ['b', 1.0, 5.0]]
        >>> float(nomo.coefficients["max_points"].max())
        100.0
    """
    form = _linear_form(model, feature_names)
    if combine:
        form = _combined(form, combine)
    keep = [i for i, b in enumerate(form.coef) if b != 0.0]
    if not keep:
        raise InputError("model", "a logistic model with at least one non-zero coefficient", "all coefficients are 0")
    preds = [form.names[i] for i in keep]
    data = None
    if X is not None:
        probe = Nomogram(
            pd.DataFrame({"predictor": preds, "fill": np.nan}), 0.0, 1.0, pd.DataFrame(),
            input_names=form.names, to_predictors=form.to_predictors,
        )  # fmt: skip
        data = probe.predictor_values(X)
    given = {str(k): v for k, v in (ranges or {}).items()}
    unknown = sorted(set(given) - set(preds))
    if unknown:
        raise InputError("ranges", f"predictors of the model ({', '.join(preds)})", f"{unknown}")
    rows, ticks_of = _axis_rows(form, keep, preds, given, data)
    coefs = pd.DataFrame(rows)
    scale = float(coefs["span"].max())
    coefs["max_points"] = 100.0 * coefs["span"] / scale
    coefs = coefs.drop(columns="span")[["predictor", "coef", "low", "high", "min_contribution", "max_points", "fill"]]
    nomo = Nomogram(
        coefs,
        form.intercept,
        scale,
        pd.DataFrame(),
        form.prob[0],
        form.prob[1],
        outcome,
        form.names,
        form.to_predictors,
    )
    nomo.axes = _axes_table(nomo, ticks_of)
    return nomo


def _axes_table(nomo: Nomogram, levels: dict[str, np.ndarray | None]) -> pd.DataFrame:
    parts = [pd.DataFrame({"predictor": "Points", "value": np.arange(0.0, 101.0, 10.0)})]
    parts[0]["points"] = parts[0]["value"]
    for row in nomo.coefficients.itertuples():
        values = levels.get(row.predictor)
        if values is None:
            values = _nice_ticks(row.low, row.high, max(5, round(row.max_points / 7)))
        pts = 100.0 * (row.coef * values - row.min_contribution) / nomo.scale
        parts.append(pd.DataFrame({"predictor": row.predictor, "value": values, "points": pts}))
    t_max = nomo.max_total_points
    total = _nice_ticks(0.0, t_max, 10)
    parts.append(pd.DataFrame({"predictor": "Total Points", "value": total, "points": total}))
    lp_lo, lp_hi = nomo.linear_predictor_from_points([0.0, t_max])
    lp = _nice_ticks(float(lp_lo), float(lp_hi), 8)
    parts.append(
        pd.DataFrame({"predictor": "Linear Predictor", "value": lp, "points": nomo.points_from_linear_predictor(lp)})
    )
    p = np.array(_PROB_TICKS)
    with np.errstate(divide="ignore", invalid="ignore"):  # a flat calibration (slope 0) has no axis
        p_points = nomo.points_from_linear_predictor((logit(p) - nomo.prob_offset) / nomo.prob_slope)
    # keep ticks inside the total-points range, at least 5 drawn units (of 100) apart, in order of priority
    kept: list[int] = []
    for i in sorted(range(len(p)), key=lambda i: _PROB_PRIORITY.index(_PROB_TICKS[i])):
        inside = np.isfinite(p_points[i]) and -1e-9 <= p_points[i] <= t_max + 1e-9
        if inside and all(abs(p_points[i] - p_points[k]) * 100.0 / t_max >= 5.0 for k in kept):
            kept.append(i)
    kept.sort()
    parts.append(pd.DataFrame({"predictor": nomo.outcome, "value": p[kept], "points": p_points[kept]}))
    out = pd.concat(parts, ignore_index=True)
    out["value"] = out["value"].astype(np.float64)
    return out
