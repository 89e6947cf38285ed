"""Feature selectors for the fusion core, as scikit-learn estimators that compose in a Pipeline.

Every selector learns only from the rows it is fitted on, so inside a cross-validation fold it
never sees a test row. Each keeps its support as ``support_`` (and ``get_support()``), works on
NumPy arrays and DataFrames (column names are kept with ``set_output(transform="pandas")``) and
passes ``sklearn.utils.estimator_checks``.

* :class:`ICCFilter`: keeps features whose ICC over the perturbation table (``usher2 extract
  --perturb``) is at least ``threshold`` (0.9); ``form`` ICC(2,1) or ICC(3,1). The ICC is
  computed from the perturbation rows of the training cases only: ``X`` is a DataFrame whose
  index holds the ``case_id``. Features the table does not hold (clinical columns) are kept.
* :class:`UnivariateFilter`: Mann-Whitney U or Welch's t-test per feature, optional
  Benjamini-Hochberg FDR; keeps p < ``alpha`` (at least ``min_features``, the smallest p).
* :class:`CorrelationPruner`: drops one of every pair with Spearman |r| > ``threshold`` (0.9),
  keeping the feature that separates the classes better (its |AUC - 0.5|).
* :class:`LassoSelector`: L1-penalised logistic regression with the penalty chosen by k-fold
  CV (10 by default, AUC); keeps the features with a non-zero coefficient. ``radscore(X)`` is
  the linear predictor, the studies' Radscore. Optional stability selection (``stability``
  half-sample refits at the chosen penalty; features kept in at least ``stability_threshold``).

**Augmented rows.** A fit may hold perturbed copies of its cases (:mod:`usher2.fusion.cv`): rows
of a DataFrame that repeat a case's index (``case_id``). Then :class:`UnivariateFilter` tests the
per-case means (each case counts once, not once per copy), and :class:`LassoSelector` draws its
penalty-choosing folds by case (:func:`case_groups`), so a case and its copy never sit on both
sides of a split. A frame with a unique index is unaffected.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, _fit_context
from sklearn.feature_selection import SelectorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = [
    "CorrelationPruner",
    "ICCFilter",
    "LassoSelector",
    "PerturbationTable",
    "UnivariateFilter",
    "binary_auc_scorer",
    "case_groups",
    "class_separation",
]


class PerturbationTable(pd.DataFrame):
    """A perturbation table (a DataFrame) whose ``repr`` is one line.

    The table rides in :class:`ICCFilter`'s parameters, and the selection step's cache
    (``joblib.Memory`` in :mod:`usher2.fusion.cv`) writes the ``repr`` of its arguments, the
    estimators with every parameter (scikit-learn's printer, a DataFrame printed dozens of times
    per call), on every cached call: 0.1 s per DataFrame, three quarters of a 60-case nested CV
    measured. Operations on it give the same class, so a clone keeps the short form.

    Example:
        >>> PerturbationTable(pd.DataFrame({"case_id": ["a"], "perturbation": ["erode1"], "x": [1.0]}))
        <perturbation table: 1 rows, 3 columns>
    """

    @property
    def _constructor(self) -> type[PerturbationTable]:
        return PerturbationTable

    def __repr__(self) -> str:
        return f"<perturbation table: {len(self)} rows, {self.shape[1]} columns>"


def case_groups(X: Any) -> np.ndarray | None:
    """Group labels of the rows of a DataFrame whose index repeats (perturbed copies of a case share
    its ``case_id``); None for anything else, where every row is its own case.

    Example:
        >>> case_groups(pd.DataFrame({"a": [1, 2, 3]}, index=["c1", "c2", "c1"])).tolist()
        [0, 1, 0]
        >>> case_groups(pd.DataFrame({"a": [1, 2]}, index=["c1", "c2"])) is None
        True
    """
    if isinstance(X, pd.DataFrame) and X.index.has_duplicates:
        return pd.factorize(X.index)[0]
    return None


def class_separation(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|AUC - 0.5| of every column against ``y`` (the best one-vs-rest class when there are more than 2)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    classes = np.unique(y)
    if len(classes) < 2:
        return np.zeros(X.shape[1])
    ranks = stats.rankdata(X, axis=0)
    out = np.zeros(X.shape[1])
    for c in classes[1:] if len(classes) == 2 else classes:  # several classes: the best one-vs-rest
        pos = y == c
        n1, n0 = pos.sum(), (~pos).sum()
        auc = (ranks[pos].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)
        out = np.maximum(out, np.abs(auc - 0.5))
    return out


def _group_splits(y: np.ndarray, groups: np.ndarray, cv: int, seed: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds that keep every group on one side, with both classes on both sides of every
    split (fewer folds when the groups of a class are too few for ``cv``; at least 2)."""
    from sklearn.model_selection import StratifiedGroupKFold

    per_class = min(len(np.unique(groups[y == c])) for c in np.unique(y))
    for k in range(int(max(2, min(cv, per_class))), 1, -1):
        splits = list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(y, y, groups))
        if all(len(np.unique(y[tr])) > 1 and len(np.unique(y[te])) > 1 for tr, te in splits):
            return splits
    return splits


def binary_auc_scorer(estimator: Any, X: Any, y: Any) -> float:
    """scikit-learn's ``"roc_auc"`` scorer for a binary classifier with ``decision_function``
    (the positive class ``estimator.classes_[1]``): the Mann-Whitney statistic of the decision
    values, ties counted half, without the scorer's per-call input validation, which was about
    a quarter of the MRI recipes' fits (``LogisticRegressionCV`` scores ~7,000 small folds).
    Equal to ``get_scorer("roc_auc")`` to float rounding (``tests/fusion/test_selection.py``).

    Raises:
        ValueError: ``y`` holds one class only (as scikit-learn's scorer does).
    """
    from scipy.stats import rankdata

    pos = np.asarray(y) == estimator.classes_[1]
    n1 = int(pos.sum())
    n0 = pos.size - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("Only one class present in y_true. ROC AUC score is not defined in that case.")
    ranks = rankdata(np.asarray(estimator.decision_function(X), dtype=np.float64).ravel())
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


class _Selector(SelectorMixin, BaseEstimator):
    """Common input handling: validate (keeping feature names), then ``_support(X, y)``."""

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class UnivariateFilter(_Selector):
    """Keep features whose class difference has p < ``alpha``.

    Args:
        test: ``"mannwhitney"`` (two-sided Mann-Whitney U) or ``"ttest"`` (Welch's t-test).
        alpha: Significance level.
        fdr: Apply Benjamini-Hochberg FDR correction (statsmodels) before comparing with ``alpha``.
        min_features: Keep at least this many (the smallest p) when fewer pass.

    Attributes:
        pvalues_: Per-feature p-values (FDR-adjusted when ``fdr``).
        support_: Boolean mask of the kept features.

    Example:
        >>> rng = np.random.default_rng(0); y = np.repeat([0, 1], 50)
        >>> X = np.c_[rng.normal(size=100) + 2 * y, rng.normal(size=(100, 3))]
        >>> UnivariateFilter(alpha=0.01).fit(X, y).get_support().tolist()
        [True, False, False, False]
    """

    _parameter_constraints: dict = {  # noqa: RUF012 - sklearn's declared parameter checks
        "test": [str],
        "alpha": [float, int],
        "fdr": ["boolean"],
        "min_features": [int],
    }

    def __init__(self, test: str = "mannwhitney", alpha: float = 0.05, fdr: bool = False, min_features: int = 1):
        self.test = test
        self.alpha = alpha
        self.fdr = fdr
        self.min_features = min_features

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> UnivariateFilter:
        if self.test not in ("mannwhitney", "ttest"):
            raise ValueError(f"test must be 'mannwhitney' or 'ttest', got {self.test!r}")
        cases = case_groups(X)
        X, y = validate_data(self, X, y, dtype=np.float64)
        if cases is not None:  # copies of a case: test its mean, once (see the module docstring)
            X = pd.DataFrame(X).groupby(cases, sort=True).mean().to_numpy()
            y = pd.Series(np.asarray(y)).groupby(cases, sort=True).first().to_numpy()
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"UnivariateFilter needs at least 2 classes in y, got {len(classes)} class")
        groups = [X[y == c] for c in classes]
        with np.errstate(all="ignore"):
            if len(classes) > 2:  # Kruskal-Wallis / one-way ANOVA, the multi-class forms of the two tests
                test = stats.kruskal if self.test == "mannwhitney" else stats.f_oneway
                p = test(*groups, axis=0).pvalue
            elif self.test == "mannwhitney":
                p = stats.mannwhitneyu(groups[1], groups[0], axis=0, alternative="two-sided").pvalue
            else:
                p = stats.ttest_ind(groups[1], groups[0], axis=0, equal_var=False).pvalue
        p = np.where(np.isfinite(p), p, 1.0)
        if self.fdr:
            from statsmodels.stats.multitest import multipletests

            p = multipletests(p, method="fdr_bh")[1]
        self.pvalues_ = p
        keep = p < self.alpha
        k = min(max(int(self.min_features), 0), X.shape[1])
        if keep.sum() < k:
            keep[np.argsort(p, kind="stable")[:k]] = True
        self.support_ = keep
        return self


class CorrelationPruner(_Selector):
    """Drop redundant features: of a pair with Spearman |r| > ``threshold``, keep the more separating one.

    Features are visited in order of decreasing class separation (|AUC - 0.5|, column order on
    ties); a feature is kept unless it correlates above the threshold with one already kept.

    Example:
        >>> rng = np.random.default_rng(0); y = np.repeat([0, 1], 50); a = rng.normal(size=100) + y
        >>> X = np.c_[a, a + 0.01 * rng.normal(size=100), rng.normal(size=100)]
        >>> CorrelationPruner().fit(X, y).get_support().sum()
        np.int64(2)
    """

    _parameter_constraints: dict = {"threshold": [float, int]}  # noqa: RUF012

    def __init__(self, threshold: float = 0.9):
        self.threshold = threshold

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> CorrelationPruner:
        X = validate_data(self, X, dtype=np.float64) if y is None else validate_data(self, X, y, dtype=np.float64)[0]
        n_features = X.shape[1]
        order = np.arange(n_features)
        if y is not None:
            order = np.argsort(-class_separation(X, np.asarray(y)), kind="stable")
        ranks = stats.rankdata(X, axis=0)
        with np.errstate(all="ignore"):
            r = np.corrcoef(ranks, rowvar=False) if n_features > 1 else np.ones((1, 1))
        r = np.nan_to_num(np.atleast_2d(r), nan=0.0)
        keep = np.zeros(n_features, bool)
        for j in order:
            kept = np.flatnonzero(keep)
            if not len(kept) or np.abs(r[j, kept]).max() <= self.threshold:
                keep[j] = True
        self.support_ = keep
        return self


class LassoSelector(_Selector):
    """L1 logistic regression, penalty by k-fold CV; keeps the non-zero coefficients; gives the Radscore.

    Args:
        cv: Folds for choosing the penalty (stratified, shuffled with ``random_state``).
        Cs: Number of inverse penalties tried, log-spaced from ``C_min`` to ``C_max``. On z-scored
            features C = 1 is already weak for an L1 model; larger C only slows liblinear down
            (18 s against 0.5 s on 600 simulated cases x 130 radiomics features) without changing
            the choice, which fell near 0.1 there.
        C_min, C_max: The range of C.
        max_iter: Solver iterations.
        random_state: Seed of the CV split (and of the stability resamples).
        stability: Stability selection (Meinshausen and Buehlmann, 2010) with this many resamples;
            0 turns it off. The L1 model at the CV-chosen penalty is refitted on ``stability``
            stratified half-samples of the rows, and only features selected in at least
            ``stability_threshold`` of them are kept; the L1 model is then refitted on those.
        stability_threshold: The selection frequency a feature needs under ``stability``.

    Attributes:
        C_: The chosen inverse penalty.
        frequency_: Selection frequency per feature over the stability resamples (with ``stability``).
        n_iter_: Solver iterations of the longest fit.
        coef_: Coefficients of all features (zeros for the dropped ones), on the input scale.
        intercept_: The intercept.
        support_: The features with a non-zero coefficient (at least the largest one).

    Example:
        >>> rng = np.random.default_rng(0); y = np.repeat([0, 1], 60)
        >>> X = np.c_[rng.normal(size=120) + 1.5 * y, rng.normal(size=(120, 5))]
        >>> sel = LassoSelector(cv=5).fit(X, y)
        >>> bool(sel.get_support()[0]), sel.radscore(X).shape
        (True, (120,))
    """

    _parameter_constraints: dict = {  # noqa: RUF012
        "cv": [int],
        "Cs": [int],
        "C_min": [float],
        "C_max": [float],
        "max_iter": [int],
        "random_state": [int, None],
        "stability": [int],
        "stability_threshold": [float, int],
    }

    def __init__(
        self,
        cv: int = 10,
        Cs: int = 10,
        C_min: float = 1e-3,
        C_max: float = 1.0,
        max_iter: int = 1000,
        random_state: int | None = 0,
        stability: int = 0,
        stability_threshold: float = 0.6,
    ):
        self.cv = cv
        self.Cs = Cs
        self.C_min = C_min
        self.C_max = C_max
        self.max_iter = max_iter
        self.random_state = random_state
        self.stability = stability
        self.stability_threshold = stability_threshold

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> LassoSelector:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold

        cases = case_groups(X)
        X, y = validate_data(self, X, y, dtype=np.float64)
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise ValueError(f"LassoSelector needs at least 2 classes in y, got {len(classes)} class")
        binary = len(classes) == 2
        folds = int(max(2, min(self.cv, counts.min())))
        cv: Any = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
        if cases is not None:  # a case and its perturbed copies stay on one side of every split
            cv = _group_splits(np.asarray(y), cases, int(self.cv), self.random_state)
        model = LogisticRegressionCV(
            Cs=np.logspace(np.log10(self.C_min), np.log10(self.C_max), self.Cs),
            l1_ratios=(1.0,),
            cv=cv,
            solver="liblinear" if binary and X.shape[0] < 5000 else "saga",
            scoring=binary_auc_scorer if binary else "neg_log_loss",
            max_iter=self.max_iter,
            random_state=self.random_state,
            use_legacy_attributes=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y)
        self.classes_ = model.classes_
        coef = np.atleast_2d(model.coef_).astype(np.float64)
        self.C_ = float(np.ravel(model.C_)[0])
        self.n_iter_ = int(np.max(model.n_iter_))
        self.intercept_ = float(np.ravel(model.intercept_)[0]) if binary else np.ravel(model.intercept_)
        if getattr(self, "stability", 0) > 0:  # bundles saved before it existed have none
            coef = self._stable(X, y, model, coef)
        self.coef_ = coef[0] if binary else coef
        weight = np.abs(coef).max(axis=0)
        keep = weight != 0
        if not keep.any():
            keep[int(np.argmax(weight))] = True
        self.support_ = keep
        return self

    def _stable(self, X: np.ndarray, y: np.ndarray, model: Any, coef: np.ndarray) -> np.ndarray:
        """Stability selection at the chosen C; returns the coefficients of the refit on the stable features."""
        import warnings

        from sklearn.base import clone
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedShuffleSplit

        l1 = LogisticRegression(
            C=self.C_, l1_ratio=1.0, solver=model.solver, max_iter=self.max_iter, random_state=self.random_state
        )
        halves = StratifiedShuffleSplit(int(self.stability), train_size=0.5, random_state=self.random_state)
        counts = np.zeros(X.shape[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for rows, _ in halves.split(X, y):
                counts += np.abs(np.atleast_2d(clone(l1).fit(X[rows], y[rows]).coef_)).max(axis=0) != 0
            self.frequency_ = counts / int(self.stability)
            stable = self.frequency_ >= self.stability_threshold
            if not stable.any():
                stable[int(np.argmax(self.frequency_))] = True
            refit = clone(l1).fit(X[:, stable], y)
        out = np.zeros_like(coef)
        out[:, stable] = np.atleast_2d(refit.coef_)
        self.intercept_ = float(np.ravel(refit.intercept_)[0]) if out.shape[0] == 1 else np.ravel(refit.intercept_)
        return out

    def radscore(self, X: Any) -> np.ndarray:
        """The linear predictor ``intercept + X @ coef`` (the Radscore)."""
        check_is_fitted(self, "coef_")
        if np.ndim(self.coef_) != 1:
            raise ValueError("the Radscore is defined for a binary target; this selector was fitted on more classes")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.intercept_ + X @ self.coef_


class ICCFilter(_Selector):
    """Keep features that are reproducible under the perturbations: ICC >= ``threshold``.

    Args:
        perturbations: The long table (``case_id``, ``perturbation``, features) from
            ``usher2 extract --perturb``; None keeps every feature.
        threshold: Minimum ICC.
        form: ``"ICC(2,1)"`` or ``"ICC(3,1)"`` (any of the six Shrout-Fleiss forms works).

    ``X`` must be a DataFrame whose index holds the case ids and whose columns are feature
    names. Only the perturbation rows of the fitted cases are used. Features absent from the
    table are kept; a feature whose ICC is undefined (no variance) is dropped.

    Attributes:
        icc_: ``{feature: ICC}`` of the features the table holds.
        support_: Boolean mask of the kept features.
    """

    _parameter_constraints: dict = {  # noqa: RUF012
        "perturbations": [pd.DataFrame, None],
        "threshold": [float, int],
        "form": [str],
    }

    def __init__(self, perturbations: pd.DataFrame | None = None, threshold: float = 0.9, form: str = "ICC(3,1)"):
        self.perturbations = perturbations
        self.threshold = threshold
        self.form = form

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> ICCFilter:
        from usher2.evaluate.agreement import icc_columns

        index = X.index if isinstance(X, pd.DataFrame) else None
        X = (
            validate_data(self, X, dtype=np.float64, ensure_all_finite=False)
            if y is None
            else (validate_data(self, X, y, dtype=np.float64, ensure_all_finite=False)[0])
        )
        names = list(getattr(self, "feature_names_in_", [f"x{i}" for i in range(X.shape[1])]))
        keep = np.ones(X.shape[1], bool)
        self.icc_ = {}
        if self.perturbations is None:
            self.support_ = keep
            return self
        if index is None:
            raise ValueError("ICCFilter with a perturbation table needs X as a DataFrame indexed by case_id")
        table = self.perturbations
        missing = {"case_id", "perturbation"} - set(table.columns)
        if missing:
            raise ValueError(f"the perturbation table lacks the columns {sorted(missing)}")
        rows = table[table["case_id"].astype(str).isin(set(map(str, index)))]
        held = [c for c in names if c in rows.columns]
        if held:
            perts = sorted(rows["perturbation"].unique())
            n_pert = len(perts)
            wide = rows.pivot_table(index="case_id", columns="perturbation", values=held, aggfunc="first")
            wide = wide.reindex(columns=pd.MultiIndex.from_product([held, perts]))  # feature-major order
            complete = wide.dropna(axis=0, how="any")
            if len(complete) < 2 or n_pert < 2:
                raise ValueError(
                    f"the perturbation table has {len(complete)} complete training cases and {n_pert} "
                    "perturbations; the ICC needs at least 2 of each"
                )
            cube = complete.to_numpy(np.float64).reshape(len(complete), len(held), n_pert).transpose(0, 2, 1)
            values, _ = icc_columns(cube, self.form)
            self.icc_ = dict(zip(held, values.tolist(), strict=True))
            pos = {c: i for i, c in enumerate(names)}
            for c, v in self.icc_.items():
                keep[pos[c]] = bool(np.isfinite(v) and v >= self.threshold)
        self.support_ = keep
        return self

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
