"""A study's evaluation directory and its report sections: the files each writes and the numbers in
them, on tables small enough to check by hand."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from usher2.evaluate.roc import delong_test
from usher2.evaluate.summary import EvaluationSummary, predictions_table
from usher2.fusion.models import LateFusionClassifier
from usher2.io.errors import InputError
from usher2.report.study import (
    bootstrap_section,
    delong_section,
    icc_section,
    shap_section,
    study_sections,
    survival_section,
    write_study_evaluation,
)


def _manifest(ids: list[str], labels: list[float | None], patients: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"case_id": ids, "patient_id": patients, "label": labels})


def test_write_study_evaluation_writes_the_directory_the_cohort_report_reads(tmp_path: Path) -> None:
    train = _manifest(["a", "b", "c"], [1, 0, None], ["p1", "p1", "p2"])
    test = _manifest(["d", "e"], [0, 1], ["p3", "p4"])
    feats = pd.DataFrame({"case_id": ["a", "b", "c", "d", "e"], "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    preds = [
        predictions_table("m1", "train_oof", ["a", "b"], ["p1", "p1"], [1, 0], [0.8, 0.3]),
        predictions_table("m1", "test", ["d", "e"], ["p3", "p4"], [0, 1], [0.4, 0.6]),
    ]
    write_study_evaluation(
        tmp_path,
        predictions=preds,
        thresholds={"m1": 0.5},
        bundles={"m1": "bundles/m1"},
        cohorts={"train": train, "test": test},
        label="label",
        evaluated=test,
        features=feats,
        title="Study [main]",
        primary_model="m1",
        oracle_auc={"m1": 0.9, "m2": float("nan")},
        methods={"data": "phantoms"},
    )
    assert len(pd.read_csv(tmp_path / "predictions.csv")) == 4
    assert json.loads((tmp_path / "thresholds.json").read_text()) == {"m1": 0.5}
    assert pd.read_csv(tmp_path / "manifest.csv")["case_id"].tolist() == ["d", "e"]
    assert pd.read_parquet(tmp_path / "features.parquet")["x"].tolist() == [4.0, 5.0]  # the evaluated cases only
    s = EvaluationSummary.read(tmp_path)
    assert s.title == "Study [main]" and s.primary_model == "m1" and s.bundles == {"m1": "bundles/m1"}
    assert s.cohort["train"].to_dict() == {"n": 3, "patients": 2, "positives": 1, "unlabelled": 1}
    assert s.cohort["test"].to_dict() == {"n": 2, "patients": 2, "positives": 1, "unlabelled": 0}
    assert s.oracle_auc == {"m1": 0.9}  # an unknown oracle is left out
    assert s.methods == {"data": "phantoms"}


def test_study_sections_show_a_failing_analysis_and_keep_the_rest() -> None:
    said: list[str] = []

    def bad() -> str:
        raise InputError("manifest", "a dfs_time column", "none")

    out = study_sections([("A", lambda: "<p>a</p>"), ("B", bad), ("C", lambda: "<p>c</p>")], log=said.append)
    assert [h for h, _ in out] == ["A", "B", "C"]
    assert out[0][1] == "<p>a</p>" and out[2][1] == "<p>c</p>"
    assert out[1][1] == '<p class="fail">InputError: manifest: expected a dfs_time column, got none</p>'
    assert said == ["B failed: InputError: manifest: expected a dfs_time column, got none"]


def test_delong_section_saves_the_formatted_matrix(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    scores = {"good": y + rng.normal(0, 0.3, 100), "fair": y + rng.normal(0, 1.5, 100), "coin": rng.normal(size=100)}
    preds = pd.concat(
        [predictions_table(m, "test", [f"c{i}" for i in range(100)], range(100), y, p) for m, p in scores.items()]
    )
    html = delong_section(tmp_path, preds)
    m = pd.read_csv(tmp_path / "report_tables" / "delong_matrix.csv", dtype=str).set_index("model")
    assert m.index.tolist() == ["good", "fair", "coin"] and m.columns.tolist() == ["AUC", "good", "fair", "coin"]
    assert m.loc["good", "AUC"] == f"{roc_auc_score(y, scores['good']):.3f}"
    assert (np.diag(m[["good", "fair", "coin"]].to_numpy()) == "—").all()
    assert m.loc["good", "coin"] == "<0.001"
    p = delong_test(y, scores["fair"], scores["coin"]).p
    assert p >= 0.001 and m.loc["fair", "coin"] == m.loc["coin", "fair"] == f"{p:.3g}"
    assert "DeLong p-values" in html and "<th>coin</th>" in html


def test_shap_section_ranks_a_linear_models_features_by_the_closed_form(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(40, 3)) * [1.0, 3.0, 0.2], columns=["a", "b", "c"])
    y = (X["a"] + 0.3 * X["b"] + rng.normal(0, 0.5, 40) > 0).astype(int)
    lr = LogisticRegression().fit(X, y)
    html = shap_section(tmp_path, SimpleNamespace(model=lr, columns=["a", "b", "c"]), X, model="lr")
    rank = pd.read_csv(tmp_path / "report_tables" / "shap_ranking.csv")
    # phi_j(x) = b_j (x_j - mean(x_j)) over the 40 cases (the background is X itself)
    expected = np.abs(lr.coef_[0]) * (X - X.mean()).abs().mean().to_numpy()
    order = np.argsort(-expected)
    assert rank["feature"].tolist() == [["a", "b", "c"][i] for i in order]
    assert rank["mean_abs_shap"].to_numpy() == pytest.approx(expected[order], rel=1e-6)
    assert "Mean |SHAP| of lr over 40 test cases" in html


def test_survival_section_writes_the_logrank_table_and_two_curves(tmp_path: Path) -> None:
    ids = [f"c{i}" for i in range(6)]
    preds = pd.DataFrame({"case_id": ids, "model": "m", "probability": [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]})
    man = pd.DataFrame({"case_id": ids, "dfs_time": [10, 20, 30, 10, 20, 50], "dfs_event": [1] * 6})
    (tmp_path / "thresholds.json").write_text(json.dumps({"m": 0.5}))
    html = survival_section(tmp_path, preds, man, model="m", time="dfs_time", event="dfs_event")
    lr = pd.read_csv(tmp_path / "report_tables" / "logrank.csv")
    assert lr["grouping"].tolist() == ["threshold", "tertiles"] and lr["groups"].tolist() == [2, 3]
    # R survdiff on these times with groups (high, high, high, low, low, low): chisq 0.254237, p 0.614107
    assert (lr.loc[0, "chi2"], lr.loc[0, "p"]) == pytest.approx((0.254237, 0.614107), abs=1e-6)
    assert "on 6 cases: at its training threshold 0.500" in html and "<td>0.25</td>" in html
    assert html.count("<figure") == 2
    with pytest.raises(InputError, match="dfs_event"):
        survival_section(tmp_path, preds, man.drop(columns="dfs_event"), model="m", time="dfs_time", event="dfs_event")


def test_bootstrap_section_validates_the_late_fusion_models_final_regression(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    X = pd.DataFrame(rng.normal(size=(80, 4)), columns=["r1", "r2", "r3", "age"])
    y = (X["r1"] + X["age"] + rng.normal(0, 1.0, 80) > 0).astype(int).to_numpy()
    model = LateFusionClassifier(sources={"radiomics": ["r1", "r2", "r3"]}, clinical=["age"], cv=3).fit(X, y)
    html = bootstrap_section(tmp_path, SimpleNamespace(model=model), X, y, model="nomogram", n_boot=20)
    boot = pd.read_csv(tmp_path / "report_tables" / "bootstrap_validation.csv").set_index("metric")
    assert np.allclose(boot["corrected"], boot["apparent"] - boot["optimism"])
    design = model.final_inputs(X, model.out_of_fold_scores(X, y))
    refit = clone(model.final_).fit(design, y)
    assert boot.loc["auc", "apparent"] == pytest.approx(roc_auc_score(y, refit.predict_proba(design)[:, 1]))
    assert "(20 resamples) of the nomogram" in html and ", ".join(design.columns) in html
    with pytest.raises(InputError, match=r"nomogram.*late-fusion.*LogisticRegression"):
        bootstrap_section(tmp_path, SimpleNamespace(model=LogisticRegression()), X, y, model="nomogram", n_boot=20)


def test_icc_section_counts_kept_features_per_source(tmp_path: Path) -> None:
    perts = pd.DataFrame(
        {
            "case_id": ["a", "b", "c"] * 2,
            "perturbation": ["original"] * 3 + ["shift"] * 3,
            "t2_x": [1.0, 2.0, 3.0, 2.0, 3.0, 4.0],  # ICC(3,1) = 1
            "t1_z": [1.0, 2.0, 3.0, 2.0, 2.0, 5.0],  # ICC(3,1) = 0.75
        }
    )
    html = icc_section(tmp_path, perts, threshold=0.9, source_of=lambda c: c.split("_")[0])
    icc = pd.read_csv(tmp_path / "report_tables" / "icc.csv")
    assert icc.to_dict("list") == {
        "source": ["t1", "t2"],
        "features": [1, 1],
        "kept": [0, 1],
        "median_icc": pytest.approx([0.75, 1.0]),
    }
    assert "over 3 cases across the original and 1 perturbed extractions (shift)" in html
    assert "<td>0.750</td>" in html and "ICC ≥ 0.9" in html
