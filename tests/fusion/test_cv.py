"""Nested CV: no leakage (permuted labels, an instrumented selector), a planted signal found, fixed splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin

from usher2.fusion.cv import fit_final, nested_cv
from usher2.fusion.models import build_model, family_columns
from usher2.io.errors import InputError


def _cohort(n: int = 200, p: int = 300, signal: float = 0.0, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    cols = [f"radiomics_f{i}" for i in range(p)]
    X = pd.DataFrame(rng.normal(size=(n, p)), columns=cols, index=[f"case{i:04d}" for i in range(n)])
    X["radiomics_f0"] += signal * y
    X["radiomics_f1"] += 0.8 * signal * y
    X["age"] = rng.normal(size=n)
    return X, y


class Spy(TransformerMixin, BaseEstimator):
    """Pass-through that records the case ids of every fit (class-level log, shared by clones)."""

    log: list[tuple[int, frozenset[str]]] = []  # noqa: RUF012 - deliberately shared
    fold = -1

    def fit(self, X, y=None):
        Spy.log.append((Spy.fold, frozenset(map(str, X.index))))
        return self

    def transform(self, X):
        return X

    def get_feature_names_out(self, input_features=None):
        return np.asarray(input_features, dtype=object)


@pytest.mark.slow
def test_permuted_labels_give_a_ci_around_chance_while_whole_cohort_selection_leaks():
    """Five label permutations of one noise cohort (fixed seeds): under the null every CI should hold 0.5
    with probability 0.95, so at least 4 of 5 must, and the mean AUC must be within 0.05 of 0.5."""
    X, y0 = _cohort(n=200, p=300, signal=0.0)
    model, grid = build_model(family_columns(X.columns, "radiomics"), "lr")
    runs = []
    for k in range(5):
        y = np.random.default_rng(100 + k).permutation(y0)
        runs.append(nested_cv(model, grid, X, y, seed=k).auc)
    covered = [r["ci_low"] <= 0.5 <= r["ci_high"] for r in runs]
    assert sum(covered) >= 4, runs
    assert abs(np.mean([r["auc"] for r in runs]) - 0.5) < 0.05, runs
    # the same data with the selection done once on the whole cohort (the leak the nested CV avoids)
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    from usher2.evaluate.roc import roc_auc_ci
    from usher2.fusion.selection import UnivariateFilter

    y = np.random.default_rng(100).permutation(y0)
    leaky = UnivariateFilter(alpha=0.01, min_features=5).set_output(transform="pandas").fit_transform(X, y)
    p = cross_val_predict(LogisticRegression(), leaky, y, cv=5, method="predict_proba")[:, 1]
    assert roc_auc_ci(y, p).ci_low > 0.5 and roc_auc_ci(y, p).auc > runs[0]["ci_high"]


def test_planted_signal_is_recovered_and_selected_in_every_fold():
    X, y = _cohort(n=240, p=200, signal=1.2, seed=1)
    model, grid = build_model(family_columns(X.columns, "radiomics"), "lr")
    res = nested_cv(model, grid, X, y, seed=0)
    from usher2.evaluate.roc import roc_auc_ci

    oracle = roc_auc_ci(y, 1.2 * X["radiomics_f0"] + 0.96 * X["radiomics_f1"]).auc  # the true score: 0.852
    assert res.auc["ci_low"] > 0.65 and res.auc["auc"] >= 0.85 * oracle, (res.auc, oracle)
    for fold in res.folds:
        assert {"radiomics_f0", "radiomics_f1"} <= set(fold["selected_features"])
    assert res.oof.index.is_unique and len(res.oof) == len(X) and res.oof["probability"].between(0, 1).all()
    assert set(res.oof["fold"]) == set(range(5))


def test_an_instrumented_selector_never_sees_a_test_fold_row():
    X, y = _cohort(n=160, p=40, signal=1.0, seed=2)
    groups = np.repeat(np.arange(80), 2)  # two frames per patient
    model, grid = build_model(family_columns(X.columns, "combined", clinical=["age"]), "lr")
    model.named_steps["select"].transformers[0][1].steps.insert(0, ("spy", Spy()))
    Spy.log.clear()
    Spy.fold = 0

    def next_fold(done: int, total: int) -> None:
        Spy.fold = done

    res = nested_cv(model, grid, X, y, groups, seed=3, progress=next_fold)
    tests = {k: set(res.oof.index[res.oof["fold"] == k]) for k in range(5)}
    assert Spy.log and {f for f, _ in Spy.log} == set(range(5))
    for fold, seen in Spy.log:
        assert not seen & tests[fold], f"fold {fold}: the selector saw test rows"
    # patients are never split between training and test
    pid = pd.Series(groups, index=X.index)
    for ids in tests.values():
        assert not set(pid[list(ids)]) & set(pid.drop(index=list(ids)))


def test_fixed_split_and_late_fusion_and_final_refit():
    X, y = _cohort(n=200, p=60, signal=1.0, seed=4)
    X["deep_bb_0"] = np.random.default_rng(0).normal(size=len(X)) + 0.8 * y
    cols = family_columns(X.columns, "combined", clinical=["age"])
    test_ids = X.index[-41:]
    late, grid = build_model(cols, fusion="late")
    res = nested_cv(late, grid, X, y, test_ids=test_ids, calibration=None)
    assert len(res.oof) == 41 and set(res.oof.index) == set(test_ids) and res.auc["auc"] > 0.7
    assert res.folds[0]["selected_features"][:2] == ["radiomics_score", "deep_score"]
    fitted, best = fit_final(*build_model(cols, "lr"), X, y, calibration="isotonic")
    assert fitted.predict_proba(X.iloc[:5]).shape == (5, 2) and "classifier__C" in best
    with pytest.raises(InputError, match="patients on both sides"):
        nested_cv(*build_model(cols, "lr"), X, y, np.arange(200) // 2, test_ids=X.index[-41:])


def test_bad_inputs_are_named():
    X, y = _cohort(n=40, p=5)
    with pytest.raises(InputError, match="clinical"):
        family_columns(X.columns, "combined", clinical=["psa"])
    with pytest.raises(InputError, match="deep feature columns"):
        family_columns(X.columns, "deep")
    with pytest.raises(InputError, match="classifier"):
        build_model(family_columns(X.columns, "radiomics"), "knn")
    y_bad = y.astype(float)
    y_bad[0] = np.nan
    with pytest.raises(InputError, match="missing"):
        nested_cv(*build_model(family_columns(X.columns, "radiomics"), "lr"), X, y_bad)


def test_predefined_outer_folds_are_used_and_must_keep_patients_whole():
    X, y = _cohort(n=120, p=20, signal=1.0, seed=6)
    groups = np.repeat(np.arange(60), 2)
    folds = (groups % 4) + 1  # four official folds, by patient
    res = nested_cv(*build_model(family_columns(X.columns, "radiomics"), "lr"), X, y, groups, fold_ids=folds)
    assert len(res.folds) == 4
    for k, fold in enumerate(sorted(set(folds))):
        assert set(res.oof.index[res.oof["fold"] == k]) == set(X.index[folds == fold])
    bad = folds.copy()
    bad[0] = 4 if bad[0] != 4 else 3  # patient 0's two frames now in two folds
    with pytest.raises(InputError, match="keep each patient in one fold"):
        nested_cv(*build_model(family_columns(X.columns, "radiomics"), "lr"), X, y, groups, fold_ids=bad)
