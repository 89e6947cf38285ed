"""Model introspection: the one place that knows how a fitted fusion model is put together.

* :func:`estimators` walks every estimator inside a model (pipeline steps, column-transformer
  blocks, calibration, trees, late-fusion sources): the bundle checks
  (:mod:`usher2.fusion.validate`) and the storage clean-up (:func:`usher2.fusion.bundle.strip_for_storage`)
  read it.
* :func:`unwrap_calibrated` opens a ``CalibratedClassifierCV(ensemble=False)`` (one fitted
  classifier and its calibrator); :func:`classifier_input` finds the classifier that decides
  and the map from model input to that classifier's input table (SHAP explains it,
  :mod:`usher2.explain.shapley`).
* :func:`linear_form` (below).

:mod:`usher2.fusion.needed` walks a model backwards from the classifier's used inputs to the
input columns; it reads the classifiers through their registry entries
(:data:`usher2.fusion.models.CLASSIFIER_SPECS`).

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

__all__ = [
    "SUPPORTED_MODELS",
    "Affine",
    "LinearForm",
    "children",
    "classifier_input",
    "estimators",
    "linear_form",
    "unwrap_calibrated",
]

#: The fix a malformed model's error suggests (a bundle's model is checked before it is used).
DAMAGED = "the bundle is damaged or was altered; refit it or restore it from a trusted copy"

SUPPORTED_MODELS = (
    "LogisticRegression (binary)",
    "Pipeline of SimpleImputer/StandardScaler/MinMaxScaler/MaxAbsScaler/RobustScaler/selectors/ColumnTransformer "
    "ending in LogisticRegression (usher2 early fusion with classifier 'lr')",
    "usher2 LateFusionClassifier",
    "CalibratedClassifierCV(method='sigmoid', ensemble=False) around one of these",
)


def _malformed(where: str, expected: str, got: Any) -> InputError:
    return InputError(where, expected, str(got), fix=DAMAGED)


def children(e: Any, path: str) -> list[tuple[str, Any]]:
    """The estimators directly inside ``e``: pipeline steps, column-transformer blocks (fitted and
    template), calibration, forest trees, templates, late-fusion sources."""

    def pairs(attr: str, width: int) -> list[tuple[str, Any]]:
        items = getattr(e, attr, None)
        if items is None:
            return []
        if not isinstance(items, list | tuple) or not all(
            isinstance(t, tuple) and len(t) == width and isinstance(t[0], str) for t in items
        ):
            fields = ", ".join(["name", "estimator", "columns"][:width])
            raise _malformed(f"{path}.{attr}", f"a list of ({fields})", "other")
        return [(f"{path}.{attr}[{t[0]!r}]", t[1]) for t in items]

    def listed(attr: str) -> list[tuple[str, Any]]:
        items = getattr(e, attr, None)
        if items is None:
            return []
        if not isinstance(items, list | tuple):
            raise _malformed(f"{path}.{attr}", "a list", type(items).__name__)
        return [(f"{path}.{attr}[{i}]", c) for i, c in enumerate(items)]

    out = pairs("steps", 2) + pairs("transformers_", 3) + pairs("transformers", 3)
    out += listed("calibrated_classifiers_") + listed("calibrators") + listed("estimators_")
    out += [(f"{path}.{a}", getattr(e, a, None)) for a in ("estimator", "estimator_", "clinical_model_", "final_")]
    sources = getattr(e, "source_models_", None)
    if sources is not None:
        if not isinstance(sources, dict):
            raise _malformed(f"{path}.source_models_", "a dict of source pipelines", type(sources).__name__)
        out += [(f"{path}.source_models_[{k!r}]", m) for k, m in sources.items()]
    return [(p, c) for p, c in out if c is not None and not isinstance(c, str)]  # "drop", "passthrough"


def estimators(model: Any, root: str = "model") -> list[tuple[str, Any]]:
    """Every estimator inside a model, each once, with its path (``model.steps['select']...``).

    Example:
        >>> from sklearn.pipeline import make_pipeline
        >>> from sklearn.preprocessing import StandardScaler
        >>> [p for p, _ in estimators(make_pipeline(StandardScaler()))]
        ['model', "model.steps['standardscaler']"]
    """
    out: list[tuple[str, Any]] = []
    seen: set[int] = set()
    todo = [(root, model)]
    while todo:
        path, e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        out.append((path, e))
        todo += children(e, path)
    return out


def unwrap_calibrated(model: Any, refuse: Callable[[Any, str], InputError]) -> tuple[Any, Any]:
    """``(classifier, calibrated)``: for a ``CalibratedClassifierCV`` with one fitted classifier
    (``ensemble=False``), that classifier and its ``_CalibratedClassifier``; else ``(model, None)``.

    Raises:
        InputError: ``refuse(model, why)`` for a calibrated model with one classifier per fold.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.utils.validation import check_is_fitted

    if not isinstance(model, CalibratedClassifierCV):
        return model, None
    check_is_fitted(model, "calibrated_classifiers_")
    if len(model.calibrated_classifiers_) != 1:
        raise refuse(model, "ensemble=True keeps one model per fold; fit with ensemble=False")
    cc = model.calibrated_classifiers_[0]
    return cc.estimator, cc


def _frame(values: Any, names: Any, index: Any) -> pd.DataFrame:
    if isinstance(values, pd.DataFrame):
        return values
    return pd.DataFrame(np.asarray(values), columns=[str(n) for n in names], index=index)


def classifier_input(model: Any, refuse: Callable[[Any, str], InputError]) -> tuple[Any, Callable[[Any], pd.DataFrame]]:
    """The classifier that decides and the map from the model's input to that classifier's
    input table: the final logistic model of a late fusion (over its source scores and clinical
    columns), the last step of a pipeline (after its preprocessing and selection), or the model.

    Raises:
        InputError: ``refuse(model, why)`` for a calibrated model with one classifier per fold.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import check_is_fitted

    model, _ = unwrap_calibrated(model, refuse)
    if isinstance(model, LateFusionClassifier):
        check_is_fitted(model, "final_")
        return model.final_, model.final_inputs
    if isinstance(model, Pipeline):
        pre, clf = model[:-1], model.steps[-1][1]

        def select(X: Any) -> pd.DataFrame:
            index = X.index if isinstance(X, pd.DataFrame) else None
            return _frame(pre.transform(X), pre.get_feature_names_out(), index)

        return clf, select

    def identity(X: Any) -> pd.DataFrame:
        names = getattr(model, "feature_names_in_", None)
        if isinstance(X, pd.DataFrame):
            return X[list(names)] if names is not None else X
        arr = np.asarray(X, dtype=np.float64)
        return _frame(arr, names if names is not None else [f"x{i}" for i in range(arr.shape[1])], None)

    return model, identity


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
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import check_is_fitted

    prob = (1.0, 0.0)
    base, cc = unwrap_calibrated(model, _unsupported)
    if cc is not None:
        if cc.method != "sigmoid" or len(cc.calibrators) != 1:
            raise _unsupported(model, f"method={cc.method!r}; only sigmoid (Platt) calibration keeps an exact axis")
        prob = (-float(cc.calibrators[0].a_), -float(cc.calibrators[0].b_))
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
