"""A study's own statistics on tables small enough to work out by hand: DeLong matrix, oracle ratio
and verdict, SHAP ranking, survival by score group (R survdiff's values) and ICC per feature source."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from usher2.evaluate.study import (
    delong_matrix,
    final_verdict,
    held_out_auc,
    icc_by_source,
    logrank_by_score_groups,
    oracle_ratio,
    scored_survival,
    shap_ranking,
)
from usher2.io.errors import InputError

Y = [0, 0, 0, 1, 1, 1]
M1 = [0.1, 0.2, 0.6, 0.4, 0.7, 0.9]  # positive > negative in 8 of 9 pairs: AUC 8/9
M2 = [0.3, 0.5, 0.2, 0.4, 0.6, 0.1]  # 5 of 9 pairs: AUC 5/9


def _long(models: dict[str, list[float]], cases: list[str] | None = None) -> pd.DataFrame:
    cases = cases or [f"c{i}" for i in range(len(Y))]
    return pd.concat(
        [pd.DataFrame({"case_id": cases, "model": m, "label": Y, "probability": p}) for m, p in models.items()],
        ignore_index=True,
    )


def _delong_by_hand(y: list[int], a: list[float], b: list[float]) -> float:
    """DeLong's two-sided p from the structural components (DeLong, DeLong & Clarke-Pearson 1988)."""
    y = np.asarray(y)
    comps = []
    for s in (np.asarray(a), np.asarray(b)):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        comps.append((psi.mean(axis=1), psi.mean(axis=0), psi.mean()))
    v10, v01 = np.array([c[0] for c in comps]), np.array([c[1] for c in comps])
    s10, s01 = np.cov(v10), np.cov(v01)
    contrast = np.array([1.0, -1.0])
    var = contrast @ s10 @ contrast / v10.shape[1] + contrast @ s01 @ contrast / v01.shape[1]
    z = (comps[0][2] - comps[1][2]) / math.sqrt(var)
    return float(2 * stats.norm.sf(abs(z)))


def test_delong_matrix_gives_the_aucs_and_pairwise_p_values_by_hand():
    r = delong_matrix(_long({"m1": M1, "m2": M2}))
    assert r.models == ["m1", "m2"]
    assert r.auc == pytest.approx({"m1": 8 / 9, "m2": 5 / 9}, abs=1e-12)
    p = _delong_by_hand(Y, M1, M2)
    assert 0 < p < 1
    assert r.p.loc["m1", "m2"] == pytest.approx(p, abs=1e-10)
    assert r.p.loc["m2", "m1"] == pytest.approx(p, abs=1e-10)
    assert np.isnan(np.diag(r.p.to_numpy())).all()


def test_delong_matrix_compares_each_pair_on_the_cases_both_scored():
    preds = _long({"m1": M1, "m2": M2})
    # m3 scored only the first five cases (perfectly: AUC 1 on them)
    m3 = pd.DataFrame(
        {"case_id": [f"c{i}" for i in range(5)], "model": "m3", "label": Y[:5], "probability": [0, 0, 0, 1, 1]}
    )
    r = delong_matrix(pd.concat([preds, m3], ignore_index=True))
    assert r.models == ["m1", "m2", "m3"] and r.auc["m3"] == 1.0
    assert r.p.loc["m1", "m3"] == pytest.approx(_delong_by_hand(Y[:5], M1[:5], [0, 0, 0, 1, 1]), abs=1e-10)


def test_delong_matrix_names_a_missing_column():
    with pytest.raises(InputError, match="probability"):
        delong_matrix(_long({"m1": M1}).drop(columns="probability"))


def test_oracle_ratio_and_the_target():
    assert oracle_ratio(0.7, 0.8, target=0.95) == {"ratio": pytest.approx(0.875), "meets_target": False}
    assert oracle_ratio(0.78, 0.8, target=0.95) == {"ratio": pytest.approx(0.975), "meets_target": True}
    assert oracle_ratio(0.7, 0.8, target=0.85)["meets_target"] is True
    for unknown in (float("nan"), float("inf")):
        r = oracle_ratio(0.7, unknown, target=0.95)
        assert math.isnan(r["ratio"]) and r["meets_target"] is None


def test_held_out_auc_counts_pairs_and_divides_by_the_oracle():
    r = held_out_auc(np.array(Y), np.array(M1), 0.9, target=0.95)
    assert r["n_test"] == 6 and r["test_auc"] == pytest.approx(8 / 9)
    assert r["test_ci_low"] <= r["test_auc"] <= r["test_ci_high"]
    assert r["ratio"] == pytest.approx((8 / 9) / 0.9) and r["meets_target"] is True  # 0.988
    assert held_out_auc(Y, M2, 0.9, target=0.95)["meets_target"] is False  # 0.617


def test_final_verdict_reads_each_tasks_final_model():
    rows = [
        {"task": "a", "model": "x", "final": False, "cv_auc": 0.9, "test_auc": 0.9, "oracle_auc": 0.95},
        {"task": "a", "model": "y", "final": True, "cv_auc": 0.7, "test_auc": 0.76, "oracle_auc": 0.8}
        | oracle_ratio(0.76, 0.8, target=0.95),
        # nested validation: no held-out AUC, the nested-CV one stands in
        {"task": "b", "model": "z", "final": True, "cv_auc": 0.6, "oracle_auc": 0.8, "ratio": 0.75},
    ]
    v = final_verdict(rows)
    assert list(v) == ["a", "b"]
    assert v["a"] == {
        "final_model": "y",
        "auc": 0.76,
        "oracle_auc": 0.8,
        "ratio": pytest.approx(0.95),
        "meets_target": True,
    }
    assert v["b"] == {"final_model": "z", "auc": 0.6, "oracle_auc": 0.8, "ratio": 0.75, "meets_target": None}


def test_shap_ranking_sorts_by_mean_absolute_value():
    values = np.array([[0.5, -0.1, 0.0], [-0.3, 0.1, 0.2], [0.1, -0.4, -0.2]])  # mean |.|: 0.3, 0.2, 0.1333
    rank = shap_ranking(values, ["a", "b", "c"])
    assert rank["feature"].tolist() == ["a", "b", "c"]
    assert rank["mean_abs_shap"].to_numpy() == pytest.approx([0.3, 0.2, 0.4 / 3])
    assert shap_ranking(-values[:, ::-1], ["c", "b", "a"])["feature"].tolist() == ["a", "b", "c"]
    with pytest.raises(InputError, match="2 features"):
        shap_ranking(values, ["a", "b"])


def test_scored_survival_joins_the_models_scores_to_the_survival_columns():
    preds = pd.DataFrame(
        {"case_id": ["3", "1", "2", "1"], "model": ["m", "m", "m", "other"], "probability": [0.9, 0.2, 0.5, 0.7]}
    )
    man = pd.DataFrame({"case_id": [1, 2, 3], "dfs": [12.0, None, 4.0], "event": [0.0, 1.0, 1.0]})
    s = scored_survival(preds, man, model="m", time="dfs", event="event")
    assert s.to_dict("list") == {"case_id": ["3", "1"], "time": [4.0, 12.0], "event": [1, 0], "score": [0.9, 0.2]}
    assert s["event"].dtype.kind == "i"
    with pytest.raises(InputError, match="missing \\['os_event'\\]"):
        scored_survival(preds, man, model="m", time="dfs", event="os_event")


def test_logrank_by_score_groups_matches_r_survdiff():
    # R: survdiff(Surv(c(10, 20, 30, 10, 20, 50), rep(1, 6)) ~ c(1, 1, 1, 0, 0, 0)): chisq 0.254237, p 0.614107
    t, e = [10, 20, 30, 10, 20, 50], [1] * 6
    table, groups = logrank_by_score_groups(t, e, [0.9, 0.8, 0.7, 0.3, 0.2, 0.1], threshold=0.5)
    assert table["grouping"].tolist() == ["threshold", "tertiles"]
    thr, ter = table.iloc[0], table.iloc[1]
    assert (thr["chi2"], thr["p"]) == pytest.approx((0.254237, 0.614107), abs=1e-6)
    assert thr["groups"] == 2 and thr["df"] == 1
    assert groups["threshold"].tolist() == ["high"] * 3 + ["low"] * 3
    assert groups["tertiles"].tolist() == ["Q3", "Q3", "Q2", "Q2", "Q1", "Q1"]
    assert ter["groups"] == 3 and ter["df"] == 2 and ter["p"] == pytest.approx(stats.chi2.sf(ter["chi2"], 2))
    with pytest.raises(InputError, match="two groups"):
        logrank_by_score_groups(t, e, [0.9, 0.8, 0.7, 0.3, 0.2, 0.1], threshold=0.95)


def test_icc_by_source_summarises_hand_computed_iccs():
    perts = pd.DataFrame(
        {
            "case_id": ["a", "b", "c", "d", "a", "b", "c", "d"],
            "perturbation": ["original"] * 4 + ["shift"] * 3 + ["original"],  # d: no shifted extraction
            "patient_id": ["p"] * 8,  # not a feature
            "t2_x": [1.0, 2.0, 3.0, 9.0, 2.0, 3.0, 4.0, 0.0],  # +1 offset: consistency ICC(3,1) = 1
            "t2_y": [1.0, 2.0, 3.0, 9.0, 3.0, 2.0, 1.0, 0.0],  # reversed: subjects' means equal, ICC = -1
            # MSR = 7 / 2, MSE = 1 / 2: ICC(3,1) = (3.5 - 0.5) / (3.5 + 0.5) = 0.75
            "t1_z": [1.0, 2.0, 3.0, 9.0, 2.0, 2.0, 5.0, 0.0],
            "reader": ["r"] * 8,  # not numeric: not a feature
        }
    )
    s = icc_by_source(perts, threshold=0.9, source_of=lambda c: c.split("_")[0])
    assert s.n_cases == 3 and s.raters == ["original", "shift"]
    assert s.icc == pytest.approx({"t2_x": 1.0, "t2_y": -1.0, "t1_z": 0.75}, abs=1e-12)
    assert s.table["source"].tolist() == ["t1", "t2"]
    assert s.table["features"].tolist() == [1, 2] and s.table["kept"].tolist() == [0, 1]
    assert s.table["median_icc"].to_numpy() == pytest.approx([0.75, 0.0], abs=1e-12)
    # a case with a missing value in any extraction is left out
    perts.loc[perts.index[4], "t1_z"] = np.nan
    assert icc_by_source(perts, threshold=0.9, source_of=lambda c: c[:2]).n_cases == 2
    with pytest.raises(InputError, match="perturbation"):
        icc_by_source(perts.drop(columns="perturbation"), threshold=0.9, source_of=str)
