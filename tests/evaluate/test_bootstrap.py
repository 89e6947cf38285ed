"""Bootstrap optimism correction: noise is corrected towards AUC 0.5, a large clean sample has no optimism,
identities, the ML calibration property of logistic regression, whole-group resampling and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from usher2.evaluate.bootstrap import BootstrapValidation, bootstrap_validation
from usher2.io.errors import InputError

ALL = ("auc", "dxy", "brier", "calibration_slope", "calibration_intercept")


def _logistic_data(n, beta, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(beta)))
    y = (rng.uniform(size=n) < expit(X @ np.asarray(beta) - 0.3)).astype(int)
    return X, y


def _unpenalised():
    return LogisticRegression(C=1e10, tol=1e-12, max_iter=10_000)


def test_noise_predictors_corrected_towards_half():
    # 20 pure-noise columns, 100 rows: the fit looks good on its own data, the correction removes most of it
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 20))
    y = np.repeat([0, 1], 50)
    rng.shuffle(y)
    r = bootstrap_validation(LogisticRegression(C=1e4, max_iter=2000), X, y, n_boot=200, seed=0)
    assert r.apparent["auc"] > 0.7
    assert abs(r.corrected["auc"] - 0.5) < 0.1
    assert r.optimism["auc"] > 0.6 * (r.apparent["auc"] - 0.5)
    # heavy overfitting: the corrected calibration slope is far below 1, the Brier score gets worse
    assert r.corrected["calibration_slope"] < 0.5
    assert r.optimism["brier"] < 0


def test_strong_signal_large_n_no_optimism():
    X, y = _logistic_data(5000, [1.0, -0.7], seed=1)
    r = bootstrap_validation(LogisticRegression(), X, y, n_boot=100, seed=0)
    for m in r.metrics:
        assert abs(r.optimism[m]) < 0.01, m
        assert r.corrected[m] == pytest.approx(r.apparent[m], abs=0.01)
    assert r.n_boot == 100 and r.n_skipped == 0


def test_identity_determinism_and_seed():
    X, y = _logistic_data(150, [1.0, 0.5, 0.0], seed=2)
    a = bootstrap_validation(LogisticRegression(), X, y, n_boot=60, seed=5, metrics=ALL)
    b = bootstrap_validation(LogisticRegression(), X, y, n_boot=60, seed=5, metrics=ALL)
    c = bootstrap_validation(LogisticRegression(), X, y, n_boot=60, seed=6, metrics=ALL)
    for m in ALL:
        assert a.corrected[m] == a.apparent[m] - a.optimism[m]
    assert a == b
    assert a.apparent == c.apparent
    assert a.optimism != c.optimism
    assert abs(a.optimism["auc"] - c.optimism["auc"]) < 0.02
    assert a.optimism["dxy"] == pytest.approx(2 * a.optimism["auc"], abs=1e-12)


def test_apparent_matches_full_fit_and_ml_calibration():
    X, y = _logistic_data(300, [1.0, -0.7, 0.4, 0.0, 0.2], seed=3)
    r = bootstrap_validation(_unpenalised(), X, y, n_boot=20, seed=0)
    p = _unpenalised().fit(X, y).predict_proba(X)[:, 1]
    assert r.apparent["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert r.apparent["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-12)
    # the score equations of an ML logistic fit make logit(p) perfectly calibrated on its own rows
    assert r.apparent["calibration_slope"] == pytest.approx(1.0, abs=1e-4)
    assert r.apparent["calibration_intercept"] == pytest.approx(0.0, abs=1e-4)


def test_recalibration_matches_statsmodels():
    import statsmodels.api as sm

    from usher2.evaluate.bootstrap import _recalibrate

    rng = np.random.default_rng(4)
    lp = rng.normal(0, 1.5, 400)
    y = (rng.uniform(size=400) < expit(0.3 + 0.7 * lp)).astype(int)
    f = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit(tol=1e-12)
    a, b = _recalibrate(y, lp)
    assert (a, b) == pytest.approx(tuple(f.params), abs=1e-8)
    # perfect separation: no finite slope
    assert np.isnan(_recalibrate((lp > 0).astype(int), lp)).all()


def test_result_frame_and_dict():
    X, y = _logistic_data(120, [1.0, 0.5], seed=5)
    r = bootstrap_validation(LogisticRegression(), pd.DataFrame(X, columns=["a", "b"]), y, n_boot=10)
    assert isinstance(r, BootstrapValidation)
    f = r.as_frame()
    assert f.columns.tolist() == ["metric", "apparent", "optimism", "corrected"]
    assert f["metric"].tolist() == ["auc", "brier", "calibration_slope", "calibration_intercept"]
    d = r.as_dict()
    assert d["auc_corrected"] == r.corrected["auc"] and d["n_boot"] == 10 and d["seed"] == 0


class _Recorder(ClassifierMixin, BaseEstimator):
    """Column 0 is a row id (recorded at each fit), the rest go to a logistic regression."""

    fitted_rows: list[np.ndarray] = []  # noqa: RUF012 (shared across clones on purpose)

    def fit(self, X, y):
        X = np.asarray(X)
        type(self).fitted_rows.append(X[:, 0].astype(int).copy())
        self.lr_ = LogisticRegression().fit(X[:, 1:], y)
        self.classes_ = self.lr_.classes_
        return self

    def predict_proba(self, X):
        return self.lr_.predict_proba(np.asarray(X)[:, 1:])


def test_groups_resampled_whole():
    rng = np.random.default_rng(6)
    sizes = rng.integers(1, 5, 40)
    groups = np.repeat(np.arange(40), sizes)
    n = groups.size
    X = np.column_stack([np.arange(n), rng.normal(size=n)])
    y = (rng.uniform(size=n) < expit(X[:, 1])).astype(int)
    _Recorder.fitted_rows = []
    r = bootstrap_validation(_Recorder(), X, y, n_boot=15, groups=groups)
    assert r.grouped and r.n_boot == 15
    fits = _Recorder.fitted_rows
    assert len(fits) >= 1 + r.n_boot  # the full fit, then one per resample holding both classes
    np.testing.assert_array_equal(fits[0], np.arange(n))  # the full-data fit
    for rows in fits[1:]:
        counts = np.bincount(rows, minlength=n)
        # every row of a drawn group appears as often as the group was drawn; 40 groups drawn
        per_group = [np.unique(counts[groups == g]) for g in range(40)]
        assert all(len(u) == 1 for u in per_group)
        assert sum(int(u[0]) for u in per_group) == 40
    # without groups, rows are drawn singly: some group gets split
    _Recorder.fitted_rows = []
    bootstrap_validation(_Recorder(), X, y, n_boot=5)
    split = [
        any(len(np.unique(np.bincount(rows, minlength=n)[groups == g])) > 1 for g in range(40))
        for rows in _Recorder.fitted_rows[1:]
    ]
    assert all(split)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"y": np.ones(50, int)}, "y"),
        ({"X": np.zeros((49, 2))}, "X"),
        ({"groups": np.arange(49)}, "groups"),
        ({"n_boot": 0}, "n_boot"),
        ({"n_boot": 2.5}, "n_boot"),
        ({"metrics": ("auc", "r2")}, "metrics"),
    ],
)
def test_bad_input(kwargs, field):
    X, y = _logistic_data(50, [1.0, 0.5], seed=7)
    args = {"X": X, "y": y, **kwargs}
    X_, y_ = args.pop("X"), args.pop("y")
    with pytest.raises(InputError) as e:
        bootstrap_validation(LogisticRegression(), X_, y_, **args)
    assert e.value.where == field
