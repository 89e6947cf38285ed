"""Compiled fusion models: the model's own probabilities, from only the columns it uses.

Every registered classifier in early fusion, bare (``calibration=None``) and wrapped as
:func:`usher2.fusion.cv.fit_final` wraps it for a bundle (``CalibratedClassifierCV``, sigmoid; isotonic
for the float32 booster and the decision-function models), and late fusion with each calibration.
Late fusion has no classifier choice (its final model is always a logistic regression; see
``test_late_fusion_ignores_the_classifier``), so it is fitted once per calibration, not once per
classifier.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from usher2.fusion.compiled import compile_model
from usher2.fusion.cv import fit_final
from usher2.fusion.models import CLASSIFIERS, build_model, family_columns
from usher2.fusion.needed import find_needed
from usher2.io.errors import InputError

# The compiled form repeats the model's float64 operations in the same order; only the order of a few
# sums may differ (BLAS blocking of a matrix product, the RBF kernel's squared distance), which moves a
# probability by a few units in the last place (~1e-16), far inside this bound.
TOL = 1e-12

CASES = [
    *[(c, "early", "sigmoid") for c in CLASSIFIERS],
    *[(c, "early", None) for c in CLASSIFIERS if c != "svm"],  # SVC alone has no predict_proba
    *[(c, "early", "isotonic") for c in ("xgboost", "lightgbm", "svm")],
    *[("lr", "late", cal) for cal in (None, "sigmoid", "isotonic")],
]
# small but real: the registry's models with fewer trees / iterations, 3 LASSO folds
_FAST = {"rf": {"n_estimators": 25}, "xgboost": {"n_estimators": 25}, "lightgbm": {"n_estimators": 25}}
_FAST["mlp"] = {"max_iter": 300}


def _table(n: int = 120) -> tuple[pd.DataFrame, np.ndarray]:
    """Seeded radiomics, deep and clinical columns with planted signals; a few NaN cells."""
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], n // 2)
    X = pd.DataFrame(rng.normal(size=(n, 12)), columns=[f"radiomics_f{i}" for i in range(12)])
    X.index = [f"c{i}" for i in range(n)]
    X["radiomics_f0"] += 1.5 * y
    X["radiomics_f1"] += 0.8 * y
    deep = pd.DataFrame(rng.normal(size=(n, 22)), columns=[f"deep_bb_{i}" for i in range(22)], index=X.index)
    deep["deep_bb_0"] += y
    deep["deep_bb_1"] += 0.7 * y
    X = X.join(deep)
    X["age"] = rng.normal(size=n) + 0.5 * y
    X["grade"] = rng.normal(size=n) + 0.5 * y
    X.loc[X.index[::9], "radiomics_f0"] = np.nan  # the imputers learn a median with NaN around
    X.loc[X.index[::11], "age"] = np.nan
    return X, y


@pytest.fixture(scope="module")
def table() -> tuple[pd.DataFrame, np.ndarray]:
    return _table()


@pytest.fixture(scope="module")
def fitted(table):
    """``fitted(classifier, fusion, calibration)``: the fitted model, each fitted once for the module."""
    X, y = table
    cols = family_columns(X.columns, "combined", clinical=["age", "grade"])
    cache: dict[tuple[Any, ...], Any] = {}

    def fit(classifier: str, fusion: str, calibration: str | None) -> Any:
        key = (classifier, fusion, calibration)
        if key not in cache:
            model, grid = build_model(cols, classifier, fusion=fusion, selector_params={"lasso_cv": 3})
            grid = {k: v[:1] for k, v in grid.items()}  # the compiled form, not the search, is under test
            if fusion == "early":
                grid.update({f"classifier__{k}": [v] for k, v in _FAST.get(classifier, {}).items()})
            else:
                model.set_params(cv=3)  # folds of the out-of-fold source scores
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence and feature-name chatter of tiny fits
                if calibration is None:
                    cache[key] = model.set_params(**{k: v[0] for k, v in grid.items()}).fit(X, y)
                else:  # the wrapper a bundle holds: usher2 fit's own final refit
                    cache[key], _ = fit_final(model, grid, X, y, calibration=calibration)
        return cache[key]

    return fit


def _nan_rows(X: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Rows with NaN in one used column each, and one row with NaN in every used column."""
    rows = X.iloc[: len(columns) + 1].copy()
    for i, c in enumerate(columns):
        rows.iloc[i, rows.columns.get_loc(c)] = np.nan
    rows.loc[rows.index[-1], columns] = np.nan
    return rows


@pytest.mark.parametrize(("classifier", "fusion", "calibration"), CASES)
def test_compiled_equals_the_models_probabilities(fitted, table, classifier, fusion, calibration):
    X, _ = table
    model = fitted(classifier, fusion, calibration)
    assert isinstance(model, CalibratedClassifierCV) == (calibration is not None)
    fast = compile_model(model, X.columns)
    assert fast.compiled and fast.reason == ""
    assert fast.columns == find_needed(model, list(X.columns)).columns
    assert 0 < len(fast.columns) < fast.n_inputs == X.shape[1]  # reads fewer columns than the model takes
    expected = model.predict_proba(X)[:, 1]
    np.testing.assert_allclose(fast.predict_proba(X), expected, rtol=0, atol=TOL)
    np.testing.assert_allclose(fast.predict_proba(X[fast.columns].to_numpy()), expected, rtol=0, atol=TOL)
    for i in (0, 1, 9):  # batch 1, as a scorer calls it (row 9 has a NaN radiomics_f0)
        np.testing.assert_allclose(fast.predict_proba(X.iloc[[i]]), expected[[i]], rtol=0, atol=TOL)
    assert np.ptp(expected) > 0.1  # a model that says something, so agreement means something


@pytest.mark.parametrize(("classifier", "fusion", "calibration"), CASES)
def test_nan_in_a_used_column_is_imputed_as_the_model_does(fitted, table, classifier, fusion, calibration):
    X, _ = table
    model = fitted(classifier, fusion, calibration)
    fast = compile_model(model, X.columns)
    rows = _nan_rows(X, fast.columns)
    got = fast.predict_proba(rows)
    np.testing.assert_allclose(got, model.predict_proba(rows)[:, 1], rtol=0, atol=TOL)
    assert np.isfinite(got).all()


def test_unused_columns_are_never_read(fitted, table):
    X, _ = table
    model = fitted("lr", "early", "sigmoid")
    fast = compile_model(model, X.columns)
    rest = [c for c in X.columns if c not in fast.columns]
    garbage = X.assign(**dict.fromkeys(rest, "not a number"))  # would break any read of them
    np.testing.assert_allclose(fast.predict_proba(garbage), model.predict_proba(X)[:, 1], rtol=0, atol=TOL)


def test_nullable_pandas_columns_are_read_as_the_model_reads_them(fitted, table):
    X, _ = table
    model = fitted("lr", "early", None)
    fast = compile_model(model, X.columns)
    used = fast.columns[-1]
    Z = X.assign(**{used: X[used].astype("Float64")})
    Z.loc[Z.index[:3], used] = pd.NA  # scikit-learn reads pd.NA as NaN, and imputes it
    np.testing.assert_allclose(fast.predict_proba(Z), model.predict_proba(Z)[:, 1], rtol=0, atol=TOL)


def test_late_fusion_ignores_the_classifier(table):
    X, _ = table
    cols = family_columns(X.columns, "combined", clinical=["age", "grade"])
    late = {c: build_model(cols, c, fusion="late")[0].get_params() for c in CLASSIFIERS}
    assert all(params == late["lr"] for params in late.values())


def test_a_skops_round_trip_compiles_to_the_same_numbers(fitted, table):
    import skops.io as sio

    X, _ = table
    for key in (("xgboost", "early", "sigmoid"), ("lr", "late", "isotonic"), ("rf", "early", "sigmoid")):
        data = sio.dumps(fitted(*key))
        loaded = sio.loads(data, trusted=sio.get_untrusted_types(data=data))  # what load_bundle gives
        fast = compile_model(loaded, X.columns)
        assert fast.compiled, key
        np.testing.assert_allclose(fast.predict_proba(X), fitted(*key).predict_proba(X)[:, 1], rtol=0, atol=TOL)


def test_an_ensemble_of_calibrated_classifiers_is_averaged_as_sklearn_does(table):
    X, y = table
    cols = [c for c in X.columns if c != "age"]
    pipe = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(C=0.1))
    model = CalibratedClassifierCV(pipe, method="isotonic", cv=3, ensemble=True).fit(X[cols], y)
    fast = compile_model(model, cols)
    assert fast.compiled and len(model.calibrated_classifiers_) == 3
    np.testing.assert_allclose(fast.predict_proba(X[cols]), model.predict_proba(X[cols])[:, 1], rtol=0, atol=TOL)


def test_a_search_and_a_frozen_estimator_compile_to_their_fitted_model(table):
    from sklearn.frozen import FrozenEstimator
    from sklearn.model_selection import GridSearchCV

    X, y = table
    pipe = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression())
    search = GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]}, cv=2).fit(X, y)
    for model in (search, FrozenEstimator(search.best_estimator_)):
        fast = compile_model(model, X.columns)
        assert fast.compiled, type(model).__name__
        np.testing.assert_allclose(fast.predict_proba(X), model.predict_proba(X)[:, 1], rtol=0, atol=TOL)


def test_a_bare_forest_sends_nan_where_sklearn_does(table):
    X, y = table  # no imputer: the trees' own missing-value branches decide
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    fast = compile_model(forest, X.columns)
    assert fast.compiled
    rows = pd.concat([X, _nan_rows(X, fast.columns)])
    np.testing.assert_allclose(fast.predict_proba(rows), forest.predict_proba(rows)[:, 1], rtol=0, atol=TOL)


def test_what_cannot_be_compiled_falls_back_to_the_model_and_says_so(table):
    X, y = table
    X = X.fillna(0.0)
    radiomics = [c for c in X.columns if c.startswith("radiomics_")]
    deep = [c for c in X.columns if c.startswith("deep_")][:6]
    ct = ColumnTransformer([("r", StandardScaler(), radiomics), ("d", PCA(2), deep)], remainder="drop")
    model = Pipeline([("ct", ct), ("lr", LogisticRegression())]).set_output(transform="pandas").fit(X, y)
    with pytest.warns(UserWarning, match="PCA"):
        fast = compile_model(model, X.columns)
    assert not fast.compiled and "PCA" in fast.reason
    assert fast.columns == radiomics + deep  # still only what it uses: the dropped columns are filled with 0
    np.testing.assert_allclose(fast.predict_proba(X), model.predict_proba(X)[:, 1], rtol=0, atol=TOL)
    nb = GaussianNB().fit(X, y)
    with pytest.warns(UserWarning, match="GaussianNB"):
        fast = compile_model(nb, X.columns)
    assert not fast.compiled
    np.testing.assert_allclose(fast.predict_proba(X), nb.predict_proba(X)[:, 1], rtol=0, atol=TOL)


def test_bad_input_is_refused_with_the_column_named(fitted, table):
    X, y = table
    fast = compile_model(fitted("lr", "early", None), X.columns)
    used = fast.columns[0]
    with pytest.raises(InputError, match=f"infinite values in \\['{used}'\\]"):
        fast.predict_proba(X.assign(**{used: np.inf}))
    with pytest.raises(InputError, match=f"1 missing \\['{used}'\\]"):
        fast.predict_proba(X.drop(columns=[used]))
    with pytest.raises(InputError, match="reshape"):
        fast.predict_proba(np.zeros(len(fast.columns)))
    with pytest.raises(InputError, match=f"shape \\(1, {len(fast.columns) + 1}\\)"):
        fast.predict_proba(np.zeros((1, len(fast.columns) + 1)))
    with pytest.raises(InputError, match="numeric values"):
        fast.predict_proba(X.assign(**{used: "high"}))
    # no imputer before the classifier: scikit-learn refuses NaN, and so does the compiled form
    complete = X.dropna()
    bare = LogisticRegression().fit(complete, y[X.index.isin(complete.index)])
    with pytest.raises(ValueError, match="NaN"):
        bare.predict_proba(X)
    with pytest.raises(InputError, match="no NaN where LogisticRegression reads it"):
        compile_model(bare, X.columns).predict_proba(X)
    with pytest.raises(InputError, match="predict_proba"):  # an SVC pipeline left uncalibrated
        compile_model(fitted("svm", "early", "sigmoid").calibrated_classifiers_[0].estimator, X.columns)
