"""Fusion selectors: scikit-learn's estimator checks, and each selector's own behaviour."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from usher2.fusion.selection import CorrelationPruner, ICCFilter, LassoSelector, UnivariateFilter


@parametrize_with_checks(
    [UnivariateFilter(), CorrelationPruner(), LassoSelector(cv=3), LassoSelector(cv=3, stability=5), ICCFilter()]
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _signal(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    X = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"f{i}" for i in range(6)], index=[f"c{i}" for i in range(n)])
    X["f0"] += 1.5 * y
    return X, y


def test_univariate_filter_tests_and_fdr():
    X, y = _signal()
    mw = UnivariateFilter(alpha=0.05).fit(X, y)
    tt = UnivariateFilter(test="ttest", alpha=0.05).fit(X, y)
    assert mw.get_support()[0] and tt.get_support()[0]
    fdr = UnivariateFilter(alpha=0.05, fdr=True).fit(X, y)
    assert (fdr.pvalues_ >= mw.pvalues_ - 1e-15).all()  # BH never lowers a p-value
    none = UnivariateFilter(alpha=1e-30, min_features=2).fit(X, y)
    assert none.get_support().sum() == 2 and none.get_support()[0]  # the smallest p are kept
    with pytest.raises(ValueError, match="test must be"):
        UnivariateFilter(test="chi2").fit(X, y)


def test_correlation_pruner_keeps_the_more_separating_of_a_pair():
    X, y = _signal()
    X["copy"] = 0.5 * X["f0"] + 0.001 * np.arange(len(X))  # Spearman r ~ 1 with f0, slightly less separating
    sel = CorrelationPruner(threshold=0.9).set_output(transform="pandas").fit(X, y)
    kept = list(sel.transform(X).columns)
    assert ("f0" in kept) != ("copy" in kept) and len(kept) == 6


def test_lasso_radscore_is_the_linear_predictor():
    X, y = _signal(200)
    sel = LassoSelector(cv=5).fit(X, y)
    assert sel.get_support()[0]
    np.testing.assert_allclose(sel.radscore(X), sel.intercept_ + X.to_numpy() @ sel.coef_)
    assert (sel.coef_[~sel.get_support()] == 0).all()


def test_lasso_stability_selection_counts_half_sample_fits():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 75)
    X = np.c_[rng.normal(size=150) + 1.0 * y, rng.normal(size=150) + 0.5 * y, rng.normal(size=(150, 40))]
    plain = LassoSelector().fit(X, y)
    stable = LassoSelector(stability=50, stability_threshold=0.8).fit(X, y)
    assert stable.C_ == plain.C_  # the penalty is still chosen by CV on all rows
    # frequency_ is the share of L1 fits at C_ on stratified half-samples that keep each feature
    counts = np.zeros(X.shape[1])
    for rows, _ in StratifiedShuffleSplit(50, train_size=0.5, random_state=0).split(X, y):
        l1 = LogisticRegression(C=plain.C_, l1_ratio=1.0, solver="liblinear", max_iter=1000, random_state=0)
        counts += l1.fit(X[rows], y[rows]).coef_[0] != 0
    np.testing.assert_array_equal(stable.frequency_, counts / 50)
    assert stable.frequency_[0] == 1.0 and stable.get_support()[0]
    # the support is the refit on the stable features, so it is a subset of them
    assert not (stable.get_support() & (stable.frequency_ < 0.8)).any()
    assert stable.get_support()[2:].sum() < plain.get_support()[2:].sum()  # fewer noise features than plain LASSO
    assert (stable.coef_[~stable.get_support()] == 0).all()  # the Radscore uses the stable features only
    np.testing.assert_allclose(stable.radscore(X), stable.intercept_ + X @ stable.coef_)


def test_icc_filter_uses_only_the_fitted_cases():
    rng = np.random.default_rng(1)
    cases = [f"c{i}" for i in range(40)]
    truth = rng.normal(size=40)
    rows = []
    for p in ("original", "erode1", "dilate1", "rotate+5"):
        for i, c in enumerate(cases):
            rows.append(
                {"case_id": c, "perturbation": p, "stable": truth[i] + 0.05 * rng.normal(), "noisy": rng.normal()}
            )
    table = pd.DataFrame(rows)
    X = pd.DataFrame({"stable": truth, "noisy": rng.normal(size=40), "age": rng.normal(size=40)}, index=cases)
    sel = ICCFilter(table, threshold=0.9, form="ICC(2,1)").set_output(transform="pandas").fit(X.iloc[:20])
    assert list(sel.transform(X).columns) == ["stable", "age"]  # age is not in the table: kept
    assert sel.icc_["stable"] > 0.99 and sel.icc_["noisy"] < 0.5
    # the ICC of the fitted half equals the ICC computed by hand from those 20 cases alone
    from usher2.evaluate.agreement import icc

    half = table[table["case_id"].isin(cases[:20])].pivot(index="case_id", columns="perturbation", values="stable")
    assert sel.icc_["stable"] == pytest.approx(icc(half.to_numpy(), "ICC(2,1)")["icc"])
    with pytest.raises(ValueError, match="DataFrame indexed by case_id"):
        ICCFilter(table).fit(X.to_numpy())


def test_binary_auc_scorer_equals_scikit_learns_roc_auc_scorer() -> None:
    """The rank form of the AUC against scikit-learn's scorer, ties included (rounded decision
    values), string labels and an unbalanced fold; both are sums of ~100 float64 terms: 1e-12."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import get_scorer

    from usher2.fusion.selection import binary_auc_scorer

    rng = np.random.default_rng(5)
    X = np.round(rng.normal(size=(120, 3)), 1)  # coarse values: tied decision values
    y = np.where(X[:, 0] + rng.normal(size=120) > 0.8, "pos", "neg")
    clf = LogisticRegression().fit(X, y)
    ref = get_scorer("roc_auc")
    for rows in (slice(None), slice(0, 40), np.r_[0:100:3]):
        assert binary_auc_scorer(clf, X[rows], y[rows]) == pytest.approx(ref(clf, X[rows], y[rows]), abs=1e-12)
    with pytest.raises(ValueError, match="Only one class"):
        binary_auc_scorer(clf, X[y == "neg"], y[y == "neg"])
