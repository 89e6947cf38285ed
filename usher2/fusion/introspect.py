"""Model introspection: a fitted fusion model read as the linear form its predictions follow.

:func:`linear_form` writes a fitted logistic model (:data:`SUPPORTED_MODELS`) as
``intercept + coef @ x`` over its input columns (or, for late fusion, over its per-source scores
and clinical columns), with the probability map of its calibration and each input's imputation
fill, centre and spread. The nomogram (:mod:`usher2.evaluate.nomogram`) draws its axes from it
and :class:`~usher2.score.engine.FrameScorer` takes its Grad-CAM target from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from usher2.fusion.models import LateFusionClassifier
from usher2.io.errors import InputError

__all__ = ["SUPPORTED_MODELS", "Affine", "LinearForm", "linear_form"]

SUPPORTED_MODELS = (
    "LogisticRegression (binary)",
    "Pipeline of SimpleImputer/StandardScaler/MinMaxScaler/MaxAbsScaler/RobustScaler/selectors/ColumnTransformer "
    "ending in LogisticRegression (usher2 early fusion with classifier 'lr')",
    "usher2 LateFusionClassifier",
    "CalibratedClassifierCV(method='sigmoid', ensemble=False) around one of these",
)


@dataclass(frozen=True)
class Affine:
    """One column seen by the classifier as ``scale * x[source] + shift`` of one model input column."""

    source: int
    scale: float = 1.0
    shift: float = 0.0
    fill: float | None = None  # the value (original units) a missing input is replaced with
    center: float | None = None  # training mean (original units), from a StandardScaler
    spread: float | None = None  # training SD (original units)

    def then(self, a: float, c: float) -> Affine:
        """Compose with ``z -> a z + c``."""
        return replace(self, scale=a * self.scale, shift=a * self.shift + c)

    def to_original(self, z: float) -> float:
        return (z - self.shift) / self.scale


def _unsupported(model: Any, why: str = "") -> InputError:
    got = type(model).__name__ + (f" ({why})" if why else "")
    return InputError("model", "a fitted logistic model: " + "; ".join(SUPPORTED_MODELS), got)


def _input_names(step: Any, n: int) -> list[str]:
    names = getattr(step, "feature_names_in_", None)
    return [str(c) for c in names] if names is not None else [f"x{i}" for i in range(n)]


def _through(step: Any, cur: list[Affine], model: Any) -> list[Affine]:
    """The columns after ``step``, each as an affine function of one model input column."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_selection import SelectorMixin
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    if step is None or (isinstance(step, str) and step == "passthrough"):
        return cur
    n_in = getattr(step, "n_features_in_", None)
    if n_in is not None and n_in != len(cur):
        raise _unsupported(model, f"{type(step).__name__} expects {n_in} columns where {len(cur)} arrive")
    if isinstance(step, Pipeline):
        for _, sub in step.steps:
            cur = _through(sub, cur, model)
        return cur
    if isinstance(step, ColumnTransformer):
        out: list[Affine] = []
        for name, trans, _ in step.transformers_:
            if isinstance(trans, str) and trans == "drop":
                continue
            idx = step._transformer_to_input_indices[name]  # resolved column indices (names, masks, callables)
            out += _through(trans, [cur[i] for i in idx], model)
        if len(out) != len(step.get_feature_names_out()):
            raise _unsupported(model, "a ColumnTransformer whose output could not be traced column by column")
        return out
    if isinstance(step, SelectorMixin):
        return [c for c, keep in zip(cur, step.get_support(), strict=True) if keep]
    if isinstance(step, SimpleImputer):
        if step.add_indicator or not (isinstance(step.missing_values, float) and np.isnan(step.missing_values)):
            raise _unsupported(model, "SimpleImputer with add_indicator or missing_values other than NaN")
        names = _input_names(step, len(cur))
        kept = [names.index(str(n)) for n in step.get_feature_names_out(names)]
        return [
            cur[i] if cur[i].fill is not None else replace(cur[i], fill=cur[i].to_original(float(step.statistics_[i])))
            for i in kept
        ]
    if isinstance(step, StandardScaler):
        mean = step.mean_ if step.with_mean and step.mean_ is not None else np.zeros(len(cur))
        sd = step.scale_ if step.with_std and step.scale_ is not None else np.ones(len(cur))
        out = []
        for i, c in enumerate(cur):
            if c.center is None and step.with_mean and step.with_std:
                c = replace(c, center=c.to_original(mean[i]), spread=float(np.sqrt(step.var_[i])) / abs(c.scale))
            out.append(c.then(1.0 / sd[i], -mean[i] / sd[i]))
        return out
    if isinstance(step, MinMaxScaler):
        if step.clip:
            raise _unsupported(model, "MinMaxScaler(clip=True) is not linear")
        return [c.then(step.scale_[i], step.min_[i]) for i, c in enumerate(cur)]
    if isinstance(step, MaxAbsScaler):
        return [c.then(1.0 / step.scale_[i], 0.0) for i, c in enumerate(cur)]
    if isinstance(step, RobustScaler):
        center = step.center_ if step.center_ is not None else np.zeros(len(cur))
        scale = step.scale_ if step.scale_ is not None else np.ones(len(cur))
        return [c.then(1.0 / scale[i], -center[i] / scale[i]) for i, c in enumerate(cur)]
    if isinstance(step, FunctionTransformer) and step.func is None:
        return cur
    raise _unsupported(model, f"its step {type(step).__name__} is not a per-feature affine map or selection")


def _binary_lr(lr: Any, model: Any) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.utils.validation import check_is_fitted

    if not isinstance(lr, LogisticRegression):
        raise _unsupported(model, f"its classifier is {type(lr).__name__}")
    check_is_fitted(lr, "coef_")
    if lr.coef_.shape[0] != 1:
        raise _unsupported(model, f"a logistic regression over {len(lr.classes_)} classes; the nomogram is binary")
    return np.asarray(lr.coef_[0], np.float64), float(lr.intercept_[0])


@dataclass
class LinearForm:
    names: list[str]  # every model input column (or predictor, for late fusion)
    coef: np.ndarray  # per input column, original units
    intercept: float
    cols: list[Affine]  # per input column: fill/center/spread
    prob: tuple[float, float]  # p = expit(s * LP + o)
    to_predictors: Callable[[pd.DataFrame], pd.DataFrame] | None = None


def linear_form(model: Any, feature_names: Sequence[str] | None) -> LinearForm:
    """The model as ``intercept + coef @ x`` over its input columns, and its probability map."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import check_is_fitted

    prob = (1.0, 0.0)
    base = model
    if isinstance(model, CalibratedClassifierCV):
        check_is_fitted(model, "calibrated_classifiers_")
        if len(model.calibrated_classifiers_) != 1:
            raise _unsupported(model, "ensemble=True keeps one model per fold; fit with ensemble=False")
        cc = model.calibrated_classifiers_[0]
        if cc.method != "sigmoid" or len(cc.calibrators) != 1:
            raise _unsupported(model, f"method={cc.method!r}; only sigmoid (Platt) calibration keeps an exact axis")
        prob = (-float(cc.calibrators[0].a_), -float(cc.calibrators[0].b_))
        base = cc.estimator
    to_predictors = None
    if isinstance(base, LateFusionClassifier):
        check_is_fitted(base, "final_")
        scores = [f"{name}_score" for name in base.source_models_]
        clinical = list(base.clinical or []) if base.clinical_model_ is not None else []
        names = scores + clinical
        cur = [Affine(i) for i in range(len(scores))]
        cur += _through(base.clinical_model_, [Affine(len(scores) + i) for i in range(len(clinical))], model)
        w, b0 = _binary_lr(base.final_, model)

        def to_predictors(X: pd.DataFrame, late: Any = base, clinical: list[str] = clinical) -> pd.DataFrame:
            return pd.concat([late.source_scores(X), X[clinical]], axis=1)

    elif isinstance(base, Pipeline):
        w, b0 = _binary_lr(base.steps[-1][1], model)
        n = getattr(base, "n_features_in_", None)
        if n is None:
            raise _unsupported(model, "a Pipeline whose first step does not record n_features_in_")
        names = _input_names(base, n)
        cur = [Affine(i) for i in range(n)]
        for _, step in base.steps[:-1]:
            cur = _through(step, cur, model)
    else:
        w, b0 = _binary_lr(base, model)
        names = _input_names(base, len(w))
        cur = [Affine(i) for i in range(len(w))]
    if len(cur) != len(w):
        raise _unsupported(model, f"{len(cur)} traced columns for {len(w)} coefficients")
    if feature_names is not None:
        if len(feature_names) != len(names):
            raise InputError(
                "feature_names", f"{len(names)} names (the model's input columns)", str(len(feature_names))
            )
        names = [str(n) for n in feature_names]
    coef = np.zeros(len(names))
    intercept = b0
    per_input: list[Affine] = [Affine(i) for i in range(len(names))]
    for wk, ck in zip(w, cur, strict=True):
        coef[ck.source] += wk * ck.scale
        intercept += wk * ck.shift
        old = per_input[ck.source]
        per_input[ck.source] = replace(
            old,
            fill=old.fill if old.fill is not None else ck.fill,
            center=old.center if old.center is not None else ck.center,
            spread=old.spread if old.spread is not None else ck.spread,
        )
    return LinearForm(names, coef, float(intercept), per_input, prob, to_predictors)
