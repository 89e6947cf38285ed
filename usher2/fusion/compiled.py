"""An exact, fast form of a fitted fusion model: plain NumPy over only the columns it uses.

``Bundle.predict_proba`` hands a fitted model a 1,474-column DataFrame; scikit-learn's input
validation and pandas cost 15-20 ms per call at batch 1, though the selection steps keep a few dozen
columns. :func:`compile_model` turns the fitted model into a :class:`CompiledModel` that reads only
the input columns :func:`usher2.fusion.needed.find_needed` says can change the output (its
:attr:`~CompiledModel.columns`) and repeats the model's own float64 arithmetic on them.

**How.** The transformers before the classifier are walked forward, column by column: each output
column of the selection pipelines is one input column with a few element-wise operations applied in
order (``SimpleImputer``: NaN -> its ``statistics_``; ``StandardScaler``: ``x -= mean_``,
``x /= scale_``); selectors (ICC, univariate, correlation, LASSO, any ``SelectorMixin`` that keeps
its ``transform``) only drop columns; a ``ColumnTransformer`` places each block's columns at its
``output_indices_``. The classifier's inputs that it never reads are left at 0. Then the classifier:

========================  ==========================================================================
``LogisticRegression``    ``expit(Z @ coef_.T + intercept_)`` (binary)
``SVC``                   its decision function, ``sum(dual_coef_ * K(Z, support_vectors_)) +
                          intercept_`` (rbf, linear, poly, sigmoid kernels; the calibrator makes it
                          a probability)
``MLPClassifier``         the forward pass of ``coefs_``/``intercepts_``, then the logistic output
``RandomForest`` (trees)  every tree walked at once in NumPy (inputs cast to float32 as scikit-learn
                          does; NaN follows ``missing_go_to_left``), the leaves' class-1 fractions
                          summed in tree order and divided by the number of trees
``XGBClassifier``         the model's own ``Booster.inplace_predict`` on a NumPy array (float32 out)
``LGBMClassifier``        the model's own ``Booster.predict`` on a NumPy array (``raw_score`` for
                          its decision function, which calibration reads)
========================  ==========================================================================

:class:`~usher2.fusion.models.LateFusionClassifier` becomes one Radscore per imaging source
(``intercept_ + Z @ coef_`` of its LASSO), the selected clinical columns, and the final logistic
regression. ``CalibratedClassifierCV`` (what :func:`usher2.fusion.cv.fit_final` wraps models in,
``sigmoid`` or ``isotonic``) keeps its fitted calibrators and calls their own ``predict`` on the
compiled decision function or class-1 probability (whichever scikit-learn picks for the estimator),
then averages over its calibrated classifiers as it does. ``GridSearchCV`` with ``best_estimator_``
and ``FrozenEstimator`` delegate.

**Exactness.** The same float64 operations in the same order, so the result equals
``model.predict_proba(X)[:, 1]`` to rounding; only a sum's order may differ (BLAS blocking, the RBF
kernel's squared distance), a few units in the last place. Anything this module cannot repeat (an
unknown step or classifier, ``add_indicator``, a multi-class model, a ``temperature`` calibration...)
is not guessed: the :class:`CompiledModel` then calls the model's own ``predict_proba`` on a table
of all its input columns, with the unneeded ones set to 0 (their values cannot change the output),
and says so in :attr:`~CompiledModel.compiled` and :attr:`~CompiledModel.reason` (and a warning at
compile time).

**Bad values.** NaN in a used column is imputed as the model's imputer does. An infinite value raises
:class:`~usher2.io.errors.InputError`, as the imputer of every usher2 model raises on one; so does NaN
that would reach a classifier with no imputer before it, where scikit-learn raises too.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from usher2.fusion.needed import _is_identity, _Opaque, _resolve_columns, find_needed
from usher2.io.errors import InputError

__all__ = ["CompiledModel", "compile_model"]

#: Up to this many rows, a DataFrame is read as one array and then indexed (see CompiledModel._matrix).
_FEW_ROWS = 64


class _NotCompiled(Exception):
    """A part of the model this module cannot repeat exactly: the model's own predict_proba is used."""


@dataclass(frozen=True)
class _Entry:
    """One column on its way to the classifier: an input column and the element-wise steps applied to it."""

    column: str
    ops: tuple[tuple[str, float], ...] = ()

    def then(self, kind: str, value: float) -> _Entry:
        return _Entry(self.column, (*self.ops, (kind, float(value))))


# ------------------------------------------------------------------------------ transformers
def _check_width(step: Any, entries: list[_Entry]) -> None:
    n = getattr(step, "n_features_in_", None)
    if n is not None and int(n) != len(entries):
        raise _NotCompiled(f"{type(step).__name__} was fitted on {n} columns, the walk gives it {len(entries)}")


def _walk(step: Any, entries: list[_Entry]) -> list[_Entry]:
    """The columns a fitted transformer outputs, as input columns and element-wise steps."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_selection import SelectorMixin
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if _is_identity(step):
        return entries
    _check_width(step, entries)
    kind = type(step)
    if kind is Pipeline:
        for _, sub in step.steps:
            entries = _walk(sub, entries)
        return entries
    if kind is ColumnTransformer:
        return _walk_column_transformer(step, entries)
    if kind is SimpleImputer:
        return _walk_imputer(step, entries)
    if kind is StandardScaler:
        out = entries
        if step.with_mean:
            out = [e.then("sub", m) for e, m in zip(out, step.mean_, strict=True)]
        if step.with_std:
            out = [e.then("div", s) for e, s in zip(out, step.scale_, strict=True)]
        return out
    if isinstance(step, SelectorMixin) and type(step).transform is SelectorMixin.transform:
        support = np.asarray(step.get_support(), bool)
        return [e for e, keep in zip(entries, support, strict=True) if keep]
    raise _NotCompiled(f"{kind.__name__}: a step the compiler does not repeat")


def _walk_imputer(step: Any, entries: list[_Entry]) -> list[_Entry]:
    missing = step.missing_values
    if step.add_indicator or not (isinstance(missing, float) and np.isnan(missing)):
        raise _NotCompiled("SimpleImputer with missing indicators or a missing value other than NaN")
    stats = np.asarray(step.statistics_, dtype=np.float64)
    keep = np.ones(len(stats), bool) if step.keep_empty_features else ~np.isnan(stats)  # sklearn drops empty ones
    return [e.then("fill", s) for e, s, k in zip(entries, stats, keep, strict=True) if k]


def _walk_column_transformer(ct: Any, entries: list[_Entry]) -> list[_Entry]:
    names = [str(c) for c in ct.feature_names_in_] if hasattr(ct, "feature_names_in_") else None
    width = max((s.stop for s in ct.output_indices_.values()), default=0)
    out: list[_Entry | None] = [None] * width
    for block, trans, spec in ct.transformers_:
        if isinstance(trans, str) and trans == "drop":
            continue
        try:
            idx = _resolve_columns(spec, names, len(entries))
        except _Opaque as exc:
            raise _NotCompiled(str(exc)) from exc
        part = _walk(trans, [entries[i] for i in idx])
        where = ct.output_indices_[block]
        if len(part) != where.stop - where.start:
            raise _NotCompiled(f"ColumnTransformer block {block!r} gives {len(part)} columns, not {where}")
        out[where] = part
    if any(e is None for e in out):
        raise _NotCompiled("ColumnTransformer output columns that no block fills")
    return [e for e in out if e is not None]


class _Prep:
    """Input columns (n, m) -> a classifier's inputs (n, width); the inputs it never reads stay 0.

    Entries with the same sequence of step kinds are computed together, one array operation a step.
    """

    def __init__(self, entries: Sequence[_Entry | None], pos: dict[str, int]) -> None:
        self.width = len(entries)
        groups: dict[tuple[str, ...], list[tuple[int, _Entry]]] = {}
        for j, e in enumerate(entries):
            if e is None:
                continue
            if e.column not in pos:
                raise _NotCompiled(f"the classifier reads {e.column!r}, which find_needed left out")
            groups.setdefault(tuple(k for k, _ in e.ops), []).append((j, e))
        self.groups = []
        for kinds, members in groups.items():
            src = np.array([pos[e.column] for _, e in members], dtype=np.intp)
            dst = np.array([j for j, _ in members], dtype=np.intp)
            values = [np.array([e.ops[i][1] for _, e in members]) for i in range(len(kinds))]
            self.groups.append((src, dst, list(zip(kinds, values, strict=True))))
        self.columns = [e.column if e is not None else "" for e in entries]
        self.raw = [int(j) for src, dst, ops in self.groups if not ops for j in dst]  # no imputer: NaN passes

    def __call__(self, X: np.ndarray) -> np.ndarray:
        Z = np.zeros((X.shape[0], self.width))
        for src, dst, ops in self.groups:
            A = X[:, src]  # a copy: fancy indexing
            for kind, values in ops:
                if kind == "fill":
                    np.copyto(A, values, where=np.isnan(A))
                elif kind == "sub":
                    A -= values
                else:
                    A /= values
            Z[:, dst] = A
        return Z

    def refuse_nan(self, Z: np.ndarray, what: str) -> None:
        """scikit-learn refuses NaN in a classifier's input; so does the compiled form (never a silent NaN)."""
        if self.raw and np.isnan(Z[:, self.raw]).any():
            bad = [self.columns[j] for j in self.raw if np.isnan(Z[:, j]).any()]
            raise InputError("features", f"no NaN where {what} reads it without an imputer", f"NaN in {bad[:3]}")


# ------------------------------------------------------------------------------ classifiers
class _Head:
    """A classifier on its (n, width) inputs: ``decision`` and/or ``proba`` (class 1), as scikit-learn
    computes them; ``nan_ok``: whether the classifier takes NaN (else NaN reaching it is an error)."""

    nan_ok = False

    decision: Callable[[np.ndarray], np.ndarray] | None = None
    proba: Callable[[np.ndarray], np.ndarray] | None = None


class _Logistic(_Head):
    def __init__(self, est: Any) -> None:
        self.coef_t = np.asarray(est.coef_, dtype=np.float64).T  # (width, 1), as decision_function
        self.intercept = np.asarray(est.intercept_, dtype=np.float64)
        if self.coef_t.shape[1] != 1:
            raise _NotCompiled("a multi-class LogisticRegression")
        self.decision = lambda Z: (Z @ self.coef_t + self.intercept).reshape(-1)
        self.proba = lambda Z: expit(self.decision(Z))


def _svm_kernel(est: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    gamma, coef0, degree = float(est._gamma), float(est.coef0), est.degree
    kernels = {
        "rbf": lambda Z, S: np.exp(-gamma * ((Z[:, None, :] - S[None, :, :]) ** 2).sum(axis=2)),
        "linear": lambda Z, S: Z @ S.T,
        "poly": lambda Z, S: (gamma * (Z @ S.T) + coef0) ** degree,
        "sigmoid": lambda Z, S: np.tanh(gamma * (Z @ S.T) + coef0),
    }
    if not isinstance(est.kernel, str) or est.kernel not in kernels:
        raise _NotCompiled(f"SVC with kernel {est.kernel!r}")
    return kernels[est.kernel]


class _SVM(_Head):
    def __init__(self, est: Any) -> None:
        if len(est.classes_) != 2 or est._sparse:
            raise _NotCompiled("a multi-class or sparse SVC")
        kernel = _svm_kernel(est)
        sv = np.asarray(est.support_vectors_, dtype=np.float64)
        dual = np.asarray(est.dual_coef_, dtype=np.float64)[0]
        intercept = float(est.intercept_[0])
        # libsvm sums the support vectors in order; a cumulative sum keeps that order
        self.decision = lambda Z: np.cumsum(kernel(Z, sv) * dual, axis=1)[:, -1] + intercept


_ACTIVATIONS: dict[str, Callable[[np.ndarray], Any]] = {
    "identity": lambda a: None,
    "relu": lambda a: np.maximum(a, 0, out=a),
    "tanh": lambda a: np.tanh(a, out=a),
    "logistic": lambda a: expit(a, out=a),
}


class _MLP(_Head):
    def __init__(self, est: Any) -> None:
        if est.out_activation_ != "logistic" or est.n_outputs_ != 1 or est.activation not in _ACTIVATIONS:
            raise _NotCompiled(f"MLPClassifier with output {est.out_activation_!r} or activation {est.activation!r}")
        layers = list(zip(est.coefs_, est.intercepts_, strict=True))
        hidden = _ACTIVATIONS[est.activation]

        def proba(Z: np.ndarray) -> np.ndarray:
            a = Z
            for i, (w, b) in enumerate(layers):
                a = a @ w
                a += b
                if i < len(layers) - 1:
                    hidden(a)
            return expit(a, out=a).ravel()

        self.proba = proba


class _Forest(_Head):
    """scikit-learn trees and forests: every tree walked at once, one level a step."""

    nan_ok = True

    def __init__(self, est: Any) -> None:
        if getattr(est, "n_outputs_", 1) != 1 or len(est.classes_) != 2:
            raise _NotCompiled(f"a multi-output or multi-class {type(est).__name__}")
        trees = [est.tree_] if hasattr(est, "tree_") else [t.tree_ for t in est.estimators_]
        parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("feature", "threshold", "left", "right", "nan_left", "p1")
        }
        roots, offset = [], 0
        for tree in trees:
            leaf = tree.children_left < 0
            node = np.arange(tree.node_count) + offset
            parts["left"].append(np.where(leaf, node, tree.children_left + offset))  # a leaf loops to itself
            parts["right"].append(np.where(leaf, node, tree.children_right + offset))
            parts["feature"].append(np.where(leaf, 0, tree.feature))
            parts["threshold"].append(np.where(leaf, 0.0, tree.threshold))
            nan_left = getattr(tree, "missing_go_to_left", np.zeros(tree.node_count, np.uint8))
            parts["nan_left"].append(np.asarray(nan_left, bool))
            value = np.asarray(tree.value[:, 0, :], dtype=np.float64)
            if not np.allclose(value.sum(axis=1), 1.0):  # sklearn >= 1.4 keeps fractions, and predicts them as is
                raise _NotCompiled(f"{type(est).__name__} leaves that hold class counts, not fractions")
            parts["p1"].append(value[:, 1])
            roots.append(offset)
            offset += tree.node_count
        self.nodes = {k: np.concatenate(v) for k, v in parts.items()}
        self.roots = np.array(roots, dtype=np.intp)
        self.depth = max(int(t.max_depth) for t in trees)
        self.forest = not hasattr(est, "tree_")
        self.proba = self._proba

    def _proba(self, Z: np.ndarray) -> np.ndarray:
        nodes, (n, width) = self.nodes, Z.shape
        flat = np.ascontiguousarray(Z, dtype=np.float32).ravel()  # trees compare float32 inputs, as sklearn's
        base = (np.arange(n, dtype=np.intp) * width)[:, None]
        at = np.repeat(self.roots[None, :], n, axis=0)
        has_nan = bool(np.isnan(flat).any())
        for _ in range(self.depth):
            v = flat[base + nodes["feature"][at]]
            left = v <= nodes["threshold"][at]
            if has_nan:
                left |= np.isnan(v) & nodes["nan_left"][at]
            at = np.where(left, nodes["left"][at], nodes["right"][at])
        p = nodes["p1"][at]
        if not self.forest:
            return p[:, 0]
        # the forest adds its trees' probabilities one by one, then divides: a cumulative sum keeps the order
        return np.cumsum(p, axis=1)[:, -1] / len(self.roots)


class _XGBoost(_Head):
    """XGBoost's own predictor on a NumPy array (no DataFrame, no feature-name check)."""

    nan_ok = True

    def __init__(self, est: Any) -> None:
        if est.get_params().get("booster") not in (None, "gbtree", "dart") or int(est.n_classes_) != 2:
            raise _NotCompiled("an XGBClassifier with a linear booster or more than 2 classes")
        if not str(est.objective).startswith("binary:"):  # one value per row, which predict_proba takes as is
            raise _NotCompiled(f"an XGBClassifier with objective {est.objective!r}")
        try:  # as XGBModel._get_iteration_range: the best iteration when early stopping found one
            iteration_range = (0, est.best_iteration + 1)
        except AttributeError:
            iteration_range = (0, 0)
        booster, missing = est.get_booster(), est.missing

        def proba(Z: np.ndarray) -> np.ndarray:
            # float32, as XGBClassifier.predict_proba gives it (and a calibrator then reads it)
            return booster.inplace_predict(
                Z, iteration_range=iteration_range, predict_type="value", missing=missing, validate_features=False
            )

        self.proba = proba


class _LightGBM(_Head):
    """LightGBM's own predictor on a NumPy array (no DataFrame, no scikit-learn validation)."""

    nan_ok = True

    def __init__(self, est: Any) -> None:
        params = est.get_params()
        if callable(params.get("objective")) or len(est.classes_) != 2 or params.get("pred_early_stop"):
            raise _NotCompiled("an LGBMClassifier with a custom objective, more than 2 classes or pred_early_stop")
        booster = est.booster_  # rows are scored independently: one thread gives the same numbers, and is the
        # fastest for the few rows a scorer sends
        self.proba = lambda Z: np.asarray(booster.predict(Z, num_threads=1), dtype=np.float64)
        if hasattr(est, "decision_function"):  # lightgbm >= 4.7: the raw score, which calibration then reads
            self.decision = lambda Z: np.asarray(booster.predict(Z, raw_score=True, num_threads=1), np.float64)


def _head(est: Any) -> _Head:
    kind = type(est).__name__
    heads: dict[str, Callable[[Any], _Head]] = {
        "LogisticRegression": _Logistic,
        "SVC": _SVM,
        "MLPClassifier": _MLP,
        "RandomForestClassifier": _Forest,
        "ExtraTreesClassifier": _Forest,
        "DecisionTreeClassifier": _Forest,
        "ExtraTreeClassifier": _Forest,
        "XGBClassifier": _XGBoost,
        "LGBMClassifier": _LightGBM,
    }
    if kind not in heads:
        raise _NotCompiled(f"{kind}: a classifier the compiler does not repeat")
    return heads[kind](est)


# ------------------------------------------------------------------------------ whole models
class _Scorer:
    """A compiled model or part of one: the input columns (n, m) -> the response scikit-learn computes."""

    responses: frozenset[str] = frozenset()

    def response(self, X: np.ndarray, kind: str) -> np.ndarray:
        raise NotImplementedError


class _Chain(_Scorer):
    """Element-wise steps, then a classifier (a Pipeline, or a bare classifier)."""

    def __init__(self, prep: _Prep, head: _Head, what: str) -> None:
        self.prep, self.head, self.what = prep, head, what
        self.responses = frozenset(k for k in ("decision", "proba") if getattr(head, k) is not None)

    def response(self, X: np.ndarray, kind: str) -> np.ndarray:
        Z = self.prep(X)
        if not self.head.nan_ok:
            self.prep.refuse_nan(Z, self.what)
        return getattr(self.head, kind)(Z)


def _chain(est: Any, names: list[str], pos: dict[str, int]) -> _Chain:
    from sklearn.pipeline import Pipeline

    steps = [s for _, s in est.steps] if type(est) is Pipeline else [est]
    entries = [_Entry(c) for c in names]
    for step in steps[:-1]:
        entries = _walk(step, entries)
    clf = steps[-1]
    _check_width(clf, entries)
    inputs = [e.column for e in entries]
    fitted = getattr(clf, "feature_names_in_", None)
    if fitted is not None and [str(c) for c in fitted] != inputs:
        raise _NotCompiled(f"{type(clf).__name__} was fitted on other column names than the walk gives it")
    try:
        read = set(find_needed(clf, inputs).columns)
    except InputError as exc:  # duplicate names: one input column in two blocks
        raise _NotCompiled(str(exc)) from exc
    prep = _Prep([e if e.column in read else None for e in entries], pos)
    return _Chain(prep, _head(clf), type(clf).__name__)


class _Late(_Scorer):
    """:class:`~usher2.fusion.models.LateFusionClassifier`: Radscores and clinical columns -> logistic regression."""

    responses = frozenset({"decision", "proba"})

    def __init__(self, est: Any, pos: dict[str, int]) -> None:
        if len(est.classes_) != 2:
            raise _NotCompiled("a multi-class LateFusionClassifier")
        final = list(est.final_features_)
        weight = dict(zip(final, np.atleast_2d(est.final_.coef_)[0], strict=True))
        self.final = _Logistic(est.final_)
        self.sources: list[tuple[int, _Prep, np.ndarray, float]] = []
        for name, model in est.source_models_.items():
            score = f"{name}_score"
            if weight.get(score, 1.0) == 0:
                continue  # 0 x its Radscore: left at 0 in the design, its columns are not read
            entries = [_Entry(c) for c in est.sources[name]]
            for _, step in model.steps[:-1]:
                entries = _walk(step, entries)
            lasso = model.steps[-1][1]
            coef = np.asarray(lasso.coef_, dtype=np.float64)
            if coef.ndim != 1 or len(coef) != len(entries):
                raise _NotCompiled(f"the {name} LASSO has {coef.shape} coefficients for {len(entries)} columns")
            prep = _Prep([e if w != 0 else None for e, w in zip(entries, coef, strict=True)], pos)
            self.sources.append((final.index(score), prep, coef, float(lasso.intercept_)))
        clinical: dict[str, _Entry] = {}
        if est.clinical_model_ is not None:
            out = _walk(est.clinical_model_, [_Entry(c) for c in est.clinical])
            named = [str(c) for c in est.clinical_model_.get_feature_names_out()]
            if [e.column for e in out] != named:
                raise _NotCompiled("the clinical model's outputs are not its input columns")
            clinical = dict(zip(named, out, strict=True))
        scores = {f"{n}_score" for n in est.source_models_}
        unknown = [f for f in final if f not in scores and f not in clinical]
        if unknown:
            raise _NotCompiled(f"final features {unknown[:3]} are neither a source score nor a clinical column")
        self.design = _Prep([clinical[f] if f in clinical and weight[f] != 0 else None for f in final], pos)

    def response(self, X: np.ndarray, kind: str) -> np.ndarray:
        D = self.design(X)
        self.design.refuse_nan(D, "the late-fusion model")
        for j, prep, coef, intercept in self.sources:
            Z = prep(X)
            prep.refuse_nan(Z, "a Radscore")
            D[:, j] = intercept + Z @ coef  # as LassoSelector.radscore
        return getattr(self.final, kind)(D)


def _calibrator(cal: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A fitted calibrator's ``predict`` on a 1-D score, without its input validation (~80 us a call)."""
    from sklearn.isotonic import IsotonicRegression

    if type(cal).__name__ == "_SigmoidCalibration":  # Platt: as _SigmoidCalibration.predict
        a, b = cal.a_, cal.b_
        return lambda T: expit(-(a * T + b))
    if type(cal) is IsotonicRegression and hasattr(cal, "f_"):  # as its predict: cast, clip, interpolate, cast back

        def isotonic(T: np.ndarray) -> np.ndarray:
            T = np.asarray(T, dtype=cal.X_thresholds_.dtype).reshape(-1)
            if cal.out_of_bounds == "clip":
                T = np.clip(T, cal.X_min_, cal.X_max_)
            return cal.f_(T).astype(T.dtype)

        return isotonic
    return cal.predict


class _Calibrated(_Scorer):
    """``CalibratedClassifierCV``: each calibrated classifier's fitted calibrator on the compiled response
    (scikit-learn's choice: the decision function when the estimator has one), averaged."""

    responses = frozenset({"proba"})

    def __init__(self, est: Any, names: list[str], pos: dict[str, int]) -> None:
        if getattr(est, "method", None) not in ("sigmoid", "isotonic") or len(est.classes_) != 2:
            raise _NotCompiled(f"CalibratedClassifierCV with method {getattr(est, 'method', None)!r} or > 2 classes")
        self.members = []
        for member in est.calibrated_classifiers_:
            kind = "decision" if hasattr(member.estimator, "decision_function") else "proba"
            scorer = _scorer(member.estimator, names, pos)
            if kind not in scorer.responses or len(member.calibrators) != 1:
                raise _NotCompiled(f"a calibrated {type(member.estimator).__name__} without a compiled {kind}")
            self.members.append((scorer, kind, _calibrator(member.calibrators[0])))

    def response(self, X: np.ndarray, kind: str) -> np.ndarray:
        total = np.zeros(X.shape[0])
        for scorer, response, calibrator in self.members:
            total += calibrator(scorer.response(X, response))
        total /= len(self.members)
        return total


def _scorer(est: Any, names: list[str], pos: dict[str, int]) -> _Scorer:
    """Compile a fitted model fed the input columns ``names``; ``pos``: each needed column's place in the
    compiled input (:attr:`CompiledModel.columns`)."""
    kind = type(est).__name__
    if kind == "CalibratedClassifierCV":
        return _Calibrated(est, names, pos)
    if kind in ("GridSearchCV", "RandomizedSearchCV") and hasattr(est, "best_estimator_"):
        return _scorer(est.best_estimator_, names, pos)
    if kind == "FrozenEstimator":
        return _scorer(est.estimator, names, pos)
    if kind == "LateFusionClassifier":
        return _Late(est, pos)
    return _chain(est, names, pos)


class _Own(_Scorer):
    """The fallback: the model's own predict_proba on all its input columns, the unneeded ones at 0."""

    responses = frozenset({"proba"})

    def __init__(self, model: Any, names: list[str], needed: list[str]) -> None:
        self.model, self.names = model, names
        self.at = np.array([names.index(c) for c in needed], dtype=np.intp)
        self.frame = hasattr(model, "feature_names_in_")

    def response(self, X: np.ndarray, kind: str) -> np.ndarray:
        full = np.zeros((X.shape[0], len(self.names)))
        full[:, self.at] = X
        data = pd.DataFrame(full, columns=self.names) if self.frame else full
        return np.asarray(self.model.predict_proba(data))[:, 1]


# ------------------------------------------------------------------------------ public
@dataclass(frozen=True, eq=False)
class CompiledModel:
    """A fitted model's class-1 probability from only the input columns it uses (see the module docstring).

    Attributes:
        columns: The input columns it reads, in the model's input order (those of
            :func:`~usher2.fusion.needed.find_needed`).
        n_inputs: How many input columns the model itself takes.
        compiled: True when the model's arithmetic is repeated in NumPy; False when this falls back to
            the model's own ``predict_proba`` (still exact, not fast).
        reason: Why it fell back; empty when compiled.
        notes: :func:`~usher2.fusion.needed.find_needed`'s notes (why more columns may be read than used).
    """

    columns: list[str]
    n_inputs: int
    compiled: bool
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    _scorer: _Scorer = field(default_factory=_Scorer, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def predict_proba(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        """The probability of class 1, ``model.predict_proba(X)[:, 1]`` to rounding.

        Args:
            X: ``(n, len(columns))`` values in :attr:`columns` order, or a DataFrame holding
                :attr:`columns` (other columns are ignored).

        Returns:
            ``(n,)`` float64 probabilities.

        Raises:
            InputError: Missing columns, a wrong shape, non-numeric or infinite values, or NaN where the
                model has no imputer.
        """
        A = self._matrix(X)
        bad = np.isinf(A)
        if bad.any():
            cols = [self.columns[j] for j in np.flatnonzero(bad.any(axis=0))]
            raise InputError("features", "finite values or NaN", f"infinite values in {cols[:3]}")
        return np.asarray(self._scorer.response(A, "proba"), dtype=np.float64)

    def _positions(self, index: pd.Index) -> np.ndarray:
        """Where :attr:`columns` sit in a DataFrame's columns (remembered for the last Index object seen)."""
        last = self._cache.get("index")
        if last is not None and last[0] is index:
            return last[1]
        if not index.is_unique:
            raise InputError("features", "unique column names", "duplicates", fix="drop the repeated columns")
        at = index.get_indexer(self.columns)
        if (at < 0).any():
            missing = [c for c, i in zip(self.columns, at, strict=True) if i < 0]
            expected = f"the {len(self.columns)} columns the model uses"
            raise InputError("features", expected, f"{len(missing)} missing {missing[:3]}")
        self._cache["index"] = (index, at)  # an Index is immutable: the same object, the same positions
        return at

    def _matrix(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        try:
            if not isinstance(X, pd.DataFrame):
                A = np.asarray(X, dtype=np.float64)
            else:
                at = self._positions(X.columns)
                try:  # a few rows: the whole table as one array is a view (one dtype) or a small copy, cheaper
                    # than pandas' column selection; many rows: select first, not to copy every column
                    A = np.asarray(X.to_numpy()[:, at] if len(X) <= _FEW_ROWS else X.take(at, axis=1), np.float64)
                except (TypeError, ValueError):  # nullable dtypes (pd.NA -> NaN, as scikit-learn reads them)
                    A = X.take(at, axis=1).to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise InputError("features", "numeric values", f"values that are not ({exc})") from exc
        if A.ndim != 2 or A.shape[1] != len(self.columns):
            raise InputError(
                "features",
                f"an array of shape (n, {len(self.columns)}) in the order of .columns",
                f"shape {A.shape}",
                fix="reshape(1, -1) for one row" if A.ndim == 1 else None,
            )
        return A


def compile_model(model: Any, columns: Sequence[str]) -> CompiledModel:
    """The compiled form of a fitted model fed ``columns`` (see the module docstring).

    Args:
        model: A fitted usher2 fusion model (a bundle's ``model``): a Pipeline, a
            :class:`~usher2.fusion.models.LateFusionClassifier`, either in a ``CalibratedClassifierCV``,
            or a bare classifier.
        columns: Its input columns, in order (a bundle's ``columns``).

    Returns:
        A :class:`CompiledModel`; where a part of the model cannot be repeated exactly, one that calls
        the model itself (``compiled`` False, with the ``reason``, and a warning).

    Raises:
        InputError: Duplicate columns, or columns other than those the model was fitted on.

    Example:
        >>> import pandas as pd
        >>> from sklearn.linear_model import LogisticRegression
        >>> from sklearn.pipeline import make_pipeline
        >>> from sklearn.preprocessing import StandardScaler
        >>> X = pd.DataFrame({"a": [0.0, 1, 2, 3], "b": [1.0, 0, 1, 0], "c": [3.0, 2, 1, 0]})
        >>> model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, [0, 0, 1, 1])
        >>> model[-1].coef_[0, 1] = 0.0  # b no longer matters
        >>> fast = compile_model(model, X.columns)
        >>> fast.columns, fast.compiled
        (['a', 'c'], True)
        >>> bool(abs(fast.predict_proba(X[["a", "c"]].to_numpy()) - model.predict_proba(X)[:, 1]).max() < 1e-12)
        True
    """
    if not callable(getattr(model, "predict_proba", None)):
        raise InputError("model", "a fitted classifier with predict_proba", type(model).__name__)
    names = [str(c) for c in columns]
    found = find_needed(model, names)
    pos = {c: i for i, c in enumerate(found.columns)}
    try:
        scorer = _scorer(model, names, pos)
        if "proba" not in scorer.responses:
            raise _NotCompiled(f"{type(model).__name__} gives no probability the compiler can repeat")
    except _NotCompiled as exc:
        reason = str(exc)
        warnings.warn(f"compile_model: {reason}; the model's own predict_proba is used (exact, not fast)", stacklevel=2)
        return CompiledModel(found.columns, len(names), False, reason, found.notes, _Own(model, names, found.columns))
    return CompiledModel(found.columns, len(names), True, "", found.notes, scorer)
