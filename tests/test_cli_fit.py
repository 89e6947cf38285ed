"""``usher2 fit``: nested CV to a bundle, extraction when no feature table is given, named errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from usher2.cli import app
from usher2.fusion.bundle import load_bundle
from usher2.io.hashing import file_sha256

runner = CliRunner()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from usher2.simulate import SimulationConfig, simulate_cohort

    root = tmp_path_factory.mktemp("cli_fit")
    simulate_cohort(60, 930, root / "cohort", config=SimulationConfig(image_size=(128, 128)), workers=1)
    (root / "p.yaml").write_text("imageType:\n  Original: {}\nsetting:\n  binWidth: 8\n")
    args = ["extract", str(root / "cohort" / "manifest.csv"), "--out", str(root / "f.parquet")]
    assert runner.invoke(app, [*args, "--params", str(root / "p.yaml"), "--perturb"]).exit_code == 0
    return root


def test_fit_writes_a_bundle_with_cv_metrics_and_training_hashes(cohort, tmp_path):
    manifest = cohort / "cohort" / "manifest.csv"
    args = ["fit", str(manifest), "--features", str(cohort / "f.parquet"), "--out", str(tmp_path / "b")]
    result = runner.invoke(app, [*args, "--clinical", "age", "--clinical", "ki67", "--outer-folds", "3"])
    assert result.exit_code == 0, result.output
    assert "3-fold nested CV AUC" in result.output and "ICC filter: perturbation table" in result.output
    b = load_bundle(tmp_path / "b")
    assert b.config.family == "combined" and b.config.clinical == ("age", "ki67")
    assert b.config.training_data["features_sha256"] == file_sha256(cohort / "f.parquet")
    assert b.config.training_data["manifest_sha256"] == file_sha256(manifest)
    assert len(b.config.training_data["inputs"]) == 60
    assert b.config.extraction["deep"][0]["backbone"] == "usresnet10t"
    oof = pd.read_csv(tmp_path / "b" / "oof.csv")
    assert len(oof) == 60 and set(oof["fold"]) == {0, 1, 2}
    table = pd.read_parquet(cohort / "f.parquet")
    assert b.predict_proba(table.assign(**pd.read_csv(manifest)[["age", "ki67"]])).shape == (60,)


def test_bad_options_exit_2_with_named_errors(cohort, tmp_path):
    manifest = cohort / "cohort" / "manifest.csv"
    # --model dlr: the default model (combined) needs --clinical, a settings error found before the data is read
    base = [
        "fit",
        str(manifest),
        "--features",
        str(cohort / "f.parquet"),
        "--out",
        str(tmp_path / "x"),
        "--model",
        "dlr",
    ]
    for extra, message in (
        (["--label", "her2"], "her2"),
        (["--clinical", "case_id"], "numbers"),
        (["--model", "radiology"], "radiology"),
        (["--classifier", "knn"], "knn"),
        (["--model", "clinical"], "clinical columns"),
    ):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2 and message in result.output, (extra, result.output)


@pytest.mark.slow
def test_fit_without_features_extracts_first(cohort, tmp_path):
    """The default extraction (every image type, region and the lexicon, plus the redrawn contours of
    --scoring-masks predicted), with the torch radiomics backend, which the bundle records."""
    manifest = cohort / "cohort" / "manifest.csv"
    args = ["fit", str(manifest), "--out", str(tmp_path / "b"), "--model", "dlr", "--radiomics-backend", "torch"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    b = load_bundle(tmp_path / "b")
    assert (tmp_path / "b.features.parquet").is_file() and b.config.family == "dlr"
    assert b.config.extraction_settings["radiomics_backend"] == "torch"
    assert b.config.extraction["radiomics"]["backend"] == "torch"


def test_score_a_folder_and_a_manifest_with_flags_and_failures(cohort, tmp_path):
    import shutil

    import cv2
    import numpy as np

    manifest = cohort / "cohort" / "manifest.csv"
    fit_args = ["fit", str(manifest), "--features", str(cohort / "f.parquet"), "--out", str(tmp_path / "b")]
    assert runner.invoke(app, [*fit_args, "--clinical", "age", "--outer-folds", "3"]).exit_code == 0
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("sim_000000_f0", "sim_000001_f0"):
        shutil.copy(cohort / "cohort" / "images" / f"{name}.png", frames / f"{name}.png")
    cv2.imwrite(str(frames / "blank.png"), np.full((128, 128), 40, np.uint8))
    (frames / "broken.png").write_bytes(b"not an image")
    clinical = tmp_path / "clinical.csv"
    pd.read_csv(manifest)[["case_id", "age"]].to_csv(clinical, index=False)
    out = tmp_path / "s.csv"
    result = runner.invoke(app, ["score", str(frames), "--bundle", str(tmp_path / "b"), "--out", str(out), "--clinical",
                                 str(clinical)])  # fmt: skip
    assert result.exit_code == 1, result.output  # the broken file
    s = pd.read_csv(out).set_index("case_id")
    assert list(s.index) == ["blank", "sim_000000_f0", "sim_000001_f0"]
    assert bool(s.loc["blank", "no_lesion"]) and pd.isna(s.loc["blank", "probability"])
    scored = s.drop(index="blank")
    assert scored["probability"].between(0, 1).all() and not scored["clinical_missing"].any()
    assert (scored["label"] == (scored["probability"] >= scored["threshold"]).astype(int)).all()
    failures = pd.read_csv(tmp_path / "s.failures.csv")
    assert list(failures["case_id"]) == ["broken"] and "decode" in failures["error"][0]
    # a manifest with its own masks scores the same frames with the given masks
    out2 = tmp_path / "m.csv"
    result = runner.invoke(app, ["score", str(manifest), "--bundle", str(tmp_path / "b"), "--out", str(out2),
                                 "--masks", "given"])  # fmt: skip
    assert result.exit_code == 0, result.output
    m = pd.read_csv(out2)
    assert len(m) == 60 and m["mask_uncertainty"].isna().all() and m["probability"].between(0, 1).all()
