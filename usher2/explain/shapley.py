"""SHAP values of the fusion models (tree and linear), over the features the classifier sees.

:func:`shap_values` runs the fitted model's selection steps on ``X`` (the early-fusion
ColumnTransformer of :func:`usher2.fusion.models.build_model`, any Pipeline's steps before the
classifier, or :class:`~usher2.fusion.models.LateFusionClassifier`'s Radscore / Deep Score /
clinical design) and explains the final classifier on the columns it actually receives,
against a background sample (``max_background`` rows of ``background``, or of ``X`` when none
is given, drawn with ``seed``):

* ``LogisticRegression`` -> ``shap.LinearExplainer`` with an independent masker. For a linear
  model with independent features the SHAP value has a closed form,
  ``phi_j(x) = b_j (x_j - mean_bg(x_j))``, and the base value is ``b_0 + sum_j b_j mean_bg(x_j)``;
  the output explained is the log-odds (``decision_function``).
* Random forest, extra trees, decision tree, gradient boosting, XGBoost, LightGBM ->
  ``shap.TreeExplainer(model_output="raw", feature_perturbation="interventional")`` with the
  background. "raw" is the model's margin: log-odds for the boosted models (XGBoost
  ``output_margin``, LightGBM ``raw_score``, sklearn GBM ``decision_function``) and the positive
  class's probability for the forests (the mean of the trees' leaf frequencies).

In every case the values are additive: ``base_value + sum_j phi_j(x) = margin(x)`` for each case.
Only the positive class (``classes_[1]``) is explained; binary models only.

``CalibratedClassifierCV(ensemble=False)`` (what :func:`usher2.fusion.cv.fit_final` returns) is
unwrapped: the underlying estimator's margin is explained, not the calibrated probability.
Platt scaling is a monotone map of that margin, so the features' ranking and signs are the
same; isotonic calibration is monotone too but may tie cases. ``ensemble=True`` (one model per
fold) is refused.

SVM and MLP classifiers are refused: the model-agnostic explainers (Kernel/Permutation SHAP)
need thousands of model calls per case and are approximate, which a reproducible report should
not hide behind the same function name.

Example:
    >>> import numpy as np, pandas as pd
    >>> from sklearn.linear_model import LogisticRegression
    >>> rng = np.random.default_rng(0); X = pd.DataFrame(rng.normal(size=(50, 3)), columns=["a", "b", "c"])
    >>> lr = LogisticRegression().fit(X, X["a"] > 0)
    >>> exp = shap_values(lr, X)
    >>> bool(np.allclose(exp.values.sum(1) + exp.base_values, lr.decision_function(X)))
    True
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.fusion.introspect import classifier_input
from usher2.io.errors import InputError

__all__ = ["SHAP_MODELS", "plot_shap_summary", "plot_shap_waterfall", "shap_table", "shap_values"]

_LINEAR = ("LogisticRegression",)
#: Tree models that cast their input to float32 before comparing it with their thresholds.
_FLOAT32_TREES = ("RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier", "XGBClassifier")
_TREES = (
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "DecisionTreeClassifier",
    "GradientBoostingClassifier",
    "XGBClassifier",
    "LGBMClassifier",
)
SHAP_MODELS = (
    *_LINEAR,
    *_TREES,
    "a Pipeline ending in one of these (usher2 early fusion)",
    "usher2 LateFusionClassifier",
    "CalibratedClassifierCV(ensemble=False) around any of these",
)


def _shap() -> Any:
    """``import shap`` without the matplotlib deprecation notices its colour maps raise on import."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        import shap
    return shap


def _refuse(model: Any, why: str = "") -> InputError:
    got = type(model).__name__ + (f" ({why})" if why else "")
    return InputError("model", "a fitted model SHAP explains exactly: " + ", ".join(SHAP_MODELS), got)


def shap_values(
    model: Any,
    X: pd.DataFrame | np.ndarray,
    background: pd.DataFrame | np.ndarray | None = None,
    max_background: int = 100,
    seed: int = 0,
) -> Any:
    """SHAP values of a fitted fusion model for the cases of ``X`` (see the module docstring).

    Args:
        model: A fitted model of :data:`SHAP_MODELS`.
        X: The cases, in the model's input format (the feature table for a fusion model).
        background: Reference cases in the same format; ``X`` when None.
        max_background: At most this many background rows (a seeded sample without replacement).
        seed: Seed of the background sample.

    Returns:
        A ``shap.Explanation`` of shape (cases, features): ``values``, ``base_values`` (one per
        case), ``data`` (the classifier's input), ``feature_names`` (the selected features)
        and ``instance_names`` (``X``'s index, or positions).

    Raises:
        InputError: An unsupported or non-binary model (the message names the supported ones),
            or an empty ``X`` / background.

    Example:
        >>> from sklearn.ensemble import RandomForestClassifier
        >>> rng = np.random.default_rng(0); X = rng.normal(size=(60, 3)); y = X[:, 0] > 0
        >>> rf = RandomForestClassifier(n_estimators=10, max_depth=3, random_state=0).fit(X, y)
        >>> exp = shap_values(rf, X, max_background=20)
        >>> exp.values.shape, bool(np.allclose(exp.values.sum(1) + exp.base_values, rf.predict_proba(X)[:, 1]))
        ((60, 3), True)
    """
    shap = _shap()

    if max_background < 1:
        raise InputError("max_background", "at least 1 row", str(max_background))
    if len(X) == 0:
        raise InputError("X", "at least one case", "none")
    clf, transform = classifier_input(model, _refuse)
    name = type(clf).__name__
    if name not in _LINEAR + _TREES:
        raise _refuse(clf)
    classes = getattr(clf, "classes_", None)
    if classes is None:
        raise _refuse(clf, "not fitted")
    if len(classes) != 2:
        raise _refuse(clf, f"{len(classes)} classes; only binary models are explained")
    bg = X if background is None else background
    if len(bg) == 0:
        raise InputError("background", "at least one case", "none")
    if len(bg) > max_background:
        rows = np.sort(np.random.default_rng(seed).choice(len(bg), size=max_background, replace=False))
        bg = bg.iloc[rows] if isinstance(bg, pd.DataFrame) else np.asarray(bg)[rows]
    Xt, bgt = transform(X), transform(bg)
    if name in _FLOAT32_TREES:  # these split on float32 inputs: explain exactly what they see
        Xt, bgt = (t.astype(np.float32).astype(np.float64) for t in (Xt, bgt))
    if name in _LINEAR:
        explainer = shap.LinearExplainer(clf, shap.maskers.Independent(bgt, max_samples=len(bgt)))
    else:
        explainer = shap.TreeExplainer(clf, data=bgt, model_output="raw", feature_perturbation="interventional")
    raw = explainer(Xt, check_additivity=False) if name in _TREES else explainer(Xt)
    values, base = np.asarray(raw.values, np.float64), np.asarray(raw.base_values, np.float64)
    if values.ndim == 3:  # one output per class (forests): the positive class
        values, base = values[:, :, 1], base[:, 1]
    if name in _TREES:
        _check_tree_additivity(clf, Xt, values, base)
    base = np.broadcast_to(base.reshape(-1) if base.size > 1 else base.reshape(()), (len(Xt),)).copy()
    cases = list(X.index) if isinstance(X, pd.DataFrame) else list(range(len(Xt)))
    return shap.Explanation(
        values=values,
        base_values=base,
        data=Xt.to_numpy(dtype=np.float64),
        feature_names=[str(c) for c in Xt.columns],
        instance_names=cases,
    )


def _check_tree_additivity(clf: Any, Xt: pd.DataFrame, values: np.ndarray, base: np.ndarray) -> None:
    """SHAP values of a tree model must add up to its output. shap compares inputs with float32
    copies of the thresholds while scikit-learn keeps float64 ones, so a case whose feature lies
    within float32 rounding of a threshold (a tied category after imputation and scaling) can take
    the other branch in the trees that split there; the gap is reported, not hidden."""
    if type(clf).__name__ in ("XGBClassifier", "LGBMClassifier"):
        return  # raw margin outputs; shap's own check covers them in the default path
    out = np.asarray(clf.predict_proba(Xt)[:, 1], np.float64)
    gap = np.abs(values.sum(axis=1) + np.broadcast_to(base, out.shape) - out)
    if gap.max() > 1e-6:
        warnings.warn(
            f"SHAP values of {int((gap > 1e-6).sum())} of {len(gap)} case(s) miss the model output by up to "
            f"{gap.max():.3g} (shap compares float32 copies of the tree thresholds)",
            stacklevel=3,
        )


def shap_table(explanation: Any) -> pd.DataFrame:
    """The numbers of an explanation, long format: ``case``, ``feature``, ``value``, ``shap``, ``base``.

    ``value`` is the classifier's input (after selection and scaling), ``base`` the case's base
    value, so ``base + sum(shap)`` over a case's rows is its margin.

    Example:
        >>> import shap
        >>> e = shap.Explanation(np.array([[0.5, -1.0]]), base_values=np.array([0.2]), data=np.array([[1.0, 2.0]]),
        ...                      feature_names=["a", "b"])
        >>> shap_table(e)
           case feature  value  shap  base
        0     0       a    1.0   0.5   0.2
        1     0       b    2.0  -1.0   0.2
    """
    values = np.atleast_2d(np.asarray(explanation.values, np.float64))
    n, p = values.shape
    data = explanation.data
    data = np.full((n, p), np.nan) if data is None else np.atleast_2d(np.asarray(data, np.float64))
    base = np.broadcast_to(np.asarray(explanation.base_values, np.float64).reshape(-1), (n,))
    names = explanation.feature_names if explanation.feature_names is not None else [f"x{j}" for j in range(p)]
    names = [names] if isinstance(names, str) else list(names)
    cases = getattr(explanation, "instance_names", None)
    cases = list(range(n)) if cases is None else list(np.atleast_1d(np.asarray(cases, dtype=object)).tolist())
    return pd.DataFrame(
        {
            "case": pd.Index(cases).repeat(p),
            "feature": np.tile(np.asarray(names, dtype=object), n),
            "value": data.ravel(),
            "shap": values.ravel(),
            "base": np.repeat(base, p),
        }
    )


def _shap_figure(draw: Any, path: str | Path | None) -> Any:
    """Run a shap plotting call (``show=False``) on a new figure in the house style; save it when asked."""
    import matplotlib.pyplot as plt

    from usher2.evaluate.figures import figure_style, save_figure

    with figure_style():
        plt.figure()
        draw()
        fig = plt.gcf()
        if path is not None:
            save_figure(fig, path)
    return fig


def plot_shap_summary(
    explanation: Any, path: str | Path | None = None, max_display: int = 20
) -> tuple[Any, pd.DataFrame]:
    """Beeswarm summary (``shap.plots.beeswarm``) of all cases; saved as PNG + SVG when ``path`` is given.

    Returns:
        The Figure and :func:`shap_table`.

    Example:
        >>> import shap, matplotlib.pyplot as plt
        >>> rng = np.random.default_rng(0)
        >>> e = shap.Explanation(rng.normal(size=(20, 3)), base_values=np.zeros(20), data=rng.normal(size=(20, 3)),
        ...                      feature_names=["a", "b", "c"])
        >>> fig, table = plot_shap_summary(e)
        >>> len(table)
        60
        >>> plt.close(fig)
    """
    shap = _shap()

    if np.ndim(explanation.values) != 2:
        raise InputError("explanation", "SHAP values of shape (cases, features)", str(np.shape(explanation.values)))
    fig = _shap_figure(lambda: shap.plots.beeswarm(explanation, max_display=max_display, show=False), path)
    return fig, shap_table(explanation)


def plot_shap_waterfall(
    explanation: Any, index: int | str, path: str | Path | None = None, max_display: int = 10
) -> tuple[Any, pd.DataFrame]:
    """Waterfall plot (``shap.plots.waterfall``) of one case; saved as PNG + SVG when ``path`` is given.

    Args:
        explanation: An explanation from :func:`shap_values`.
        index: The case: a position (an int is always a position) or a case id of ``instance_names``.
        path: Where to save.
        max_display: Features shown; the rest are summed in one bar.

    Returns:
        The Figure and the case's rows of :func:`shap_table`.

    Example:
        >>> import shap, matplotlib.pyplot as plt
        >>> e = shap.Explanation(np.array([[0.5, -1.0]]), base_values=np.array([0.2]), data=np.array([[1.0, 2.0]]),
        ...                      feature_names=["a", "b"])
        >>> fig, table = plot_shap_waterfall(e, 0)
        >>> round(float(table["base"].iloc[0] + table["shap"].sum()), 6)
        -0.3
        >>> plt.close(fig)
    """
    shap = _shap()

    values = np.asarray(explanation.values)
    if values.ndim != 2:
        raise InputError("explanation", "SHAP values of shape (cases, features)", str(values.shape))
    n = values.shape[0]
    cases = getattr(explanation, "instance_names", None)
    cases = list(range(n)) if cases is None else list(cases)
    if isinstance(index, int | np.integer) and not isinstance(index, bool):
        if not -n <= int(index) < n:
            raise InputError("index", f"a case position in [0, {n})", str(index))
        pos = int(index) % n
    elif index in cases:
        pos = cases.index(index)
    else:
        raise InputError("index", f"a position in [0, {n}) or a case id of the explanation", repr(index))
    one = explanation[pos]
    fig = _shap_figure(lambda: shap.plots.waterfall(one, max_display=max_display, show=False), path)
    p = values.shape[1]
    return fig, shap_table(explanation).iloc[pos * p : (pos + 1) * p].reset_index(drop=True)
