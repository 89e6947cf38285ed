"""The label model and its oracle AUCs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from usher2.simulate import LabelModel, SimulationConfig, oracle_auc, oracle_aucs, oracle_scores, simulate_labels
from usher2.simulate.labels import linear_predictor


@pytest.fixture(scope="module")
def big() -> object:
    return simulate_labels(300_000, seed=11)


def test_default_coefficients_hit_target_aucs_and_prevalence(big) -> None:
    aucs = oracle_aucs(big)
    assert 0.65 <= aucs["clinical"] <= 0.72
    assert 0.80 <= aucs["image"] <= 0.85
    assert 0.88 <= aucs["all"] <= 0.93
    assert 0.25 <= big["label"].mean() <= 0.35


def test_all_equals_auc_of_true_prob() -> None:
    df = simulate_labels(3000, seed=2)
    assert oracle_aucs(df)["all"] == roc_auc_score(df["label"], df["true_prob"])


def test_true_prob_is_the_logistic_model() -> None:
    df = simulate_labels(500, seed=3)
    np.testing.assert_allclose(df["true_prob"], 1 / (1 + np.exp(-linear_predictor(df))), rtol=1e-12)
    assert (df["trait_size_mm"] == df["tumour_size_mm"]).all()


@pytest.mark.parametrize(("var", "sign"), [("er", -1), ("trait_calcifications", 1), ("age", -1)])
def test_single_variable_oracle_is_monotone_in_that_variable(var: str, sign: int) -> None:
    df = simulate_labels(20000, seed=4)
    assert oracle_auc(df, var) == pytest.approx(roc_auc_score(df["label"], sign * df[var]), abs=1e-12)


def test_subset_ordering_and_marginal_calibration(big) -> None:
    df = big.iloc[:50000]
    aucs = oracle_aucs(df)
    assert 0.5 < aucs["clinical"] <= aucs["all"]
    assert aucs["image"] <= aucs["all"]
    # E[true_prob | x_S] averages back to the mean true_prob (law of total expectation).
    for subset in ("clinical", "image", ["er", "pr"]):
        assert oracle_scores(df, subset).mean() == pytest.approx(df["true_prob"].mean(), abs=0.005)


def test_size_alias_is_the_same_variable() -> None:
    df = simulate_labels(2000, seed=5)
    np.testing.assert_array_equal(oracle_scores(df, ["trait_size_mm"]), oracle_scores(df, ["tumour_size_mm"]))


def test_prefix_stable_and_seeded() -> None:
    a = simulate_labels(5000, seed=7)
    b = simulate_labels(9000, seed=7)
    c = simulate_labels(5000, seed=8)
    assert a.equals(b.iloc[:5000])
    assert not a.equals(c)


def test_config_carries_the_model() -> None:
    model = LabelModel(beta_er=0.0)
    df = simulate_labels(4000, seed=1, model=model)
    assert oracle_aucs(df, SimulationConfig(label_model=model))["all"] == oracle_aucs(df, model)["all"]


def test_errors_say_what_arrived() -> None:
    with pytest.raises(ValueError, match="finite number, got nan"):
        LabelModel(beta_age=float("nan"))
    with pytest.raises(KeyError, match="unknown subset 'imaging'"):
        oracle_auc(simulate_labels(100, 0), "imaging")
    with pytest.raises(ValueError, match="positive integer, got 0"):
        simulate_labels(0, 0)
