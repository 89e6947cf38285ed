"""Needed columns: garbage in every other column leaves the model's probabilities unchanged."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from usher2.fusion.cv import fit_final
from usher2.fusion.models import build_model, family_columns
from usher2.fusion.needed import find_needed, needed_columns
from usher2.io.errors import InputError

sys.path.insert(0, str(Path(__file__).parent))
from test_models import _data

GARBAGE = (1e6, -1e6, np.nan)


def _wide(n: int = 160) -> tuple[pd.DataFrame, np.ndarray]:
    """:func:`test_models._data` plus 30 noise columns, clinical ``age`` last."""
    X, y = _data(n)
    rng = np.random.default_rng(1)
    for i in range(30):
        X[f"radiomics_g{i}"] = rng.normal(size=n)
    return X[[c for c in X.columns if c != "age"] + ["age"]], y


def _assert_garbage_ignored(model, X: pd.DataFrame, needed: list[str], garbage=GARBAGE) -> None:
    p = model.predict_proba(X)[:, 1]
    rest = [c for c in X.columns if c not in set(needed)]
    assert rest, "nothing to fill with garbage"
    for g in garbage:
        Z = X.copy()
        Z[rest] = g
        np.testing.assert_allclose(model.predict_proba(Z)[:, 1], p, rtol=0, atol=1e-12, err_msg=f"garbage {g}")


def _fit(X: pd.DataFrame, y: np.ndarray, classifier: str, fusion: str = "early"):
    cols = family_columns(X.columns, "combined", clinical=["age"])
    model, grid = build_model(cols, classifier, fusion=fusion)
    grid = {k: v[:1] for k, v in grid.items()}  # the walk, not the search, is under test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted, _ = fit_final(model, grid, X, y, calibration="sigmoid")
    return fitted


@pytest.mark.parametrize("classifier", ["lr", "rf", "xgboost", "lightgbm", "late"])
def test_garbage_in_unneeded_columns_leaves_fitted_bundles_models_unchanged(classifier):
    X, y = _wide()
    model = _fit(X, y, "lr" if classifier == "late" else classifier, "late" if classifier == "late" else "early")
    found = find_needed(model, list(X.columns))
    assert found.notes == []
    # the planted signals survive selection; most of the 30 noise columns do not
    assert {"radiomics_f0", "deep_bb_0"} <= set(found.columns) and len(found.columns) <= 12
    assert found.columns == [c for c in X.columns if c in set(found.columns)]  # input order
    _assert_garbage_ignored(model, X, found.columns)  # NaN too: every block imputes first


def test_zero_coefficients_and_unsplit_columns_are_not_needed():
    X, y = _wide()
    X = X.drop(columns=["age"])
    l1 = make_pipeline(StandardScaler(), LogisticRegression(l1_ratio=1.0, C=0.05, solver="liblinear")).fit(X, y)
    needed = needed_columns(l1, X.columns)
    coef = l1[-1].coef_[0]
    assert needed == [c for c, w in zip(X.columns, coef, strict=True) if w != 0] and 0 < len(needed) < 10
    _assert_garbage_ignored(l1, X, needed, garbage=(1e6, -1e6))
    for c in needed:  # each one does matter: minimal, not only safe
        Z = X.copy()
        Z[c] = 1e3
        assert not np.allclose(l1.predict_proba(Z)[:, 1], l1.predict_proba(X)[:, 1])
    stump = RandomForestClassifier(n_estimators=3, max_depth=1, random_state=0).fit(X, y)
    needed = needed_columns(stump, X.columns)
    assert 1 <= len(needed) <= 3
    _assert_garbage_ignored(stump, X, needed, garbage=(1e6, -1e6))


def test_boosters_need_only_their_split_columns():
    from lightgbm import LGBMClassifier
    from xgboost import XGBClassifier

    X, y = _wide()
    for clf in (
        XGBClassifier(n_estimators=2, max_depth=1, n_jobs=1, verbosity=0),
        LGBMClassifier(n_estimators=2, num_leaves=2, n_jobs=1, verbose=-1),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(X, y)
            needed = needed_columns(clf, X.columns)
            assert 1 <= len(needed) <= 2
            _assert_garbage_ignored(clf, X, needed, garbage=(1e6, -1e6))


def test_column_transformer_passthrough_imputer_indicator_and_an_unknown_step(caplog):
    X, y = _wide()
    X.loc[X.index[::7], "radiomics_f0"] = np.nan
    imaging = [c for c in X.columns if c.startswith("radiomics_f")]
    ct = ColumnTransformer(
        [
            ("imp", SimpleImputer(add_indicator=True), imaging),
            ("pca", PCA(2), [c for c in X.columns if c.startswith("radiomics_g")]),
        ],
        remainder="passthrough",
    )
    model = Pipeline([("ct", ct), ("lr", LogisticRegression(max_iter=1000))]).fit(X, y)
    with caplog.at_level(logging.INFO, logger="usher2.fusion.needed"):
        found = find_needed(model, list(X.columns))
    # every block feeds the classifier: PCA mixes its block, so all of it stays, and says so
    assert found.columns == list(X.columns)
    assert any("PCA" in n for n in found.notes) and "PCA" in caplog.text
    model.named_steps["lr"].coef_[:, :13] = 0.0  # drop the imputed block and its indicator
    found = find_needed(model, list(X.columns))
    assert not set(imaging) & set(found.columns) and "deep_bb_0" in found.columns
    _assert_garbage_ignored(model, X, found.columns, garbage=(1e6,))


def test_what_cannot_be_walked_keeps_every_column_and_bad_columns_are_named():
    class Opaque:  # a fitted model the walk knows nothing about, with no n_features_in_
        def predict_proba(self, X):
            return np.c_[1 - X.mean(axis=1), X.mean(axis=1)]

    found = find_needed(Opaque(), ["a", "b"])
    assert found.columns == ["a", "b"] and found.notes and "unknown classifier" in found.notes[0]

    class Step:  # a transformer without n_features_in_: its width is unknown
        def transform(self, X):
            return X

    X, y = _wide()
    lr = LogisticRegression().fit(X, y)
    found = find_needed(Pipeline([("s", Step()), ("lr", lr)]), list(X.columns))  # width from the next step
    assert found.columns == list(X.columns) and "Step" in found.notes[0]
    found = find_needed(Pipeline([("s", Step()), ("clf", Opaque())]), list(X.columns))
    assert found.columns == list(X.columns) and "every column is kept" in found.notes[-1]
    with pytest.raises(InputError, match="duplicates"):
        needed_columns(lr, ["a", "a"])
    with pytest.raises(InputError, match="fitted on"):
        needed_columns(lr, list(X.columns)[::-1])


def test_scoring_bundle_garbage_in_unneeded_columns(scoring_bundle):
    from usher2.features.extract import ID_COLUMNS
    from usher2.fusion.bundle import load_bundle

    b = load_bundle(scoring_bundle["bundle"])
    found = find_needed(b.model, b.columns)
    assert found.notes == [] and 0 < len(found.columns) < len(b.columns) / 4
    table = pd.read_parquet(Path(scoring_bundle["bundle"]).parents[1] / "train_features.parquet")
    manifest = pd.read_csv(scoring_bundle["train"] / "manifest.csv")
    X = table.drop(columns=[c for c in ID_COLUMNS if c in table.columns]).assign(
        **{c: manifest.set_index("case_id").loc[table["case_id"], c].to_numpy(float) for c in b.config.clinical}
    )[b.columns]
    p = b.predict_proba(X)
    rest = [c for c in b.columns if c not in set(found.columns)]
    for g in GARBAGE:
        np.testing.assert_allclose(b.predict_proba(X.assign(**dict.fromkeys(rest, g))), p, rtol=0, atol=1e-12)
