"""The MRI study recipes: loading and checking, sequence fallbacks, the MRI column families, and
small end-to-end runs through ``usher2 mri reproduce``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from usher2.cli import app
from usher2.fusion.models import LateFusionClassifier, build_model, family_columns
from usher2.io.errors import InputError
from usher2.mri.recipes import STUDIES, ModelSpec, load_recipe, reproduce
from usher2.mri.recipes import _resolve_sequences as resolve_sequences

SMALL = {"shape_zyx": (12, 48, 48), "spacing_zyx_mm": (4.0, 2.0, 2.0)}


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_recipe_loads_with_its_tasks_and_final_models(study: str) -> None:
    r = load_recipe(study)
    assert r.study == study
    for task in r.tasks:
        names = [m.name for m in r.models if m.task == task.name]
        assert task.primary in names
    assert all(isinstance(m, ModelSpec) for m in r.models)


def test_recipe_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="prostate, breast-mpmri"):
        load_recipe("kidney")
    bad = tmp_path / "r.yaml"
    bad.write_text("study: x\ntasks: [{name: main}]\nmodels: [{name: a, colour: red}]\n")
    with pytest.raises(InputError, match="colour"):
        load_recipe(bad)
    bad.write_text("study: x\ntasks: [{name: main, primary: b}]\nmodels: [{name: a}]\n")
    with pytest.raises(InputError, match="primary model"):
        load_recipe(bad)
    bad.write_text("study: x\ntasks: [{name: main, primary: a}]\nmodels: [{name: a, task: other}]\n")
    with pytest.raises(InputError, match="task among"):
        load_recipe(bad)
    bad.write_text("study: x\ntasks: [{name: main, primary: a}]\nmodels: [{name: a}]\nextras: [tea]\n")
    with pytest.raises(InputError, match="tea"):
        load_recipe(bad)
    bad.write_text("study: x\ntasks: [{name: main, primary: a}]\nmodels: [{name: a}]\nselection: {alfa: 0.1}\n")
    with pytest.raises(InputError, match=r"selection.*unknown keys \['alfa'\]"):
        load_recipe(bad)
    bad.write_text("study: x\ntasks: [{name: main, primary: a}]\nmodels: [{name: a, selection: {lasso: 3}}]\n")
    with pytest.raises(InputError, match=r"model 'a': selection.*'lasso'"):
        load_recipe(bad)


def test_a_missing_sequence_names_it_and_the_models_that_need_it() -> None:
    r = load_recipe("breast-mpmri")
    man = pd.DataFrame({"case_id": ["a"], "t2": ["t2.nii"], "dce": ["dce.nii"], "mask": ["m.nii"]})
    with pytest.raises(InputError) as exc:
        resolve_sequences(r, [man])
    msg = str(exc.value)
    assert "dwi_b800" in msg and "'dwi'" in msg and "fallback 'adc'" in msg


def test_the_declared_fallback_replaces_the_sequence_in_every_model() -> None:
    r = load_recipe("breast-mpmri")
    man = pd.DataFrame({"case_id": ["a"], "t2": ["x"], "dce": ["x"], "adc": ["x"], "mask": ["m"]})
    new, used = resolve_sequences(r, [man])
    assert used == {"dwi_b800": "adc"}
    assert "adc" in new.sequences() and "dwi_b800" not in new.sequences()
    assert next(m for m in new.models if m.name == "dwi").sequences == ("adc",)
    assert next(m for m in new.models if m.name == "mpmri").sequences == ("t2", "adc", "dce_p3", "dce_p7", "dce")


def test_adc_counts_as_available_from_two_dwi_b_values() -> None:
    r = load_recipe("prostate")
    man = pd.DataFrame({"case_id": ["a"], "t2": ["x"], "dwi_b0": ["x"], "dwi_b800": ["x"], "mask": ["m"]})
    assert resolve_sequences(r, [man])[1] == {}
    with pytest.raises(InputError, match="adc"):
        resolve_sequences(r, [man.drop(columns="dwi_b0")])


def test_mri_columns_fall_into_the_families_by_sequence() -> None:
    cols = [
        "t2_radiomics_original_firstorder_Mean",
        "dwi_b800_radiomics_original_shape_Sphericity",
        "dce_p3_radiomics_original_glcm_Contrast",
        "dce_kinetics_ser",
        "t1_deep_resnet50_0",
        "t2_deep_vit_small_patch16_224_3",
        "age",
    ]
    everything = family_columns(cols, "dlr")
    assert everything["radiomics"] == cols[:4] and everything["deep"] == cols[4:6]
    assert family_columns(cols, "radiomics", sequences=["dwi_b800"])["radiomics"] == [cols[1]]
    assert family_columns(cols, "radiomics", sequences=["dce"])["radiomics"] == ["dce_kinetics_ser"]
    assert family_columns(cols, "deep:vit_small_patch16_224")["deep"] == [cols[5]]
    assert family_columns(["radiomics_original_x", "deep_r_0"], "dlr") == {
        "radiomics": ["radiomics_original_x"],
        "deep": ["deep_r_0"],
        "clinical": [],
    }


def test_late_fusion_by_backbone_gives_one_deep_score_per_backbone() -> None:
    cols = {"radiomics": [], "deep": ["t1_deep_a_0", "t2_deep_a_1", "t1_deep_b_b_0"], "clinical": ["age"]}
    model, _ = build_model(cols, fusion="late", late_sources="backbone")
    assert isinstance(model, LateFusionClassifier)
    assert model.sources == {"deep_a": ["t1_deep_a_0", "t2_deep_a_1"], "deep_b_b": ["t1_deep_b_b_0"]}
    with pytest.raises(InputError, match="backbone"):
        build_model(cols, fusion="late", late_sources="sequence")


def _check_outputs(out: Path, rec_name: str) -> pd.DataFrame:
    table = pd.read_csv(out / "auc.csv")
    summary = json.loads((out / "recipe.json").read_text())
    assert summary["recipe"]["study"] == rec_name
    for r in table.itertuples():
        assert 0.0 <= r.test_auc <= 1.0 and r.test_ci_low <= r.test_auc <= r.test_ci_high
        assert r.ratio == pytest.approx(r.test_auc / r.oracle_auc)
        pred = pd.read_csv(out / "tasks" / r.task / "predictions.csv", dtype={"case_id": str})
        test = pred[(pred["model"] == r.model) & (pred["split"] == "test")]
        assert len(test) == r.n_test
        assert set(test["case_id"]).isdisjoint(pred.loc[pred["split"] == "train_oof", "case_id"])
    for task, verdict in summary["verdict"].items():
        final = table[(table["task"] == task) & table["final"]].iloc[0]
        assert verdict["auc"] == pytest.approx(final.test_auc)
        assert verdict["meets_target"] == bool(final.ratio >= 0.95)
    return table


def test_prostate_recipe_end_to_end_on_small_phantoms(tmp_path: Path, torch_one_thread: None) -> None:
    out = tmp_path / "prostate"
    result = CliRunner().invoke(
        app,
        ["mri", "reproduce", "prostate", "--out", str(out), "--n-train", "60", "--n-test", "40", "--quick"],
    )
    assert result.exit_code == 0, result.output
    table = _check_outputs(out, "prostate")
    assert list(table["model"]) == ["radscore", "clinical", "combined", "nomogram"]
    html = (out / "tasks" / "main" / "report.html").read_text()
    assert "DeLong comparison matrix" in html and "7. Waterfall" in html
    matrix = pd.read_csv(out / "tasks" / "main" / "report_tables" / "delong_matrix.csv")
    assert list(matrix["model"]) == ["radscore", "clinical", "combined", "nomogram"]
    # the combined model (early fusion) and the nomogram (Radscore + ISUP + PSA) read the same columns
    for name, fusion in (("combined", "early"), ("nomogram", "late")):
        cfg = json.loads((out / "tasks" / "main" / "bundles" / name / "config.json").read_text())
        assert cfg["fusion"] == fusion and cfg["selection"] == {"icc_threshold": 0.9, "alpha": 0.05, "lasso_cv": 10}
        assert {"isup", "psa"} <= set(cfg["columns"]) and any(c.startswith("adc_radiomics_") for c in cfg["columns"])


def test_birads_recipe_two_tasks_shap_and_survival(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from sklearn.ensemble import RandomForestClassifier

    import usher2.fusion.models as fusion_models
    import usher2.mri.recipes as recipes

    monkeypatch.setattr(recipes, "DESCRIPTOR_ORACLE_N", 20_000)  # the descriptor oracle's pool, small for speed
    # What this test checks is the recipe's machinery (two tasks, SHAP, survival, nested), not the
    # forest's AUC: 50 trees instead of 300 and 2 inner folds cut its ~190 s (the grid searches'
    # forests were 3/4 of it) to about a third.
    small_rf = [
        dataclasses.replace(s, build=lambda rs: RandomForestClassifier(n_estimators=50, n_jobs=1, random_state=rs))
        if s.name == "rf"
        else s
        for s in fusion_models.CLASSIFIER_SPECS
    ]
    monkeypatch.setattr(fusion_models, "CLASSIFIER_SPECS", tuple(small_rf))
    out = tmp_path / "birads"
    birads = dataclasses.replace(load_recipe("breast-birads"), inner_folds=2)
    res = reproduce(birads, out, n_train=80, n_test=60, phantom=SMALL, outer_folds=3)
    table = _check_outputs(out, "breast-birads")
    assert set(table["task"]) == {"her2", "low"}
    low = pd.read_csv(out / "tasks" / "low" / "predictions.csv")
    man = pd.read_csv(out / "phantoms" / "test" / "manifest.csv")
    assert len(low[low["split"] == "test"]) // 2 == int((man["label"] == 0).sum())  # two models, negatives only
    logrank = pd.read_csv(out / "tasks" / "her2" / "report_tables" / "logrank.csv")
    assert list(logrank["grouping"]) == ["threshold", "tertiles"] and (logrank["p"].between(0, 1)).all()
    shap = pd.read_csv(out / "tasks" / "her2" / "report_tables" / "shap_ranking.csv")
    assert (
        shap["mean_abs_shap"].is_monotonic_decreasing
        and shap["feature"].str.startswith(("birads_", "age", "er", "pr", "grade", "ki67", "tumour_size_mm")).all()
    )
    # the recipe's clinical_alpha: 1 keeps every descriptor and clinical column (the forest weighs them)
    assert (
        len(shap)
        == len([c for c in pd.read_csv(out / "tasks" / "her2" / "manifest.csv").columns if c.startswith("birads_")]) + 6
    )
    assert "SHAP ranking" in res.reports["her2"].read_text()

    # nested validation pools both cohorts (the same phantoms, reused): out-of-fold AUC against the oracle
    rec = dataclasses.replace(birads, tasks=birads.tasks[:1], models=birads.models[:1], extras=())
    nested = reproduce(rec, out, n_train=80, n_test=60, phantom=SMALL, outer_folds=3, validation="nested")
    row = nested.table.iloc[0]
    assert row["n_train"] == 140 and "test_auc" not in nested.table.columns
    assert row["ratio"] == pytest.approx(row["cv_auc"] / row["oracle_auc"])
    pred = pd.read_csv(out / "tasks" / "her2" / "predictions.csv")
    assert set(pred["split"]) == {"train_oof"} and len(pred) == 140


def test_deep_recipe_icc_and_bootstrap_sections(tmp_path: Path, torch_one_thread: None) -> None:
    """A one-backbone variant of the breast-deep recipe on tiny phantoms."""
    import yaml

    from usher2.mri.recipes import STUDIES_DIR

    raw = yaml.safe_load((STUDIES_DIR / "breast-deep.yaml").read_text())
    raw["extract"]["backbones"] = ["resnet18=random"]
    raw["extract"]["deep_input_size"] = 32
    raw["models"] = [m for m in raw["models"] if not m["name"].startswith("deep:")] + [
        {"name": "deep:resnet18", "family": "deep:resnet18", "fusion": "late", "icc": True, "oracle": "image"}
    ]
    raw["bootstrap"] = {"n_boot": 200}
    raw["extract"]["perturb_fraction"] = 0.5  # the ICC of half the cases (the recipe's fifth is ~12 of 60 here)
    path = tmp_path / "deep.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "deep"
    reproduce(path, out, n_train=60, n_test=40, phantom=SMALL, outer_folds=3)
    _check_outputs(out, "breast-deep")
    tables = out / "tasks" / "main" / "report_tables"
    boot = pd.read_csv(tables / "bootstrap_validation.csv").set_index("metric")
    assert np.allclose(boot["corrected"], boot["apparent"] - boot["optimism"])
    icc = pd.read_csv(tables / "icc.csv")
    assert set(icc["source"]) == {"t1 deep resnet18", "t2 deep resnet18", "dce_p3 deep resnet18"}
    assert (icc["features"] == 512).all() and (icc["kept"] <= icc["features"]).all()
    perturbed = pd.read_parquet(out / "features" / "train.perturbations.parquet")["case_id"].nunique()
    assert 15 <= perturbed <= 45  # half of the 60 training cases, by a seeded hash (binomial sd ~ 4)
