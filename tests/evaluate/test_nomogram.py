"""Nomogram points map back to the model's linear predictor and probability, exactly."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from usher2.evaluate.nomogram import nomogram
from usher2.fusion.models import build_model, family_columns
from usher2.io.errors import InputError


def _plain(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    X = np.c_[rng.normal(50, 10, n), rng.normal(size=n), rng.integers(0, 2, n)]
    y = (0.05 * (X[:, 0] - 50) - X[:, 1] + X[:, 2] + rng.normal(size=n) > 0).astype(int)
    return X, y


def _table(n: int = 120) -> tuple[pd.DataFrame, np.ndarray]:
    """As tests/fusion/test_models.py: planted signal in radiomics_f0, deep_bb_0 and age."""
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], n // 2)
    X = pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"radiomics_f{i}" for i in range(8)])
    X.index = [f"c{i}" for i in range(n)]
    X["radiomics_f0"] += 1.5 * y
    X["radiomics_f1"] = 20 + 5 * X["radiomics_f1"] - 4 * y  # not z-scored, negative effect
    X["deep_bb_0"] = rng.normal(size=n) + y
    X["age"] = 50 + 10 * rng.normal(size=n) + 5 * y
    return X, y


def _random_cases(nomo, n: int = 50, seed: int = 2) -> pd.DataFrame:
    c = nomo.coefficients
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.uniform(c["low"], c["high"], size=(n, len(c))), columns=c["predictor"])


def test_plain_logistic_points_by_hand_and_exact_linear_predictor():
    X, y = _plain()
    lr = LogisticRegression().fit(X, y)
    ranges = {"age": (20, 80), "size": (-3, 3), "her2_low": (0, 1)}
    nomo = nomogram(lr, ["age", "size", "her2_low"], ranges)
    b = lr.coef_[0]
    span = np.abs(b) * np.array([60.0, 6.0, 1.0])
    assert nomo.scale == pytest.approx(span.max(), rel=1e-12)
    np.testing.assert_allclose(nomo.coefficients["max_points"], 100 * span / span.max(), rtol=1e-12)
    np.testing.assert_allclose(nomo.coefficients["coef"], b, rtol=1e-12)
    # size has a negative coefficient: its minimum contribution is at the top of its range
    assert nomo.coefficients.set_index("predictor").at["size", "min_contribution"] == pytest.approx(b[1] * 3)
    rng = np.random.default_rng(3)
    cases = np.c_[rng.uniform(20, 80, 40), rng.uniform(-3, 3, 40), rng.integers(0, 2, 40)]
    total = nomo.total_points(cases)
    np.testing.assert_allclose(nomo.linear_predictor_from_points(total), lr.decision_function(cases), rtol=0, atol=1e-9)
    np.testing.assert_allclose(nomo.probability_from_points(total), lr.predict_proba(cases)[:, 1], rtol=0, atol=1e-12)
    # by hand for one case: 100 (b_j x_j - min_j) / scale
    pts = nomo.points(cases[:1]).iloc[0]
    expected = 100 * (b * cases[0] - np.minimum(b * [20, -3, 0], b * [80, 3, 1])) / span.max()
    np.testing.assert_allclose(pts.to_numpy(), expected, rtol=1e-12)


def test_scaled_pipeline_coefficients_map_back_to_original_units():
    X, y = _plain()
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    nomo = nomogram(pipe, ["age", "size", "her2_low"], X=X)
    scaler, lr = pipe[0], pipe[-1]
    np.testing.assert_allclose(nomo.coefficients["coef"], lr.coef_[0] / scaler.scale_, rtol=1e-12)
    np.testing.assert_allclose(nomo.coefficients["low"], X.min(axis=0))
    cases = _random_cases(nomo).to_numpy()
    np.testing.assert_allclose(
        nomo.linear_predictor_from_points(nomo.total_points(cases)), pipe.decision_function(cases), rtol=0, atol=1e-9
    )
    # a two-valued predictor gets ticks at its two values only
    ticks = nomo.axes[nomo.axes["predictor"] == "her2_low"]["value"].tolist()
    assert ticks == [0.0, 1.0]


def test_without_ranges_a_standardised_predictor_spans_mean_2sd():
    X, y = _plain()
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    c = nomogram(pipe, ["age", "size", "her2_low"]).coefficients
    np.testing.assert_allclose(c["low"], X.mean(0) - 2 * X.std(0), rtol=1e-12)
    np.testing.assert_allclose(c["high"], X.mean(0) + 2 * X.std(0), rtol=1e-12)
    with pytest.raises(InputError, match="ranges"):
        nomogram(LogisticRegression().fit(X, y))


def test_early_fusion_pipeline_total_points_give_decision_function_and_probability():
    X, y = _table()
    X.iloc[3, 0] = np.nan  # scored at the imputed value, as the model does
    model, _ = build_model(family_columns(X.columns, "combined", clinical=["age"]), "lr")
    model.fit(X, y)
    nomo = nomogram(model, X=X)
    assert "radiomics_f0" in nomo.predictors and "age" in nomo.predictors
    total = nomo.total_points(X)
    np.testing.assert_allclose(nomo.linear_predictor_from_points(total), model.decision_function(X), rtol=0, atol=1e-9)
    np.testing.assert_allclose(nomo.probability_from_points(total), model.predict_proba(X)[:, 1], rtol=0, atol=1e-12)
    # random cases over the drawn ranges, passed as a table with the model's columns
    cases = X.sample(30, random_state=0).copy()
    drawn = _random_cases(nomo, n=30)
    cases[drawn.columns] = drawn.to_numpy()
    np.testing.assert_allclose(
        nomo.linear_predictor_from_points(nomo.total_points(cases)), model.decision_function(cases), atol=1e-9
    )
    # the axes table: Points 0..100, Total Points 0..sum of maxima, ticks mapped by the same formula
    axes = nomo.axes
    assert axes[axes["predictor"] == "Points"]["value"].tolist() == list(np.arange(0.0, 101.0, 10.0))
    lp = axes[axes["predictor"] == "Linear Predictor"]
    np.testing.assert_allclose(nomo.linear_predictor_from_points(lp["points"]), lp["value"], atol=1e-12)
    prob = axes[axes["predictor"] == "Probability"]
    np.testing.assert_allclose(nomo.probability_from_points(prob["points"]), prob["value"], atol=1e-12)


def test_late_fusion_predictors_are_scores_and_clinical():
    X, y = _table()
    model, _ = build_model(family_columns(X.columns, "combined", clinical=["age"]), "lr", fusion="late")
    model.fit(X, y)
    nomo = nomogram(model, X=X)
    assert set(nomo.predictors) <= {"radiomics_score", "deep_score", "age"}
    assert "radiomics_score" in nomo.predictors
    np.testing.assert_allclose(
        nomo.linear_predictor_from_points(nomo.total_points(X)), model.decision_function(X), rtol=0, atol=1e-9
    )


def test_platt_calibrated_model_uses_the_sigmoid_map_and_isotonic_is_refused():
    X, y = _plain()
    cal = CalibratedClassifierCV(LogisticRegression(), method="sigmoid", cv=3, ensemble=False).fit(X, y)
    ranges = {"x0": (20, 80), "x1": (-3, 3), "x2": (0, 1)}
    nomo = nomogram(cal, ranges=ranges)
    a, b = cal.calibrated_classifiers_[0].calibrators[0].a_, cal.calibrated_classifiers_[0].calibrators[0].b_
    total = nomo.total_points(X)
    lp = cal.calibrated_classifiers_[0].estimator.decision_function(X)
    np.testing.assert_allclose(nomo.linear_predictor_from_points(total), lp, atol=1e-9)
    np.testing.assert_allclose(nomo.probability_from_points(total), expit(-(a * lp + b)), atol=1e-12)
    np.testing.assert_allclose(nomo.probability_from_points(total), cal.predict_proba(X)[:, 1], atol=1e-12)
    iso = CalibratedClassifierCV(LogisticRegression(), method="isotonic", cv=3, ensemble=False).fit(X, y)
    with pytest.raises(InputError, match="sigmoid"):
        nomogram(iso, ranges=ranges)


def test_random_forest_is_refused_naming_the_supported_models():
    X, y = _plain()
    rf = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    with pytest.raises(InputError, match="LogisticRegression") as err:
        nomogram(rf, ranges={"x0": (0, 1)})
    assert "LateFusionClassifier" in str(err.value) and "RandomForestClassifier" in str(err.value)
    pipe = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5, random_state=0)).fit(X, y)
    with pytest.raises(InputError, match="its classifier is RandomForestClassifier"):
        nomogram(pipe)


def test_plot_saved_as_png_and_svg(tmp_path):
    X, y = _plain()
    nomo = nomogram(LogisticRegression().fit(X, y), ["age", "size", "her2_low"], X=X)
    fig = nomo.plot(tmp_path / "nomogram.png", title="HER2 nomogram")
    plt.close(fig)
    assert (tmp_path / "nomogram.png").stat().st_size > 0
    assert "Total Points" in (tmp_path / "nomogram.svg").read_text()


def test_combined_imaging_axis_is_exact_and_draws_one_axis():
    # Radscore + clinical, as Huang's nomogram: the imaging features' summed log-odds on one axis
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=["radiomics_a", "radiomics_b", "deep_c", "age"])
    y = (X.sum(axis=1) + rng.normal(size=300) > 0).astype(int)
    X.iloc[5, 0] = np.nan  # a missing feature is scored at the model's fill value
    model = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()).fit(X, y)
    nomo = nomogram(model, X=X, combine={"Imaging score": ["radiomics_a", "radiomics_b", "deep_c"]})
    assert nomo.predictors == ["Imaging score", "age"]
    assert set(nomo.axes["predictor"]) >= {"Imaging score", "age", "Points", "Total Points"}
    lp = nomo.linear_predictor_from_points(nomo.total_points(X))
    # float64 sums in another order than sklearn's: equal to ~1e-12 relative
    np.testing.assert_allclose(lp, model.decision_function(X), rtol=1e-9, atol=1e-9)
    with pytest.raises(InputError, match="unknown"):
        nomogram(model, X=X, combine={"Radscore": ["radiomics_z"]})
