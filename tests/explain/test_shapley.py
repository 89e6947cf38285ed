"""SHAP values of the fusion models: the linear closed form, additivity, plots and refusals."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMClassifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC
from xgboost import XGBClassifier

from usher2.explain.shapley import plot_shap_summary, plot_shap_waterfall, shap_table, shap_values
from usher2.fusion.models import build_model, family_columns
from usher2.io.errors import InputError


def _data(n: int = 200, p: int = 10) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"f{i}" for i in range(p)], index=[f"c{i}" for i in range(n)])
    y = (X["f0"] - 0.8 * X["f1"] + 0.5 * X["f2"] + rng.normal(size=n) > 0).astype(int).to_numpy()
    return X, y


def test_linear_shap_is_coef_times_deviation_from_background_mean():
    X, y = _data()
    lr = LogisticRegression().fit(X, y)
    bg = X.iloc[:80]
    exp = shap_values(lr, X, background=bg)
    expected = lr.coef_[0] * (X.to_numpy() - bg.to_numpy().mean(axis=0))
    np.testing.assert_allclose(exp.values, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(exp.base_values, lr.intercept_[0] + lr.coef_[0] @ bg.to_numpy().mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(exp.values.sum(1) + exp.base_values, lr.decision_function(X), atol=1e-10)
    assert exp.feature_names == list(X.columns) and list(exp.instance_names) == list(X.index)


def test_background_is_a_seeded_sample_of_max_background_rows():
    X, y = _data()
    lr = LogisticRegression().fit(X, y)
    exp = shap_values(lr, X, max_background=30, seed=4)
    rows = np.sort(np.random.default_rng(4).choice(len(X), size=30, replace=False))
    mean = X.to_numpy()[rows].mean(axis=0)
    np.testing.assert_allclose(exp.values, lr.coef_[0] * (X.to_numpy() - mean), atol=1e-12)


@pytest.mark.parametrize("name", ["rf", "xgboost", "lightgbm"])
def test_tree_values_add_up_to_the_raw_margin(name):
    X, y = _data()
    if name == "rf":
        model = RandomForestClassifier(n_estimators=30, max_depth=4, random_state=0).fit(X, y)
        margin = model.predict_proba(X)[:, 1]  # a forest's raw output is the mean leaf frequency
    elif name == "xgboost":
        model = XGBClassifier(n_estimators=30, max_depth=3, n_jobs=1, verbosity=0).fit(X, y)
        margin = model.predict(X, output_margin=True)
    else:
        model = LGBMClassifier(n_estimators=30, num_leaves=7, n_jobs=1, verbose=-1).fit(X, y)
        margin = model.predict(X, raw_score=True)
    exp = shap_values(model, X, max_background=50)
    assert exp.values.shape == (200, 10)
    np.testing.assert_allclose(exp.values.sum(1) + exp.base_values, margin, atol=1e-6)
    # the planted signal in f0 ranks first by mean |SHAP|
    assert int(np.argmax(np.abs(exp.values).mean(0))) == 0


def test_early_fusion_pipeline_explained_on_selected_features_and_calibration_unwrapped():
    X, y = _data(p=6)
    X.columns = [f"radiomics_f{i}" for i in range(5)] + ["age"]
    model, _ = build_model(family_columns(X.columns, "combined", clinical=["age"]), "lr")
    cal = CalibratedClassifierCV(model, method="sigmoid", cv=3, ensemble=False).fit(X, y)
    inner = cal.calibrated_classifiers_[0].estimator
    exp = shap_values(cal, X)
    selected = [str(c) for c in inner.named_steps["select"].get_feature_names_out()]
    assert exp.feature_names == selected and "radiomics_f0" in selected
    np.testing.assert_allclose(exp.values.sum(1) + exp.base_values, inner.decision_function(X), atol=1e-10)


def test_table_and_plots(tmp_path):
    X, y = _data()
    exp = shap_values(LogisticRegression().fit(X, y), X.iloc[:40])
    table = shap_table(exp)
    assert len(table) == 40 * 10 and list(table.columns) == ["case", "feature", "value", "shap", "base"]
    row = table[(table["case"] == "c3") & (table["feature"] == "f2")].iloc[0]
    assert row["shap"] == exp.values[3, 2] and row["value"] == X.iloc[3, 2]
    fig, summary = plot_shap_summary(exp, tmp_path / "summary", max_display=5)
    plt.close(fig)
    assert summary.equals(table)
    fig, one = plot_shap_waterfall(exp, "c3", tmp_path / "case_c3")
    plt.close(fig)
    assert one["case"].eq("c3").all() and one["shap"].sum() + one["base"].iloc[0] == pytest.approx(
        exp.values[3].sum() + exp.base_values[3]
    )
    for name in ("summary", "case_c3"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0 and (tmp_path / f"{name}.svg").exists()


def test_unsupported_models_are_refused():
    X, y = _data(n=60)
    with pytest.raises(InputError, match="XGBClassifier") as err:
        shap_values(SVC().fit(X, y), X)
    assert "SVC" in str(err.value)
    ensemble = CalibratedClassifierCV(LogisticRegression(), cv=3, ensemble=True).fit(X, y)
    with pytest.raises(InputError, match="ensemble=False"):
        shap_values(ensemble, X)
