"""Checks of a bundle's fitted model, so that a bundle which passes them cannot crash the process.

skops' trusted-type list stops code execution, but a trusted type can still carry bad data: a
scikit-learn ``Tree`` whose child index is 2⁴⁰ loads fine and its first ``predict`` reads far past
its node array (a segfault). :func:`validate_model` checks every fitted object of a loaded model
before anything predicts with it, and :func:`check_boosters` checks the XGBoost and LightGBM
models inside ``model.skops`` before skops builds them, because those libraries parse their own
formats in C++ at construction time. Anything wrong is an :class:`~usher2.io.errors.InputError`
that names the object (its path in the model) and the field.

What is checked, per type (every type usher2 fits; any other estimator type is refused):

======================  =====================================================================
Pipeline                steps are (name, estimator) pairs; each step's input width is the
                        previous step's output width
ColumnTransformer       the columns each block reads exist among ``feature_names_in_``; each
                        block's input width is its column count
SimpleImputer           ``statistics_`` has one finite value per column (no indicator)
StandardScaler          ``mean_``, ``scale_`` (> 0) and ``var_`` finite, one per column
usher2 selectors        ``support_`` is a boolean mask of the input width; the LASSO's
                        ``coef_``/``intercept_`` finite with matching shapes
LogisticRegression      ``coef_`` is ``(1 or n_classes, n_features_in_)``, finite intercepts
RandomForest / Tree     child indices -1 (leaf, both) or another node (each node the child of at
                        most one node, never the root: no cycle), split features in
                        ``[0, n_features_in_)``, finite thresholds, finite non-negative
                        ``value`` of shape ``(node_count, n_outputs, max_n_classes)``
SVC                     a known kernel; support vectors, dual coefficients, intercepts and
                        ``n_support`` consistent and finite; dense only
MLPClassifier           ``coefs_``/``intercepts_`` chain from ``n_features_in_`` to ``n_outputs_``
CalibratedClassifierCV  one calibrator per class column; sigmoid ``a_``/``b_`` finite; isotonic
                        thresholds finite, sorted, probabilities in [0, 1]
LateFusionClassifier    one fitted LASSO pipeline per source, the final logistic model's width
                        is the number of scores plus the clinical block's output
XGBClassifier           the booster (below), binary, its width the classifier's input width
LGBMClassifier          the booster (below), binary, its width the classifier's input width
======================  =====================================================================

**Boosted models.** Neither library checks the tree arrays of a model it loads (tried on
xgboost 3.2 and LightGBM 4.7: a left child of 1000, a split feature of 100000 or a tree-group
index of 5 segfault at ``predict``; a cycle in LightGBM's children hangs it; a ``size_leaf_vector``
of 3 segfaults XGBoost's loader itself; LightGBM's ``model_to_string`` writes out of bounds for a
split feature past ``max_feature_idx``; NaN thresholds and leaf values predict NaN silently).
What they do check: XGBoost the array lengths against ``num_nodes``, ``num_deleted``, the tree
count and ``iteration_indptr``'s last entry, and ``base_score`` for the logistic loss; LightGBM
the array lengths against ``num_leaves`` and the feature name and info counts against
``max_feature_idx``. So :func:`check_boosters` reads the model bytes skops would hand to each
library (XGBoost's UBJSON, LightGBM's model text), parses them strictly, and checks per
tree: child links as for scikit-learn trees (LightGBM's leaves as ``~leaf``, each leaf reached
exactly once), split features below the model's feature count, finite thresholds and leaf values,
no categorical splits, no linear or multi-target trees, a binary objective, tree groups and
iteration pointers in range, and (LightGBM) ``tree_sizes`` matching the trees' text.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from usher2.fusion.introspect import children, estimators
from usher2.io.errors import InputError

__all__ = [
    "check_boosters",
    "check_lightgbm_model",
    "check_tree_links",
    "check_xgboost_model",
    "estimators",
    "validate_model",
]

FIX = "the bundle is damaged or was altered; refit it or restore it from a trusted copy"


def _fail(where: str, expected: str, got: Any) -> InputError:
    return InputError(where, expected, str(got), fix=FIX)


# ------------------------------------------------------------------------------ small checks
def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _get(where: str, obj: Any, attr: str) -> Any:
    if attr not in getattr(obj, "__dict__", {}) and not hasattr(type(obj), attr):
        raise _fail(f"{where}{attr}", f"the fitted attribute {attr}", "none")
    return getattr(obj, attr)


def _int(where: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise _fail(where, "an integer", f"{type(value).__name__} {value!r}"[:80])
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        span = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise _fail(where, f"an integer in {span}", v)
    return v


def _float(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        if not (isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "fi"):
            raise _fail(where, "a number", f"{type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise _fail(where, "a finite number", v)
    return v


def _array(
    where: str,
    value: Any,
    *,
    kind: str = "f",
    shape: tuple[int | None, ...] | None = None,
    finite: bool = True,
) -> np.ndarray:
    """``value`` as a NumPy array of dtype kind ``kind`` ("f" float, "i" integer, "b" bool, "O"
    strings) and ``shape`` (None: any length on that axis), with finite values when ``finite``."""
    if type(value) is not np.ndarray:
        raise _fail(where, "a NumPy array", type(value).__name__)
    kinds = {"f": "f", "i": "iu", "b": "b", "O": "OU"}[kind]
    if value.dtype.kind not in kinds:
        raise _fail(
            where, f"an array of {dict(f='floats', i='integers', b='booleans', O='strings')[kind]}", value.dtype
        )
    if shape is not None and (
        value.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, value.shape, strict=True))
    ):
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise _fail(where, f"shape {want}", value.shape)
    if kind == "f" and finite and value.size and not np.isfinite(value).all():
        i = np.unravel_index(int(np.argmin(np.isfinite(value))), value.shape)
        raise _fail(f"{where}[{', '.join(map(str, i))}]", "a finite number", value[i])
    if kind == "O" and not all(isinstance(v, str) for v in value.ravel()):
        raise _fail(where, "an array of strings", "other values")
    return value


def _first_bad(where: str, arr: np.ndarray, bad: np.ndarray, expected: str) -> None:
    if bad.any():
        i = int(np.argmax(bad))
        raise _fail(f"{where}[{i}]", expected, arr[i])


def check_tree_links(where: str, left: Any, right: Any, n_nodes: int, names: tuple[str, str]) -> np.ndarray:
    """Child arrays of a binary tree whose leaves have -1 in both: every split node's children are
    other nodes ``[1, n_nodes)``, and no node is the child of two nodes, so following children from
    the root always ends at a leaf. Returns the mask of split nodes.

    Example:
        >>> check_tree_links("t", [1, -1, -1], [2, -1, -1], 3, ("left", "right")).tolist()
        [True, False, False]
        >>> check_tree_links("t", [1, -1, -1], [1, -1, -1], 3, ("left", "right"))
        Traceback (most recent call last):
        usher2.io.errors.InputError: t.right[0]: expected a node that no other node points to, got 1 (...)
    """
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    split = left != -1
    _first_bad(f"{where}.{names[1]}", right, ~split & (right != -1), "-1 for a leaf (its left child is -1)")
    for name, arr in zip(names, (left, right), strict=True):
        _first_bad(
            f"{where}.{name}", arr, split & ((arr < 1) | (arr >= n_nodes)), f"-1 or a node index in [1, {n_nodes})"
        )
    counts = np.bincount(np.concatenate([left[split], right[split]]), minlength=n_nodes)
    if (counts > 1).any():  # name the second pointer to the first shared node, in node order
        node = int(np.argmax(counts > 1))
        parents = np.flatnonzero(split & ((left == node) | (right == node)))
        i = parents[0] if left[parents[0]] == right[parents[0]] == node else parents[1]
        name = names[1] if i == parents[0] or (right[i] == node and left[i] != node) else names[0]
        raise _fail(f"{where}.{name}[{i}]", "a node that no other node points to", node)
    return split


# -------------------------------------------------------------------------- model validation
class _Validator:
    """Validates estimators by type; :meth:`width` returns an estimator's output width (columns
    it passes on), None for a classifier or an unfitted template."""

    def __init__(self) -> None:
        self._widths: dict[int, int | None] = {}
        self._busy: set[int] = set()
        self._paths: dict[int, str] = {}
        self._checks = self._registry()

    def _registry(self) -> dict[str, Callable[[Any, str], int | None]]:
        from sklearn.calibration import CalibratedClassifierCV, _CalibratedClassifier, _SigmoidCalibration
        from sklearn.compose import ColumnTransformer
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.impute import SimpleImputer
        from sklearn.isotonic import IsotonicRegression
        from sklearn.linear_model import LogisticRegression
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC
        from sklearn.tree import DecisionTreeClassifier

        return {
            _name(Pipeline): self._pipeline,
            _name(ColumnTransformer): self._column_transformer,
            _name(SimpleImputer): self._imputer,
            _name(StandardScaler): self._scaler,
            "usher2.fusion.selection.ICCFilter": self._selector,
            "usher2.fusion.selection.UnivariateFilter": self._selector,
            "usher2.fusion.selection.CorrelationPruner": self._selector,
            "usher2.fusion.selection.LassoSelector": self._lasso,
            _name(LogisticRegression): self._logistic,
            _name(RandomForestClassifier): self._forest,
            _name(DecisionTreeClassifier): self._tree_classifier,
            _name(SVC): self._svc,
            _name(MLPClassifier): self._mlp,
            "xgboost.sklearn.XGBClassifier": self._xgboost,
            "lightgbm.sklearn.LGBMClassifier": self._lightgbm,
            _name(CalibratedClassifierCV): self._calibrated_cv,
            _name(_CalibratedClassifier): self._calibrated,
            _name(_SigmoidCalibration): self._sigmoid,
            _name(IsotonicRegression): self._isotonic,
            "usher2.fusion.models.LateFusionClassifier": self._late_fusion,
        }

    # -- dispatch
    def check(self, path: str, e: Any) -> None:
        self._paths.setdefault(id(e), path)
        self.width(e)

    def width(self, e: Any) -> int | None:
        key = id(e)
        if key in self._widths:
            return self._widths[key]
        path = self._paths.get(key, "model")
        if key in self._busy:
            raise _fail(path, "a model without cycles", "an estimator that contains itself")
        check = self._checks.get(_name(type(e)))
        if check is None:
            raise _fail(
                path,
                "an estimator type usher2 fits and knows how to check",
                _name(type(e)),
                # fail closed: an admitted type whose data usher2 cannot check may crash a prediction
            )
        self._busy.add(key)
        try:
            for child_path, child in children(e, path):
                self._paths.setdefault(id(child), child_path)
            w = check(e, f"{path} ({type(e).__name__}): ") if _fitted(e) else None
        except InputError:
            raise
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:  # a malformed object
            raise _fail(
                f"{path} ({type(e).__name__})", "a well-formed fitted estimator", f"{type(exc).__name__}: {exc}"
            ) from None
        finally:
            self._busy.discard(key)
        self._widths[key] = w
        return w

    # -- shared pieces
    def _n_in(self, e: Any, w: str) -> int:
        n = _int(f"{w}n_features_in_", _get(w, e, "n_features_in_"), lo=1)
        names = e.__dict__.get("feature_names_in_")
        if names is not None:
            _array(f"{w}feature_names_in_", names, kind="O", shape=(n,))
        return n

    def _classes(self, e: Any, w: str, attr: str = "classes_") -> np.ndarray:
        classes = _get(w, e, attr)
        if type(classes) is not np.ndarray or classes.ndim != 1 or len(classes) < 2:
            raise _fail(f"{w}{attr}", "an array of at least 2 class labels", getattr(classes, "shape", classes))
        if classes.dtype.kind not in "iufbOU" or len(np.unique(classes)) != len(classes):
            raise _fail(f"{w}{attr}", "distinct class labels", classes[:5])
        return classes

    def _input_of(self, child: Any, n: int, where: str) -> None:
        """A fitted child that reads ``n`` columns."""
        if _fitted(child):
            got = self._n_in(child, f"{self._paths.get(id(child), where)} ({type(child).__name__}): ")
            if got != n:
                raise _fail(f"{self._paths.get(id(child), where)}.n_features_in_", f"{n} (its input width)", got)

    # -- composites
    def _pipeline(self, e: Any, w: str) -> int | None:
        steps = [s for _, s in e.steps]
        if not steps:
            raise _fail(f"{w}steps", "at least one step", "none")
        width: int | None = None
        for i, s in enumerate(steps):
            if s is None or isinstance(s, str):
                continue
            if width is not None:
                self._input_of(s, width, f"{w}steps[{i}]")
            width = self.width(s)
        return width

    def _column_transformer(self, e: Any, w: str) -> int:
        n = self._n_in(e, w)
        names = e.__dict__.get("feature_names_in_")
        known = set(names.tolist()) if names is not None else set()
        width = 0
        for name, t, cols in e.transformers_:
            where = f"{w}transformers_[{name!r}]"
            if isinstance(cols, str) or not isinstance(cols, list | tuple | np.ndarray):
                raise _fail(f"{where} columns", "a list of column names or indices", type(cols).__name__)
            cols = list(cols)
            for c in cols:
                if isinstance(c, str):
                    if c not in known:
                        raise _fail(f"{where} columns", f"columns among the {n} input columns", repr(c))
                elif isinstance(c, int | np.integer) and not isinstance(c, bool):
                    _int(f"{where} columns", c, lo=0, hi=n - 1)
                else:
                    raise _fail(f"{where} columns", "column names or indices", repr(c)[:60])
            if isinstance(t, str):
                if t not in ("drop", "passthrough"):
                    raise _fail(where, "an estimator, 'drop' or 'passthrough'", repr(t)[:60])
                width += len(cols) if t == "passthrough" else 0
                continue
            if not _fitted(t):
                raise _fail(where, "a fitted transformer", f"an unfitted {type(t).__name__}")
            self._input_of(t, len(cols), where)
            out = self.width(t)
            if out is None:
                raise _fail(where, "a transformer", type(t).__name__)
            width += out
        return width

    # -- transformers
    def _imputer(self, e: Any, w: str) -> int:
        n = self._n_in(e, w)
        if e.__dict__.get("indicator_") is not None or getattr(e, "add_indicator", False):
            raise _fail(f"{w}indicator_", "no missing-value indicator (usher2 fits none)", "one")
        keep = bool(getattr(e, "keep_empty_features", False))
        stats = _array(f"{w}statistics_", _get(w, e, "statistics_"), shape=(n,), finite=keep)
        _first_bad(f"{w}statistics_", stats, np.isinf(stats), "a finite fill value")
        return n if keep else int(np.isfinite(stats).sum())

    def _scaler(self, e: Any, w: str) -> int:
        n = self._n_in(e, w)
        if getattr(e, "with_mean", True):
            _array(f"{w}mean_", _get(w, e, "mean_"), shape=(n,))
        if getattr(e, "with_std", True):
            scale = _array(f"{w}scale_", _get(w, e, "scale_"), shape=(n,))
            _first_bad(f"{w}scale_", scale, scale <= 0, "a positive scale")
            var = _array(f"{w}var_", _get(w, e, "var_"), shape=(n,))
            _first_bad(f"{w}var_", var, var < 0, "a non-negative variance")
        return n

    def _selector(self, e: Any, w: str) -> int:
        n = self._n_in(e, w)
        support = _array(f"{w}support_", _get(w, e, "support_"), kind="b", shape=(n,))
        if "pvalues_" in e.__dict__:
            _array(f"{w}pvalues_", e.pvalues_, shape=(n,))
        return int(support.sum())

    def _lasso(self, e: Any, w: str) -> int:
        n = self._n_in(e, w)
        out = self._selector(e, w)
        classes = self._classes(e, w)
        coef = _get(w, e, "coef_")
        if len(classes) == 2:
            _array(f"{w}coef_", coef, shape=(n,))
            _float(f"{w}intercept_", _get(w, e, "intercept_"))
        else:
            _array(f"{w}coef_", coef, shape=(len(classes), n))
            _array(f"{w}intercept_", _get(w, e, "intercept_"), shape=(len(classes),))
        return out

    # -- classifiers
    def _linear_rows(self, e: Any, w: str) -> int:
        classes = self._classes(e, w)
        return 1 if len(classes) == 2 else len(classes)

    def _logistic(self, e: Any, w: str) -> None:
        n = self._n_in(e, w)
        rows = self._linear_rows(e, w)
        _array(f"{w}coef_", _get(w, e, "coef_"), shape=(rows, n))
        _array(f"{w}intercept_", _get(w, e, "intercept_"), shape=(rows,))

    def _forest(self, e: Any, w: str) -> None:
        n = self._n_in(e, w)
        classes = self._classes(e, w)
        _int(f"{w}n_outputs_", _get(w, e, "n_outputs_"), lo=1, hi=1)
        _int(f"{w}n_classes_", _get(w, e, "n_classes_"), lo=len(classes), hi=len(classes))
        trees = _get(w, e, "estimators_")
        if not isinstance(trees, list) or not trees:
            raise _fail(f"{w}estimators_", "a non-empty list of fitted trees", type(trees).__name__)
        _int(f"{w}n_estimators", getattr(e, "n_estimators", None), lo=len(trees), hi=len(trees))
        for t in trees:
            self._input_of(t, n, f"{w}estimators_")
            self.width(t)
            if not np.array_equal(t.classes_, np.arange(len(classes))) and not np.array_equal(t.classes_, classes):
                raise _fail(f"{self._paths[id(t)]}.classes_", f"the forest's {len(classes)} classes", t.classes_)

    def _tree_classifier(self, e: Any, w: str) -> None:
        n = self._n_in(e, w)
        classes = self._classes(e, w)
        _int(f"{w}n_outputs_", _get(w, e, "n_outputs_"), lo=1, hi=1)
        _int(f"{w}n_classes_", _get(w, e, "n_classes_"), lo=len(classes), hi=len(classes))
        self._tree(_get(w, e, "tree_"), f"{w}tree_", n, len(classes))

    def _tree(self, t: Any, w: str, n_features: int, n_classes: int) -> None:
        from sklearn.tree._tree import Tree

        if type(t) is not Tree:
            raise _fail(w, "a scikit-learn Tree", _name(type(t)))
        _int(f"{w}.n_features", t.n_features, lo=n_features, hi=n_features)
        _int(f"{w}.n_outputs", t.n_outputs, lo=1, hi=1)
        _array(f"{w}.n_classes", t.n_classes, kind="i", shape=(1,))
        _int(f"{w}.n_classes[0]", t.n_classes[0], lo=n_classes, hi=n_classes)
        _int(f"{w}.max_n_classes", t.max_n_classes, lo=n_classes, hi=n_classes)
        n = _int(f"{w}.node_count", t.node_count, lo=1)
        left = _array(f"{w}.children_left", t.children_left, kind="i", shape=(n,))
        right = _array(f"{w}.children_right", t.children_right, kind="i", shape=(n,))
        split = check_tree_links(w, left, right, n, ("children_left", "children_right"))
        feature = _array(f"{w}.feature", t.feature, kind="i", shape=(n,))
        _first_bad(
            f"{w}.feature",
            feature,
            split & ((feature < 0) | (feature >= n_features)),
            f"a feature index in [0, {n_features})",
        )
        threshold = _array(f"{w}.threshold", t.threshold, shape=(n,), finite=False)
        _first_bad(f"{w}.threshold", threshold, split & ~np.isfinite(threshold), "a finite split threshold")
        value = _array(f"{w}.value", t.value, shape=(n, 1, n_classes))
        if (value < 0).any():
            i = np.unravel_index(int(np.argmax(value < 0)), value.shape)
            raise _fail(f"{w}.value[{', '.join(map(str, i))}]", "a non-negative class weight", value[i])
        _array(f"{w}.impurity", t.impurity, shape=(n,))
        _array(f"{w}.weighted_n_node_samples", t.weighted_n_node_samples, shape=(n,))
        _array(f"{w}.n_node_samples", t.n_node_samples, kind="i", shape=(n,))
        missing = _array(f"{w}.missing_go_to_left", t.missing_go_to_left, kind="i", shape=(n,))
        _first_bad(f"{w}.missing_go_to_left", missing, missing > 1, "0 or 1")

    def _svc(self, e: Any, w: str) -> None:
        n = self._n_in(e, w)
        k = len(self._classes(e, w))
        if getattr(e, "kernel", None) not in ("linear", "poly", "rbf", "sigmoid"):
            raise _fail(f"{w}kernel", "linear, poly, rbf or sigmoid", repr(getattr(e, "kernel", None))[:60])
        if e.__dict__.get("_sparse") is not False:
            raise _fail(f"{w}_sparse", "False (usher2 fits dense SVMs)", e.__dict__.get("_sparse"))
        _float(f"{w}_gamma", _get(w, e, "_gamma"))
        _float(f"{w}coef0", getattr(e, "coef0", None))
        _int(f"{w}degree", getattr(e, "degree", None), lo=0, hi=100)
        sv = _array(f"{w}support_vectors_", _get(w, e, "support_vectors_"), shape=(None, n))
        n_sv = sv.shape[0]
        counts = _array(f"{w}_n_support", _get(w, e, "_n_support"), kind="i", shape=(k,))
        if (counts < 0).any() or int(counts.sum()) != n_sv:
            raise _fail(f"{w}_n_support", f"non-negative counts that add up to the {n_sv} support vectors", counts)
        shape_fit = _get(w, e, "shape_fit_")
        if not isinstance(shape_fit, tuple) or len(shape_fit) != 2:
            raise _fail(f"{w}shape_fit_", "(n_samples, n_features)", shape_fit)
        n_fit = _int(f"{w}shape_fit_[0]", shape_fit[0], lo=1)
        _int(f"{w}shape_fit_[1]", shape_fit[1], lo=n, hi=n)
        support = _array(f"{w}support_", _get(w, e, "support_"), kind="i", shape=(n_sv,))
        _first_bad(f"{w}support_", support, (support < 0) | (support >= n_fit), f"a training row index in [0, {n_fit})")
        pairs = k * (k - 1) // 2
        for attr in ("dual_coef_", "_dual_coef_"):
            _array(f"{w}{attr}", _get(w, e, attr), shape=(k - 1, n_sv))
        for attr in ("intercept_", "_intercept_"):
            _array(f"{w}{attr}", _get(w, e, attr), shape=(pairs,))
        for attr in ("_probA", "_probB"):
            a = _array(f"{w}{attr}", _get(w, e, attr), shape=(None,))
            if len(a) not in (0, pairs):
                raise _fail(f"{w}{attr}", f"0 or {pairs} values", len(a))
        _array(f"{w}class_weight_", _get(w, e, "class_weight_"), shape=(k,))

    def _mlp(self, e: Any, w: str) -> None:
        n = self._n_in(e, w)
        k = len(self._classes(e, w))
        if getattr(e, "activation", None) not in ("identity", "logistic", "tanh", "relu"):
            raise _fail(f"{w}activation", "identity, logistic, tanh or relu", repr(getattr(e, "activation", None)))
        out_act = e.__dict__.get("out_activation_")
        if out_act not in ("logistic", "softmax"):
            raise _fail(f"{w}out_activation_", "logistic or softmax", repr(out_act))
        n_out = _int(f"{w}n_outputs_", _get(w, e, "n_outputs_"), lo=1 if k == 2 else k, hi=1 if k == 2 else k)
        coefs, intercepts = _get(w, e, "coefs_"), _get(w, e, "intercepts_")
        if (
            not isinstance(coefs, list)
            or not isinstance(intercepts, list)
            or not coefs
            or len(coefs) != len(intercepts)
        ):
            raise _fail(f"{w}coefs_", "lists of layer weights and intercepts of one length", "other")
        _int(f"{w}n_layers_", _get(w, e, "n_layers_"), lo=len(coefs) + 1, hi=len(coefs) + 1)
        width = n
        for i, (c, b) in enumerate(zip(coefs, intercepts, strict=True)):
            c = _array(f"{w}coefs_[{i}]", c, shape=(width, None))
            width = c.shape[1]
            _array(f"{w}intercepts_[{i}]", b, shape=(width,))
        if width != n_out:
            raise _fail(f"{w}coefs_[{len(coefs) - 1}]", f"{n_out} output columns", width)
        binarizer = e.__dict__.get("_label_binarizer")
        if binarizer is not None:
            self._classes(binarizer, f"{w}_label_binarizer.")

    def _xgboost(self, e: Any, w: str) -> None:
        booster = _get(w, e, "_Booster")
        if _name(type(booster)) != "xgboost.core.Booster":
            raise _fail(f"{w}_Booster", "an XGBoost Booster", _name(type(booster)))
        _int(f"{w}n_classes_", _get(w, e, "n_classes_"), lo=2, hi=2)
        n = _int(f"{w}_Booster.num_features()", booster.num_features(), lo=1)
        names = booster.feature_names
        if names is not None and len(names) != n:
            raise _fail(f"{w}_Booster.feature_names", f"{n} names", len(names))
        _jobs(f"{w}n_jobs", getattr(e, "n_jobs", None))

    def _lightgbm(self, e: Any, w: str) -> None:
        booster = _get(w, e, "_Booster")
        if _name(type(booster)) != "lightgbm.basic.Booster":
            raise _fail(f"{w}_Booster", "a LightGBM Booster", _name(type(booster)))
        n = _int(f"{w}_Booster.num_feature()", booster.num_feature(), lo=1)
        _int(f"{w}_n_features", _get(w, e, "_n_features"), lo=n, hi=n)
        _int(f"{w}_n_features_in", _get(w, e, "_n_features_in"), lo=n, hi=n)
        _int(f"{w}_n_classes", _get(w, e, "_n_classes"), lo=2, hi=2)
        self._classes(e, w, "_classes")
        if e.__dict__.get("_objective") != "binary":
            raise _fail(f"{w}_objective", "'binary'", repr(e.__dict__.get("_objective"))[:60])
        if getattr(booster, "pandas_categorical", None):
            raise _fail(f"{w}_Booster.pandas_categorical", "none (usher2 fits no categorical columns)", "a list")
        _jobs(f"{w}n_jobs", getattr(e, "n_jobs", None))

    # -- calibration and late fusion
    def _calibrated_cv(self, e: Any, w: str) -> None:
        n = self._n_in(e, w)
        classes = self._classes(e, w)
        cal = _get(w, e, "calibrated_classifiers_")
        if not isinstance(cal, list) or not cal:
            raise _fail(f"{w}calibrated_classifiers_", "a non-empty list", type(cal).__name__)
        for c in cal:
            if not np.array_equal(getattr(c, "classes", None), classes):
                raise _fail(
                    f"{self._paths[id(c)]}.classes", "the calibrated model's classes", getattr(c, "classes", None)
                )
            est = getattr(c, "estimator", None)
            if est is None or not _fitted(est):
                raise _fail(f"{self._paths[id(c)]}.estimator", "a fitted classifier", type(est).__name__)
            self.width(c)
            if getattr(est, "n_features_in_", n) != n:
                raise _fail(
                    f"{self._paths[id(est)]}.n_features_in_", f"{n} (the calibrated model's)", est.n_features_in_
                )

    def _calibrated(self, c: Any, w: str) -> None:
        classes = self._classes(c, w, "classes")
        if getattr(c, "method", None) not in ("sigmoid", "isotonic"):
            raise _fail(f"{w}method", "sigmoid or isotonic", repr(getattr(c, "method", None))[:60])
        cals = _get(w, c, "calibrators")
        want = 1 if len(classes) == 2 else len(classes)
        if not isinstance(cals, list) or len(cals) != want:
            raise _fail(f"{w}calibrators", f"{want} calibrator(s)", len(cals) if isinstance(cals, list) else cals)
        for cal in cals:
            self.width(cal)
        self.width(c.estimator)

    def _sigmoid(self, e: Any, w: str) -> None:
        _float(f"{w}a_", _get(w, e, "a_"))
        _float(f"{w}b_", _get(w, e, "b_"))

    def _isotonic(self, e: Any, w: str) -> None:
        x = _array(f"{w}X_thresholds_", _get(w, e, "X_thresholds_"), shape=(None,))
        y = _array(f"{w}y_thresholds_", _get(w, e, "y_thresholds_"), shape=(len(x),))
        if not len(x):
            raise _fail(f"{w}X_thresholds_", "at least one threshold", "none")
        _first_bad(f"{w}X_thresholds_", x[1:], np.diff(x) < 0, "thresholds in increasing order")
        _first_bad(f"{w}y_thresholds_", y, (y < 0) | (y > 1), "a probability in [0, 1]")
        step = np.diff(y) if getattr(e, "increasing_", True) else -np.diff(y)
        _first_bad(f"{w}y_thresholds_", y[1:], step < 0, "monotone values")
        _float(f"{w}X_min_", _get(w, e, "X_min_"))
        _float(f"{w}X_max_", _get(w, e, "X_max_"))
        if getattr(e, "out_of_bounds", None) not in ("clip", "nan", "raise"):
            raise _fail(f"{w}out_of_bounds", "clip, nan or raise", repr(getattr(e, "out_of_bounds", None))[:60])

    def _late_fusion(self, e: Any, w: str) -> None:
        sources = getattr(e, "sources", None) or {}
        models = _get(w, e, "source_models_")
        if not isinstance(sources, dict) or set(sources) != set(models):
            raise _fail(f"{w}source_models_", f"one fitted model per source {sorted(sources)}", sorted(models))
        for name, cols in sources.items():
            if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
                raise _fail(f"{w}sources[{name!r}]", "a list of column names", repr(cols)[:60])
            m = models[name]
            if _name(type(m)) != "sklearn.pipeline.Pipeline":
                raise _fail(f"{w}source_models_[{name!r}]", "an imaging pipeline", type(m).__name__)
            self.width(m)  # checks the steps' form first
            if m.steps[-1][0] != "lasso" or _name(type(m.steps[-1][1])) != "usher2.fusion.selection.LassoSelector":
                raise _fail(f"{w}source_models_[{name!r}]", "an imaging pipeline ending in its LASSO", m.steps[-1][0])
            self._input_of(m, len(cols), f"{w}source_models_[{name!r}]")
        clinical = getattr(e, "clinical", None) or []
        clinical_model = e.__dict__.get("clinical_model_")
        n_design = len(sources)
        if clinical:
            if (
                clinical_model is None
                or not isinstance(clinical, list)
                or not all(isinstance(c, str) for c in clinical)
            ):
                raise _fail(f"{w}clinical_model_", "a fitted clinical selector for the clinical columns", "none")
            self._input_of(clinical_model, len(clinical), f"{w}clinical_model_")
            n_design += self.width(clinical_model) or 0
        elif clinical_model is not None:
            raise _fail(f"{w}clinical_model_", "none (no clinical columns)", type(clinical_model).__name__)
        features = _get(w, e, "final_features_")
        if not isinstance(features, list) or len(features) != n_design:
            raise _fail(
                f"{w}final_features_", f"{n_design} names (the scores and clinical columns)", repr(features)[:80]
            )
        final = _get(w, e, "final_")
        if _name(type(final)) != "sklearn.linear_model._logistic.LogisticRegression":
            raise _fail(f"{w}final_", "a LogisticRegression", _name(type(final)))
        self._input_of(final, n_design, f"{w}final_")
        self.width(final)
        self._classes(e, w)


def _jobs(where: str, value: Any) -> None:
    if value is not None:
        _int(where, value, lo=-1, hi=1024)  # threads at prediction time


def _fitted(e: Any) -> bool:
    """scikit-learn's rule: ``__sklearn_is_fitted__`` where defined, else any attribute ending in ``_``."""
    if hasattr(e, "__sklearn_is_fitted__"):
        try:
            return bool(e.__sklearn_is_fitted__())
        except Exception:  # a pipeline whose last step is a string, a malformed object
            return False
    return any(k.endswith("_") and not k.startswith("__") for k in getattr(e, "__dict__", {}))


def _late_columns(e: Any) -> list[str]:
    sources = getattr(e, "sources", None) or {}
    cols = [c for v in sources.values() for c in v] + list(getattr(e, "clinical", None) or [])
    return list(dict.fromkeys(cols))


def validate_model(model: Any, columns: Sequence[str], *, where: str = "model") -> None:
    """Check every fitted object of ``model`` and its input columns against ``columns``.

    Args:
        model: A fitted usher2 model (early-fusion pipeline, late fusion, optionally calibrated).
        columns: The columns the bundle says the model reads (``config["columns"]``), in order.
        where: Prefix of error locations (the model file).

    Raises:
        InputError: An estimator type usher2 does not fit, or a field out of range, of the wrong
            shape or not finite; the message names the object's path and the field. Also when
            the model's input columns are not ``columns``.

    Example:
        >>> import numpy as np, pandas as pd
        >>> from sklearn.linear_model import LogisticRegression
        >>> X = pd.DataFrame({"a": [0.0, 1, 2, 3], "b": [1.0, 0, 1, 0]})
        >>> lr = LogisticRegression().fit(X, [0, 0, 1, 1])
        >>> validate_model(lr, ["a", "b"])
        >>> lr.coef_ = np.array([[np.nan, 1.0]])
        >>> validate_model(lr, ["a", "b"])
        Traceback (most recent call last):
        usher2.io.errors.InputError: model: model (LogisticRegression): coef_[0, 0]: expected a finite number, got n...
    """
    v = _Validator()
    if not _fitted(model):
        raise _fail(f"{where}: model", "a fitted model", f"an unfitted {type(model).__name__}")
    for path, e in estimators(model):
        try:
            v.check(path, e)
        except InputError as exc:
            raise InputError(f"{where}: {exc.where}", exc.expected, exc.got, fix=exc.fix) from None
    columns = list(columns)
    n = getattr(model, "n_features_in_", None)
    if n is not None and n != len(columns):
        raise _fail(f"{where}: model.n_features_in_", f"{len(columns)} (the bundle's columns in config.json)", n)
    names = getattr(model, "feature_names_in_", None)
    if names is not None and list(names) != columns:
        diff = next((i for i, (a, b) in enumerate(zip(list(names), columns, strict=False)) if a != b), None)
        got = f"column {diff}: {list(names)[diff]!r} vs {columns[diff]!r}" if diff is not None else "other names"
        raise _fail(f"{where}: model.feature_names_in_", "the bundle's columns in config.json, in order", got)
    late = [e for _, e in estimators(model) if _name(type(e)) == "usher2.fusion.models.LateFusionClassifier"]
    for e in late:
        missing = [c for c in _late_columns(e) if c not in set(columns)]
        if missing:
            raise _fail(f"{where}: late-fusion sources", "columns listed in config.json", f"missing {missing[:3]}")


# --------------------------------------------------------------------------- boosted models
_UBJ_NUMBERS = {b"i": ">i1", b"U": ">u1", b"I": ">i2", b"l": ">i4", b"L": ">i8", b"d": ">f4", b"D": ">f8"}


class _UBJ:
    """A strict decoder of Universal Binary JSON (draft 12), XGBoost's binary model format. Typed
    numeric arrays become NumPy arrays; duplicate keys, unknown markers and trailing bytes fail."""

    def __init__(self, data: bytes) -> None:
        self.b = memoryview(data)
        self.i = 0

    def decode(self) -> Any:
        v = self._value(self._marker(), 0)
        if self.i != len(self.b):
            raise ValueError(f"{len(self.b) - self.i} trailing bytes")
        return v

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.i + n > len(self.b):
            raise ValueError("truncated")
        out = self.b[self.i : self.i + n]
        self.i += n
        return out

    def _marker(self) -> bytes:
        m = bytes(self._take(1))
        while m == b"N":
            m = bytes(self._take(1))
        return m

    def _number(self, m: bytes) -> Any:
        dt = np.dtype(_UBJ_NUMBERS[m])
        return np.frombuffer(self._take(dt.itemsize), dt)[0].item()

    def _count(self, m: bytes | None = None) -> int:
        m = m or self._marker()
        if m not in (b"i", b"U", b"I", b"l", b"L"):
            raise ValueError(f"a length marker, got {m!r}")
        n = self._number(m)
        if n < 0 or n > len(self.b):
            raise ValueError(f"bad length {n}")
        return n

    def _peek(self, c: bytes) -> bool:
        if bytes(self.b[self.i : self.i + 1]) == c:
            self.i += 1
            return True
        return False

    def _value(self, m: bytes, depth: int) -> Any:
        if depth > 64:
            raise ValueError("nested too deep")
        if m in _UBJ_NUMBERS:
            return self._number(m)
        if m in (b"Z", b"T", b"F"):
            return {b"Z": None, b"T": True, b"F": False}[m]
        if m == b"C":
            return bytes(self._take(1)).decode("ascii")
        if m in (b"S", b"H"):
            return bytes(self._take(self._count())).decode("utf-8")
        if m in (b"[", b"{"):
            typ = bytes(self._take(1)) if self._peek(b"$") else None
            count = self._count() if self._peek(b"#") else None
            if typ is not None and (count is None or (typ not in _UBJ_NUMBERS and typ not in (b"S", b"[", b"{"))):
                raise ValueError(f"unsupported container type {typ!r}")
            return self._array(typ, count, depth) if m == b"[" else self._object(typ, count, depth)
        raise ValueError(f"unknown marker {m!r}")

    def _array(self, typ: bytes | None, count: int | None, depth: int) -> Any:
        if typ is not None and typ in _UBJ_NUMBERS:
            dt = np.dtype(_UBJ_NUMBERS[typ])
            return np.frombuffer(self._take(count * dt.itemsize), dt).astype(dt.newbyteorder("="))
        out = []
        while count is None or len(out) < count:
            m = typ or self._marker()
            if count is None and m == b"]":
                return out
            out.append(self._value(m, depth + 1))
        return out

    def _object(self, typ: bytes | None, count: int | None, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while count is None or len(out) < count:
            if count is None and self._peek(b"}"):
                return out
            key = bytes(self._take(self._count())).decode("utf-8")
            if key in out:
                raise ValueError(f"duplicate key {key!r}")
            out[key] = self._value(typ or self._marker(), depth + 1)
        return out


def _xgb_decode(raw: bytes) -> Any:
    """The document XGBoost would read from ``raw``: its serialisation (``{"Config", "Model"}``) is
    UBJSON whose second byte is a letter, as ``XGBoosterUnserializeFromBuffer`` requires."""
    if raw[:1] != b"{" or not raw[1:2].isalpha():
        raise ValueError("not XGBoost's UBJSON serialisation")
    return _UBJ(raw).decode()


def _at(doc: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(doc, dict) or k not in doc:
            raise KeyError("/".join(keys))
        doc = doc[k]
    return doc


def _param_int(where: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"-?\d{1,18}", value):
        raise _fail(where, "an integer (as text)", repr(value)[:60])
    return _int(where, int(value), lo=lo, hi=hi)


def _as_array(where: str, value: Any, n: int, kind: str) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != 1 or len(a) != n or (n and a.dtype.kind not in ("iub" if kind == "i" else "iuf")):
        raise _fail(where, f"{n} {'integers' if kind == 'i' else 'numbers'}", f"{a.dtype} shape {a.shape}")
    return a.astype(np.int64 if kind == "i" else np.float64)


def _malformed(check: Callable[[Any, str], int], what: str) -> Callable[[Any, str], int]:
    """``check`` with Python errors of a malformed document turned into an :class:`InputError`."""

    def run(doc: Any, where: str = what) -> int:
        try:
            return check(doc, where)
        except InputError:
            raise
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
            raise _fail(where, f"a well-formed {what}", f"{type(exc).__name__}: {exc}") from None

    run.__doc__ = check.__doc__
    return run


def _xgboost_doc(doc: Any, where: str) -> int:
    """Check a decoded XGBoost booster (``{"Config", "Model"}``); returns its feature count."""
    if not isinstance(doc, dict) or set(doc) != {"Config", "Model"}:
        raise _fail(where, "an XGBoost booster ({Config, Model})", sorted(doc) if isinstance(doc, dict) else doc)
    try:
        learner = _at(doc, "Model", "learner")
        param = _at(learner, "learner_model_param")
        booster = _at(learner, "gradient_booster")
        model = _at(booster, "model")
        trees = _at(model, "trees")
        info = _at(model, "tree_info")
        indptr = _at(model, "iteration_indptr")
        objective = _at(learner, "objective", "name")
        config = _at(doc, "Config", "learner")
    except KeyError as exc:
        raise _fail(where, "an XGBoost model document", f"no {exc.args[0]}") from None
    if booster.get("name") != "gbtree" or _at(config, "gradient_booster").get("name") != "gbtree":
        raise _fail(f"{where}: gradient_booster.name", "gbtree", repr(booster.get("name")))
    if objective != "binary:logistic" or config.get("objective", {}).get("name") != objective:
        raise _fail(f"{where}: objective", "binary:logistic (usher2 fits binary models)", repr(objective)[:60])
    if config.get("learner_model_param") != param:
        raise _fail(f"{where}: Config learner_model_param", "the model's learner_model_param", "another one")
    n_features = _param_int(f"{where}: num_feature", param.get("num_feature"), lo=1)
    _param_int(f"{where}: num_class", param.get("num_class"), lo=0, hi=0)
    _param_int(f"{where}: num_target", param.get("num_target"), lo=1, hi=1)
    base = param.get("base_score")
    if not isinstance(base, str) or not re.fullmatch(r"\[?[-+0-9.eE]+\]?", base):
        raise _fail(f"{where}: base_score", "a number", repr(base)[:60])
    generic = config.get("generic_param", {})
    for key in ("n_jobs", "nthread"):
        if key in generic:
            _param_int(f"{where}: generic_param.{key}", generic[key], lo=-1, hi=1024)
    names, types = learner.get("feature_names", []), learner.get("feature_types", [])
    if not isinstance(names, list) or (names and len(names) != n_features):
        raise _fail(f"{where}: feature_names", f"none or {n_features} names", repr(names)[:60])
    if not isinstance(types, list) or any(t not in ("float", "q", "int", "i") for t in types):
        raise _fail(f"{where}: feature_types", "numeric types only (no categorical features)", repr(types)[:60])
    cats = model.get("cats", {})
    if any(len(v) for v in (cats or {}).values()):
        raise _fail(f"{where}: cats", "no categorical encoding", "one")
    if not isinstance(trees, list) or not isinstance(info, list | np.ndarray):
        raise _fail(f"{where}: trees", "a list of trees", type(trees).__name__)
    n_trees = _param_int(f"{where}: num_trees", _at(model, "gbtree_model_param").get("num_trees"), lo=0)
    if len(trees) != n_trees or len(info) != n_trees:
        raise _fail(f"{where}: trees", f"{n_trees} trees and tree groups", f"{len(trees)} and {len(info)}")
    info = _as_array(f"{where}: tree_info", info, n_trees, "i")
    _first_bad(f"{where}: tree_info", info, info != 0, "tree group 0 (one output)")
    indptr = _as_array(f"{where}: iteration_indptr", indptr, len(indptr), "i")
    if not len(indptr) or indptr[0] != 0 or indptr[-1] != n_trees or (np.diff(indptr) < 0).any():
        raise _fail(f"{where}: iteration_indptr", f"non-decreasing from 0 to {n_trees}", indptr[:8])
    for i, tree in enumerate(trees):
        _check_xgb_tree(f"{where}: trees[{i}]", tree, i, n_features)
    return n_features


def _check_xgb_tree(w: str, tree: Any, index: int, n_features: int) -> None:
    if not isinstance(tree, dict):
        raise _fail(w, "a tree", type(tree).__name__)
    tp = tree.get("tree_param", {})
    n = _param_int(f"{w}.num_nodes", tp.get("num_nodes"), lo=1)
    _param_int(f"{w}.num_deleted", tp.get("num_deleted"), lo=0, hi=0)
    _param_int(f"{w}.size_leaf_vector", tp.get("size_leaf_vector"), lo=0, hi=1)
    _param_int(f"{w}.num_feature", tp.get("num_feature"), lo=n_features, hi=n_features)
    _int(f"{w}.id", tree.get("id"), lo=index, hi=index)
    arrays = {}
    for key in ("left_children", "right_children", "parents", "split_indices", "split_type", "default_left"):
        arrays[key] = _as_array(f"{w}.{key}", tree.get(key), n, "i")
    for key in ("split_conditions", "base_weights", "loss_changes", "sum_hessian"):
        arrays[key] = _as_array(f"{w}.{key}", tree.get(key), n, "f")
    for key in ("categories", "categories_nodes", "categories_segments", "categories_sizes"):
        if len(np.asarray(tree.get(key, []))):
            raise _fail(f"{w}.{key}", "no categorical splits", "some")
    left, right = arrays["left_children"], arrays["right_children"]
    split = check_tree_links(w, left, right, n, ("left_children", "right_children"))
    nodes = np.flatnonzero(split)
    for kids in (left[split], right[split]):
        wrong = arrays["parents"][kids] != nodes
        if wrong.any():
            c, i = int(kids[np.argmax(wrong)]), int(nodes[np.argmax(wrong)])
            raise _fail(f"{w}.parents[{c}]", f"{i} (the node that points to it)", int(arrays["parents"][c]))
    feature = arrays["split_indices"]
    _first_bad(
        f"{w}.split_indices",
        feature,
        split & ((feature < 0) | (feature >= n_features)),
        f"a feature index in [0, {n_features})",
    )
    _first_bad(f"{w}.split_type", arrays["split_type"], arrays["split_type"] != 0, "0 (numerical split)")
    _first_bad(
        f"{w}.default_left",
        arrays["default_left"],
        (arrays["default_left"] < 0) | (arrays["default_left"] > 1),
        "0 or 1",
    )
    for key in ("split_conditions", "base_weights"):
        _first_bad(f"{w}.{key}", arrays[key], ~np.isfinite(arrays[key]), "a finite number")


_INT = re.compile(r"-?\d{1,18}")
_FLOAT = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_LGB_HEADER = {
    "version",
    "num_class",
    "num_tree_per_iteration",
    "label_index",
    "max_feature_idx",
    "objective",
    "average_output",
    "feature_names",
    "monotone_constraints",
    "feature_infos",
    "tree_sizes",
}
_LGB_TREE = {
    "num_leaves",
    "num_cat",
    "split_feature",
    "split_gain",
    "threshold",
    "decision_type",
    "left_child",
    "right_child",
    "leaf_value",
    "leaf_weight",
    "leaf_count",
    "internal_value",
    "internal_weight",
    "internal_count",
    "is_linear",
    "shrinkage",
}


def _lgb_values(where: str, text: str, n: int, kind: str) -> np.ndarray:
    parts = text.split(" ") if text else []
    pattern = _INT if kind == "i" else _FLOAT
    if len(parts) != n or not all(pattern.fullmatch(p) for p in parts):
        raise _fail(where, f"{n} {'integers' if kind == 'i' else 'numbers'}", repr(text[:80]))
    a = np.array(
        [int(p) for p in parts] if kind == "i" else [float(p) for p in parts],
        dtype=np.int64 if kind == "i" else np.float64,
    )
    if kind == "f":
        _first_bad(where, a, ~np.isfinite(a), "a finite number")
    return a


def _lightgbm_text(text: str, where: str) -> int:
    """Check a LightGBM model string as its loader reads it; returns its feature count."""
    if "\x00" in text or "\r" in text:
        raise _fail(where, "LightGBM model text", "NUL or carriage-return characters")
    lines = text.split("\n")
    if not lines or lines[0] != "tree":
        raise _fail(where, "LightGBM model text starting with 'tree'", repr(lines[0][:40]) if lines else "nothing")
    header: dict[str, str] = {}
    offset = len(lines[0]) + 1
    i = 1
    while i < len(lines) and not lines[i].startswith("Tree="):
        line = lines[i]
        if line:
            key, eq, value = line.partition("=")
            if key not in _LGB_HEADER or (not eq and key != "average_output") or key in header:
                raise _fail(f"{where}: header", "known, unrepeated keys", repr(line[:60]))
            if "=" in value and key not in ("feature_names", "monotone_constraints"):
                raise _fail(f"{where}: header", "key=value lines", repr(line[:60]))
            header[key] = value
        offset += len(line) + 1
        i += 1
    # LightGBM counts tree_sizes from here, the first "Tree=" line
    for key in (
        "num_class",
        "num_tree_per_iteration",
        "max_feature_idx",
        "objective",
        "feature_names",
        "feature_infos",
    ):
        if key not in header:
            raise _fail(f"{where}: header", f"a {key} line", "none")
    n_features = (
        _int(
            f"{where}: max_feature_idx",
            int(header["max_feature_idx"]) if _INT.fullmatch(header["max_feature_idx"]) else None,
            lo=0,
        )
        + 1
    )
    for key in ("num_class", "num_tree_per_iteration"):
        _int(f"{where}: {key}", int(header[key]) if _INT.fullmatch(header[key]) else None, lo=1, hi=1)
    if (
        not re.fullmatch(r"binary sigmoid:" + _FLOAT.pattern, header["objective"])
        or not float(header["objective"].split(":")[1]) > 0
    ):
        raise _fail(f"{where}: objective", "binary sigmoid:<positive number>", repr(header["objective"][:60]))
    if len(header["feature_names"].split(" ")) != n_features:
        raise _fail(f"{where}: feature_names", f"{n_features} names", len(header["feature_names"].split(" ")))
    starts: list[int] = []
    while i < len(lines) and lines[i].startswith("Tree="):
        k = len(starts)
        if lines[i] != f"Tree={k}":
            raise _fail(f"{where}: tree {k}", f"'Tree={k}'", repr(lines[i][:40]))
        starts.append(offset)
        offset += len(lines[i]) + 1
        i += 1
        fields: dict[str, str] = {}
        while i < len(lines) and lines[i]:
            key, eq, value = lines[i].partition("=")
            if not eq or key not in _LGB_TREE or key in fields:
                raise _fail(f"{where}: tree {k}", "known, unrepeated key=value lines", repr(lines[i][:60]))
            fields[key] = value
            offset += len(lines[i]) + 1
            i += 1
        if len(fields) > 22:  # LightGBM's Tree parser reads at most 22 lines
            raise _fail(f"{where}: tree {k}", "at most 22 fields", len(fields))
        _check_lgb_tree(f"{where}: tree {k}", fields, n_features)
        while i < len(lines) and not lines[i]:
            offset += 1
            i += 1
    if not starts:
        raise _fail(where, "at least one tree", "none")
    if i >= len(lines) or lines[i] != "end of trees":
        raise _fail(where, "'end of trees' after the trees", repr(lines[i][:40]) if i < len(lines) else "end of text")
    sizes = [b - a for a, b in zip(starts, [*starts[1:], offset], strict=True)]
    if "tree_sizes" in header:
        got = header["tree_sizes"].split(" ")
        if not all(_INT.fullmatch(s) for s in got) or [int(s) for s in got] != sizes:
            raise _fail(f"{where}: tree_sizes", f"the trees' text lengths {sizes[:5]}", repr(header["tree_sizes"][:60]))
    rest = lines[i + 1 :]
    if "parser:" in rest:
        raise _fail(where, "no custom parser section", "one")
    for line in rest:
        if line.startswith("[linear_tree: ") and line != "[linear_tree: 0]":
            raise _fail(f"{where}: parameters", "[linear_tree: 0]", repr(line))
    return n_features


def _check_lgb_tree(w: str, f: dict[str, str], n_features: int) -> None:
    for key in ("num_leaves", "num_cat", "leaf_value"):
        if key not in f:
            raise _fail(w, f"a {key} line", "none")
    leaves = _int(f"{w}.num_leaves", int(f["num_leaves"]) if _INT.fullmatch(f["num_leaves"]) else None, lo=1)
    _int(f"{w}.num_cat", int(f["num_cat"]) if _INT.fullmatch(f["num_cat"]) else None, lo=0, hi=0)
    if f.get("is_linear", "0") != "0":
        raise _fail(f"{w}.is_linear", "0 (no linear trees)", repr(f["is_linear"]))
    if "shrinkage" in f:
        _lgb_values(f"{w}.shrinkage", f["shrinkage"], 1, "f")
    _lgb_values(f"{w}.leaf_value", f["leaf_value"], leaves, "f")
    inner = leaves - 1
    for key, n, kind in (
        ("leaf_weight", leaves, "f"),
        ("leaf_count", leaves, "i"),
        ("split_gain", inner, "f"),
        ("internal_value", inner, "f"),
        ("internal_weight", inner, "f"),
        ("internal_count", inner, "i"),
    ):
        if key in f:  # read by SHAP and feature importance
            _lgb_values(f"{w}.{key}", f[key], n, kind)
    if inner == 0:
        return
    arrays = {}
    for key, kind in (
        ("split_feature", "i"),
        ("threshold", "f"),
        ("decision_type", "i"),
        ("left_child", "i"),
        ("right_child", "i"),
    ):
        if key not in f:
            raise _fail(w, f"a {key} line", "none")
        arrays[key] = _lgb_values(f"{w}.{key}", f[key], inner, kind)
    feature = arrays["split_feature"]
    _first_bad(
        f"{w}.split_feature", feature, (feature < 0) | (feature >= n_features), f"a feature index in [0, {n_features})"
    )
    decision = arrays["decision_type"]
    _first_bad(
        f"{w}.decision_type", decision, ~np.isin(decision, [0, 2, 4, 6, 8, 10]), "a numerical split (0-10, even)"
    )
    # children: an inner node i >= 0 (never the root), a leaf as ~leaf (-1 - leaf); each reached once
    seen_inner = np.zeros(inner, dtype=bool)
    seen_leaf = np.zeros(leaves, dtype=bool)
    for name in ("left_child", "right_child"):
        for i, c in enumerate(arrays[name]):
            if c >= 0:
                if not 1 <= c < inner or seen_inner[c]:
                    raise _fail(
                        f"{w}.{name}[{i}]", f"an inner node in [1, {inner}) no other node points to, or ~leaf", int(c)
                    )
                seen_inner[c] = True
            else:
                leaf = -1 - int(c)
                if leaf >= leaves or seen_leaf[leaf]:
                    raise _fail(
                        f"{w}.{name}[{i}]", f"~leaf for a leaf in [0, {leaves}) no other node points to", int(c)
                    )
                seen_leaf[leaf] = True
    if not seen_leaf.all() or not seen_inner[1:].all():
        raise _fail(w, "every node and leaf reached from the root", "unreachable nodes")


check_xgboost_model = _malformed(_xgboost_doc, "XGBoost model")
check_lightgbm_model = _malformed(_lightgbm_text, "LightGBM model")


def _nodes(doc: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every JSON object in a skops schema with a readable path (attribute names and list indices)."""
    out: list[tuple[str, dict[str, Any]]] = []
    todo: list[tuple[str, Any]] = [("model", doc)]
    while todo:
        path, n = todo.pop()
        if isinstance(n, dict):
            out.append((path, n))
            todo += [(path if k == "content" else f"{path}.{k}", v) for k, v in n.items() if not k.startswith("__")]
        elif isinstance(n, list):
            todo += [(f"{path}[{i}]", v) for i, v in enumerate(n)]
    return out


def check_boosters(source: str | Path | IO[bytes], *, where: str | Path | None = None) -> None:
    """Check every XGBoost and LightGBM booster inside a skops file, before skops builds them.

    Reads ``schema.json`` of the archive, finds each booster's state (XGBoost's ``handle`` bytes,
    LightGBM's ``_handle`` model text) as skops will hand it to ``__setstate__``, and checks it
    with :func:`check_xgboost_model` / :func:`check_lightgbm_model`. A booster state in any other
    form, or one shared with another node (skops' memo could substitute it), is refused.

    Args:
        source: The skops file (a path or an open binary file).
        where: The name errors give the file (default: ``source`` when it is a path).

    Raises:
        InputError: A booster that does not pass, named with the field.
    """
    path = Path(where) if where is not None else Path(source) if isinstance(source, str | Path) else Path("model")
    try:
        with zipfile.ZipFile(source) as z:
            schema = json.loads(z.read("schema.json"))
            nodes = _nodes(schema)
            ids: dict[Any, int] = {}
            for _, n in nodes:
                if "__id__" in n:
                    ids[n["__id__"]] = ids.get(n["__id__"], 0) + 1
            for node_path, n in nodes:
                module = n.get("__module__")
                if module not in ("xgboost.core", "lightgbm.basic"):
                    continue
                w = f"{path}: {node_path} ({n.get('__class__')})"
                if n.get("__loader__") == "CachedNode":
                    continue  # a reference to a booster checked where it is defined
                if n.get("__class__") != "Booster" or n.get("__loader__") != "ObjectNode":
                    raise _fail(w, "a Booster object", f"{n.get('__class__')} via {n.get('__loader__')}")
                if "content" not in n:
                    continue  # no state: an empty booster, which cannot predict
                state = n["content"]
                if (
                    not isinstance(state, dict)
                    or state.get("__loader__") != "DictNode"
                    or not isinstance(state.get("content"), dict)
                ):
                    raise _fail(w, "the booster's state as a dict", repr(state)[:80])
                fields = state["content"]
                key = "handle" if module == "xgboost.core" else ("_handle" if "_handle" in fields else "handle")
                h = fields.get(key)
                for node in (state, h):
                    if isinstance(node, dict) and node.get("__id__") is not None and ids.get(node["__id__"], 0) != 1:
                        raise _fail(w, "a booster state that no other node shares", f"id {node['__id__']} used twice")
                if h is None or (h.get("__loader__") == "JsonNode" and h.get("content") == "null"):
                    continue
                if module == "xgboost.core":
                    if h.get("__loader__") not in ("BytearrayNode", "BytesNode") or not isinstance(h.get("file"), str):
                        raise _fail(f"{w}.{key}", "the model bytes", h.get("__loader__"))
                    try:
                        doc = _xgb_decode(z.read(h["file"]))
                    except (ValueError, KeyError, UnicodeDecodeError) as exc:
                        raise _fail(f"{w}.{key}", "an XGBoost model (UBJSON)", f"unreadable ({exc})") from None
                    check_xgboost_model(doc, w)
                else:
                    if h.get("__loader__") != "JsonNode" or not isinstance(h.get("content"), str):
                        raise _fail(f"{w}.{key}", "the model text", h.get("__loader__"))
                    text = json.loads(h["content"])
                    if not isinstance(text, str):
                        raise _fail(f"{w}.{key}", "the model text", type(text).__name__)
                    check_lightgbm_model(text, w)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as exc:
        raise InputError(path, "a skops model file", f"an unreadable file ({exc})") from exc
