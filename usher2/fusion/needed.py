"""Which input columns of a fitted fusion model can change its output.

A bundle lists every input column it was fitted on (``config["columns"]``, e.g. 1,481), but its
selection steps keep a few dozen and its classifier may give some of those no weight. Scoring
needs only the rest: :func:`needed_columns` walks the fitted estimator backwards, from the
classifier to the input, and returns the input columns whose values can change
``predict_proba``. The values of every other column are never read in a way that matters, so a
scorer may fill them with anything finite (or NaN where an imputer comes first).

**What is understood.**

* ``Pipeline`` (steps walked backwards; ``"passthrough"``/None steps are the identity),
  ``ColumnTransformer`` (each block maps its output slice back to its input columns; ``drop``
  blocks read nothing), ``CalibratedClassifierCV`` (the union over its fitted estimators),
  ``GridSearchCV`` (its ``best_estimator_``), ``FrozenEstimator`` and
  :class:`~usher2.fusion.models.LateFusionClassifier` (a source's columns count only when the
  final model weighs its score; within it, only the LASSO's non-zero coefficients).
* Column-wise steps: ``SimpleImputer`` (with its missing indicators), ``StandardScaler``,
  ``RobustScaler``, ``MinMaxScaler``, ``MaxAbsScaler``, ``QuantileTransformer``,
  ``PowerTransformer``, an identity ``FunctionTransformer``: output column j comes from input
  column j.
* Selection steps with ``get_support()`` (the selectors of :mod:`usher2.fusion.selection` and
  scikit-learn's): a dropped column is not needed.
* Classifiers: linear models (``LogisticRegression``, ``LinearSVC``, ``SGDClassifier``,
  ``RidgeClassifier``, ``Perceptron``) need only the columns with a non-zero coefficient;
  scikit-learn trees and forests, XGBoost (tree boosters) and LightGBM (without linear trees)
  need only the columns they split on; any other classifier needs every column that reaches it.

**What is not.** A transformer the walk does not know (PCA, a custom step) is assumed to mix its
inputs: if any of its outputs is needed, all of its inputs are. Where even that cannot be
decided (a step without ``n_features_in_``, a column specification that cannot be resolved, an
unknown meta-estimator at the top), every column is needed. Each such decision is recorded in
:attr:`NeededColumns.notes` and logged at INFO level, so a scorer can say why it computes more
than the model selects.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from usher2.fusion.models import CLASSIFIER_SPECS
from usher2.io.errors import InputError

__all__ = ["NeededColumns", "find_needed", "needed_columns"]

log = logging.getLogger(__name__)

_COLUMNWISE = {
    "StandardScaler",
    "RobustScaler",
    "MinMaxScaler",
    "MaxAbsScaler",
    "QuantileTransformer",
    "PowerTransformer",
    "SimpleImputer",
}
_LINEAR = {
    "LogisticRegression",
    "LogisticRegressionCV",
    "LinearSVC",
    "SGDClassifier",
    "RidgeClassifier",
    "RidgeClassifierCV",
    "Perceptron",
    "PassiveAggressiveClassifier",
}
_READ_ALL = {"SVC", "NuSVC", "MLPClassifier", "KNeighborsClassifier", "GaussianNB", "HistGradientBoostingClassifier"}
_SK_TREES = {
    "DecisionTreeClassifier",
    "ExtraTreeClassifier",
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "GradientBoostingClassifier",
}
#: How a fitted classifier reads its inputs, by class name: the registered classifiers
#: (:data:`usher2.fusion.models.CLASSIFIER_SPECS`) and the scikit-learn ones above (a model
#: built outside usher2).
_READS = {
    **dict.fromkeys(_LINEAR, "coefficients"),
    **dict.fromkeys(_SK_TREES, "sklearn-trees"),
    **dict.fromkeys(_READ_ALL, "all"),
    **{spec.fitted_type: spec.reads for spec in CLASSIFIER_SPECS},
}


@dataclass(frozen=True)
class NeededColumns:
    """The result of :func:`find_needed`.

    Attributes:
        columns: The needed input columns, in input order.
        notes: Why more columns than strictly needed may be kept (steps the walk did not
            understand); empty when the walk understood every step.
    """

    columns: list[str]
    notes: list[str] = field(default_factory=list)


class _Opaque(Exception):
    """The walk cannot map a step's inputs: fall back to every column."""


def _name(est: Any) -> str:
    return type(est).__name__


def _is_identity(step: Any) -> bool:
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return True
    return _name(step) == "FunctionTransformer" and step.func is None and step.inverse_func is None


def _n_in(est: Any, where: str) -> int:
    n = getattr(est, "n_features_in_", None)
    if n is None:
        raise _Opaque(f"{where}: {_name(est)} has no n_features_in_, so its inputs cannot be mapped")
    return int(n)


def _out_names(est: Any, names: list[str] | None) -> list[str] | None:
    """A transformer's output names for input ``names`` (None when it cannot say)."""
    if _is_identity(est):
        return names
    try:
        if names is not None and hasattr(est, "feature_names_in_"):
            return [str(c) for c in est.get_feature_names_out()]
        return [str(c) for c in est.get_feature_names_out(names)]
    except Exception:  # many estimators cannot name their outputs; the walk copes without
        return None


# ------------------------------------------------------------------------------ classifiers
def _classifier_needs(est: Any, n: int, names: list[str] | None, notes: list[str]) -> np.ndarray:
    """Boolean mask over the ``n`` inputs of a fitted classifier (or classifier pipeline)."""
    kind = _name(est)
    if kind == "Pipeline":
        return _pipeline_back(est.steps, None, n, names, notes, classifier=True)
    if kind == "CalibratedClassifierCV":
        masks = [_classifier_needs(c.estimator, n, names, notes) for c in est.calibrated_classifiers_]
        return np.logical_or.reduce(masks)
    if kind == "FrozenEstimator":
        return _classifier_needs(est.estimator, n, names, notes)
    if hasattr(est, "best_estimator_"):  # GridSearchCV / RandomizedSearchCV with refit
        return _classifier_needs(est.best_estimator_, n, names, notes)
    if kind == "LateFusionClassifier":
        return _late_fusion_needs(est, n, names, notes)
    reads = _READS.get(kind)
    if reads == "coefficients":
        coef = np.atleast_2d(np.asarray(est.coef_))
        if coef.shape[1] != n:
            raise _Opaque(f"{kind} has {coef.shape[1]} coefficients for {n} inputs")
        return np.any(coef != 0, axis=0)
    if reads == "sklearn-trees":
        return _sklearn_tree_needs(est, n, notes)
    if reads == "xgboost":
        return _xgboost_needs(est, n, notes)
    if reads == "lightgbm":
        return _lightgbm_needs(est, n, notes)
    if reads is None:
        notes.append(f"{kind}: an unknown classifier, assumed to read all {n} of its inputs")
    return np.ones(n, bool)


def _sklearn_tree_needs(est: Any, n: int, notes: list[str]) -> np.ndarray:
    init = getattr(est, "init_", None)
    if init is not None and not (isinstance(init, str) or _name(init) == "DummyClassifier"):
        notes.append(f"{_name(est)}: its init estimator {_name(init)} is not understood; all {n} inputs kept")
        return np.ones(n, bool)
    trees = [est] if hasattr(est, "tree_") else list(np.ravel(est.estimators_))
    mask = np.zeros(n, bool)
    for t in trees:
        f = t.tree_.feature
        mask[f[f >= 0]] = True
    return mask


def _xgboost_needs(est: Any, n: int, notes: list[str]) -> np.ndarray:
    if est.get_params().get("booster") not in (None, "gbtree", "dart"):
        return np.ones(n, bool)  # gblinear reads every column
    booster = est.get_booster()
    names = booster.feature_names or [f"f{i}" for i in range(n)]
    if len(names) != n:
        raise _Opaque(f"XGBClassifier has {len(names)} feature names for {n} inputs")
    used = booster.get_score(importance_type="weight")
    pos = {c: i for i, c in enumerate(names)}
    unknown = [k for k in used if k not in pos]
    if unknown:
        notes.append(f"XGBClassifier splits on unknown features {unknown[:3]}; all {n} inputs kept")
        return np.ones(n, bool)
    mask = np.zeros(n, bool)
    mask[[pos[k] for k in used]] = True
    return mask


def _lightgbm_needs(est: Any, n: int, notes: list[str]) -> np.ndarray:
    booster = est.booster_
    if booster.params.get("linear_tree") or est.get_params().get("linear_tree"):
        return np.ones(n, bool)  # linear leaves read more than the split columns
    splits = np.asarray(booster.feature_importance(importance_type="split"))
    if len(splits) != n:
        raise _Opaque(f"LGBMClassifier has {len(splits)} features for {n} inputs")
    return splits > 0


def _late_fusion_needs(est: Any, n: int, names: list[str] | None, notes: list[str]) -> np.ndarray:
    if names is None:
        raise _Opaque("LateFusionClassifier reads columns by name, and the names of its inputs are unknown")
    pos = {c: i for i, c in enumerate(names)}
    weight = dict(zip(est.final_features_, np.atleast_2d(est.final_.coef_)[0], strict=True))
    mask = np.zeros(n, bool)

    def mark(cols: Sequence[str], sub: np.ndarray) -> None:
        missing = [c for c in cols if c not in pos]
        if missing:
            raise _Opaque(f"LateFusionClassifier reads columns absent from the input: {missing[:3]}")
        for c, m in zip(cols, sub, strict=True):
            mask[pos[c]] |= bool(m)

    for source, model in est.source_models_.items():
        if weight.get(f"{source}_score", 1.0) == 0:
            continue
        cols = list(est.sources[source])
        lasso = model.steps[-1][1]
        out = np.any(np.atleast_2d(lasso.coef_) != 0, axis=0)
        mark(cols, _pipeline_back(model.steps[:-1], out, len(cols), cols, notes))
    if est.clinical_model_ is not None:
        clin = list(est.clinical or [])
        out_names = _out_names(est.clinical_model_, clin)
        if out_names is None:
            raise _Opaque("LateFusionClassifier: the clinical model cannot name its outputs")
        out = np.array([weight.get(c, 1.0) != 0 for c in out_names])
        mark(clin, _transformer_back(est.clinical_model_, out, len(clin), clin, notes))
    return mask


# ------------------------------------------------------------------------------ transformers
def _pipeline_back(
    steps: list[tuple[str, Any]],
    out: np.ndarray | None,
    n: int,
    names: list[str] | None,
    notes: list[str],
    *,
    classifier: bool = False,
) -> np.ndarray:
    """Map a needed-output mask back through pipeline steps (the last one is a classifier when
    ``classifier``, and then ``out`` is ignored)."""
    stages = [s for _, s in steps]
    transformers = stages[:-1] if classifier else stages
    widths, all_names = [n], [names]
    for i, t in enumerate(transformers):
        nxt = all_names[-1]
        nxt = _out_names(t, nxt)
        following = stages[i + 1] if i + 1 < len(stages) else None
        if nxt is not None:
            width = len(nxt)
        elif _is_identity(t):
            width = widths[-1]
        elif following is not None and not _is_identity(following):
            width = _n_in(following, f"pipeline step {i + 1}")
        else:
            raise _Opaque(f"pipeline step {i}: the width of {_name(t)}'s output is unknown")
        widths.append(width)
        all_names.append(nxt)
    if classifier:
        out = _classifier_needs(stages[-1], widths[-1], all_names[-1], notes)
    assert out is not None
    for i in range(len(transformers) - 1, -1, -1):
        out = _transformer_back(transformers[i], out, widths[i], all_names[i], notes)
    return out


def _transformer_back(t: Any, out: np.ndarray, n: int, names: list[str] | None, notes: list[str]) -> np.ndarray:
    """The inputs (mask over ``n``) a fitted transformer needs to give the outputs in ``out``."""
    out = np.asarray(out, bool)
    if not out.any():
        return np.zeros(n, bool)  # nothing downstream reads this step
    kind = _name(t)
    if _is_identity(t):
        if len(out) != n:
            raise _Opaque(f"a passthrough step gives {len(out)} columns for {n} inputs")
        return out.copy()
    if kind == "Pipeline":
        return _pipeline_back(t.steps, out, n, names, notes)
    if kind == "ColumnTransformer":
        return _column_transformer_back(t, out, n, notes)
    if hasattr(t, "get_support") and callable(t.get_support):
        support = np.asarray(t.get_support(), bool)
        if len(support) != n or support.sum() != len(out):
            raise _Opaque(f"{kind} keeps {support.sum()} of {len(support)} columns, not {len(out)} of {n}")
        mask = np.zeros(n, bool)
        mask[support] = out
        return mask
    if kind in _COLUMNWISE:
        return _columnwise_back(t, out, n, names)
    notes.append(f"{kind}: a step the walk does not know; all {n} of its inputs are kept")
    return np.ones(n, bool)


def _columnwise_back(t: Any, out: np.ndarray, n: int, names: list[str] | None) -> np.ndarray:
    """Column-wise steps: output column -> the input column it comes from (by output name)."""
    given = list(names) if names is not None else [f"x{i}" for i in range(n)]
    try:
        if hasattr(t, "feature_names_in_"):
            given = [str(c) for c in t.feature_names_in_]
            outs = [str(c) for c in t.get_feature_names_out()]
        else:
            outs = [str(c) for c in t.get_feature_names_out(given)]
    except Exception as exc:  # an old or odd estimator: give up on the mapping
        raise _Opaque(f"{_name(t)} cannot name its outputs ({exc})") from exc
    if len(given) != n or len(outs) != len(out):
        raise _Opaque(f"{_name(t)} maps {len(given)} inputs to {len(outs)} outputs, expected {n} to {len(out)}")
    pos = {c: i for i, c in enumerate(given)}
    mask = np.zeros(n, bool)
    for name, needed in zip(outs, out, strict=True):
        if not needed:
            continue
        src = name.removeprefix("missingindicator_") if name not in pos else name
        if src not in pos:
            raise _Opaque(f"{_name(t)} output {name!r} comes from no input column")
        mask[pos[src]] = True
    return mask


def _resolve_columns(spec: Any, names: list[str] | None, n: int) -> np.ndarray:
    """A ColumnTransformer column specification as input positions."""
    if isinstance(spec, slice):
        if isinstance(spec.start, str) or isinstance(spec.stop, str):
            raise _Opaque("a ColumnTransformer block selects columns by a slice of names")
        return np.arange(n)[spec]
    if callable(spec):
        raise _Opaque("a ColumnTransformer block selects columns with a callable")
    arr = np.atleast_1d(np.asarray(spec, dtype=object))
    if arr.size == 0:
        return np.zeros(0, int)
    if all(isinstance(v, bool | np.bool_) for v in arr):
        return np.flatnonzero(arr.astype(bool))
    if all(isinstance(v, int | np.integer) for v in arr):
        return arr.astype(int)
    if all(isinstance(v, str) for v in arr) and names is not None:
        pos = {c: i for i, c in enumerate(names)}
        missing = [v for v in arr if v not in pos]
        if missing:
            raise _Opaque(f"a ColumnTransformer block names columns absent from its input: {missing[:3]}")
        return np.array([pos[v] for v in arr], int)
    raise _Opaque(f"a ColumnTransformer column specification {arr[:3].tolist()} cannot be resolved")


def _column_transformer_back(ct: Any, out: np.ndarray, n: int, notes: list[str]) -> np.ndarray:
    names = [str(c) for c in ct.feature_names_in_] if hasattr(ct, "feature_names_in_") else None
    slices = getattr(ct, "output_indices_", None)
    if slices is None:
        raise _Opaque("ColumnTransformer without output_indices_ (scikit-learn < 1.0)")
    mask = np.zeros(n, bool)
    for block, trans, spec in ct.transformers_:
        if isinstance(trans, str) and trans == "drop":
            continue
        part = out[slices[block]]
        if not part.any():
            continue
        idx = _resolve_columns(spec, names, n)
        sub_names = [names[i] for i in idx] if names is not None else None
        mask[idx] |= _transformer_back(trans, part, len(idx), sub_names, notes)
    return mask


# ------------------------------------------------------------------------------ public
def find_needed(model: Any, columns: Sequence[str]) -> NeededColumns:
    """The input columns that can change ``model.predict_proba``, and notes on what was not understood.

    Args:
        model: A fitted scikit-learn classifier (a bundle's ``model``), fed ``columns`` in this order.
        columns: Its input columns.

    Returns:
        The needed columns in input order, and the notes (see the module docstring).

    Raises:
        InputError: Duplicate column names, or columns that differ from the model's own
            ``feature_names_in_``.

    Example:
        >>> import pandas as pd
        >>> from sklearn.linear_model import LogisticRegression
        >>> X = pd.DataFrame({"a": [0.0, 1, 2, 3], "b": [1.0, 0, 1, 0], "c": [3.0, 2, 1, 0]})
        >>> lr = LogisticRegression().fit(X, [0, 0, 1, 1])
        >>> lr.coef_[0, 1] = 0.0
        >>> find_needed(lr, list(X.columns))
        NeededColumns(columns=['a', 'c'], notes=[])
    """
    cols = [str(c) for c in columns]
    if len(set(cols)) != len(cols):
        dup = sorted({c for c in cols if cols.count(c) > 1})
        raise InputError("columns", "unique column names", f"duplicates {dup[:3]}")
    fitted_names = getattr(model, "feature_names_in_", None)
    if fitted_names is not None and [str(c) for c in fitted_names] != cols:
        raise InputError(
            "columns", f"the {len(fitted_names)} columns the model was fitted on, in order", f"{len(cols)} others"
        )
    notes: list[str] = []
    try:
        mask = _classifier_needs(model, len(cols), cols, notes)
        if len(mask) != len(cols):
            raise _Opaque(f"the walk gave {len(mask)} columns for {len(cols)} inputs")
    except _Opaque as exc:
        notes.append(f"{exc}: every column is kept")
        mask = np.ones(len(cols), bool)
    for note in notes:
        log.info("needed columns: %s", note)
    return NeededColumns([c for c, m in zip(cols, mask, strict=True) if m], notes)


def needed_columns(model: Any, columns: Sequence[str]) -> list[str]:
    """The input columns whose values can change ``model.predict_proba`` (see :func:`find_needed`).

    Example:
        >>> import pandas as pd
        >>> from sklearn.pipeline import make_pipeline
        >>> from sklearn.preprocessing import StandardScaler
        >>> from sklearn.feature_selection import VarianceThreshold
        >>> from sklearn.linear_model import LogisticRegression
        >>> X = pd.DataFrame({"a": [0.0, 1, 2, 3], "flat": [1.0, 1, 1, 1], "c": [3.0, 2, 2, 0]})
        >>> m = make_pipeline(StandardScaler(), VarianceThreshold(), LogisticRegression()).fit(X, [0, 0, 1, 1])
        >>> needed_columns(m, X.columns)
        ['a', 'c']
    """
    return find_needed(model, columns).columns
