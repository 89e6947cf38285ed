"""usher2.Pipeline: configuration checks, and fit -> evaluate on small simulated cohorts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import usher2
from usher2.evaluate import roc_auc_ci, youden_threshold
from usher2.io.errors import InputError
from usher2.pipeline import Pipeline, PipelineConfig


def test_config_from_yaml_and_its_checks(tmp_path):
    good = tmp_path / "p.yaml"
    good.write_text("models: [radiomics, combined]\nclinical: [age, er]\nenhancer: none\nseed: 3\n")
    cfg = PipelineConfig.from_yaml(good)
    assert cfg.models == ("radiomics", "combined") and cfg.primary_model == "combined"
    assert cfg.enhancer is None and cfg.seed == 3 and cfg.clinical == ("age", "er")
    bad = tmp_path / "bad.yaml"
    bad.write_text("modles: [radiomics]\n")
    with pytest.raises(InputError, match=r"unknown keys \['modles'\]"):
        PipelineConfig.from_yaml(bad)
    with pytest.raises(InputError, match="clinical columns"):
        PipelineConfig(models=("combined",))
    with pytest.raises(InputError, match="models"):
        PipelineConfig(models=("radiomix",))
    with pytest.raises(InputError, match="primary_model"):
        PipelineConfig(models=("radiomics",), primary_model="dlr")
    with pytest.raises(InputError, match="no such file"):
        PipelineConfig.from_yaml(tmp_path / "missing.yaml")
    assert PipelineConfig().models == ("radiomics", "deep", "dlr")  # no clinical columns: the imaging families
    assert usher2.Pipeline is Pipeline


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from usher2.simulate import SimulationConfig, simulate_cohort

    root = tmp_path_factory.mktemp("pipe")
    sim = SimulationConfig(image_size=(128, 128))
    simulate_cohort(48, 5, root / "train", config=sim, workers=1)
    simulate_cohort(30, 6, root / "test", config=sim, workers=1)
    params = {
        "imageType": {"Original": {}},
        "featureClass": {"shape2D": None, "firstorder": None},
        "setting": {"binWidth": 16, "label": 1},
    }
    cfg = PipelineConfig(
        radiomics=params,
        backbones=(),
        models=("clinical", "radiomics"),
        clinical=("age", "er", "grade"),
        outer_folds=3,
        inner_folds=2,
        calibration=None,
    )
    res = Pipeline(cfg).run(root / "train" / "manifest.csv", root / "test" / "manifest.csv", root / "run", report=False)
    return res


def test_run_writes_the_evaluation_directory(run):
    out = run.out
    for name in ("predictions.csv", "thresholds.json", "summary.json", "manifest.csv", "features.parquet", "auc.csv"):
        assert (out / name).is_file(), name
    pred = pd.read_csv(out / "predictions.csv", dtype={"case_id": str})
    counts = pred.groupby(["model", "split"]).size().unstack()
    assert (counts["train_oof"] == 48).all() and (counts["test"] == 30).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cohort"]["train"]["n"] == 48 and summary["cohort"]["test"]["n"] == 30
    assert summary["primary_model"] == "radiomics" and set(summary["bundles"]) == {"clinical", "radiomics"}
    assert all(summary["methods"][k] for k in ("data", "splits", "model", "validation", "missing_data"))


def test_reported_aucs_and_thresholds_follow_from_the_predictions(run):
    pred = pd.read_csv(run.out / "predictions.csv", dtype={"case_id": str})
    thresholds = json.loads((run.out / "thresholds.json").read_text())
    for r in run.table.itertuples():
        test = pred[(pred["model"] == r.model) & (pred["split"] == "test")]
        assert r.test_auc == pytest.approx(roc_auc_ci(test["label"], test["probability"]).auc, abs=1e-12)
        oof = pred[(pred["model"] == r.model) & (pred["split"] == "train_oof")]
        assert r.cv_auc == pytest.approx(roc_auc_ci(oof["label"], oof["probability"]).auc, abs=1e-12)
        # the threshold comes from the training out-of-fold predictions, never from the test cohort
        assert thresholds[r.model] == pytest.approx(youden_threshold(oof["label"], oof["probability"]))
    assert np.isnan(run.table["oracle_auc"]).all()  # none given


def test_report_command_renders_the_evaluation_directory(run, tmp_path):
    from typer.testing import CliRunner

    from usher2.cli import app
    from usher2.report import SECTIONS

    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(run.out), "--out", str(out), "--cam-examples", "1"])
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert all(title in html for title in SECTIONS)
    assert "http://" not in html and "https://" not in html
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.html")])
    assert bad.exit_code == 2 and "summary.json" in bad.output + str(bad.exception)
