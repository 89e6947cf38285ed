"""``usher2 extract``: exit codes, predicted masks, parameter files, named errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from usher2.cli import app
from usher2.features.extract import read_feature_table
from usher2.io.manifest import write_manifest

runner = CliRunner()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from usher2.simulate import SimulationConfig, simulate_cohort

    root = tmp_path_factory.mktemp("cli_extract")
    df = simulate_cohort(4, 920, root, config=SimulationConfig(image_size=(128, 128)), workers=1)
    (root / "params.yaml").write_text("imageType:\n  Original: {}\nsetting:\n  binWidth: 16\n")
    cv2.imwrite(str(root / "empty.png"), np.zeros((128, 128), np.uint8))
    bad = pd.DataFrame([{"case_id": "empty", "patient_id": "p_empty", "image": df["image"][0], "mask": "empty.png"}])
    write_manifest(pd.concat([df, bad], ignore_index=True), root / "with_bad.csv")
    return root


def test_exit_0_with_a_params_file_and_predicted_masks(cohort, tmp_path):
    out = tmp_path / "f.parquet"
    args = ["extract", str(cohort / "manifest.csv"), "--out", str(out), "--params", str(cohort / "params.yaml")]
    result = runner.invoke(app, [*args, "--masks", "predicted", "--backbone", "none"])
    assert result.exit_code == 0, result.output
    table, prov = read_feature_table(out)
    assert len(table) == 4 and (table["mask_source"] == "predicted").all()
    assert table["mask_uncertainty"].between(0, 1).all()  # the segmenter's entropy, in bits
    assert not any(c.startswith("deep_") for c in table.columns)
    assert prov["radiomics"]["params"]["setting"]["binWidth"] == 16 and prov["segmenter"]["name"] == "unet"
    from usher2.io.hashing import file_sha256
    from usher2.weights import default_weights_dir

    assert prov["segmenter"]["weights_file_sha256"] == file_sha256(default_weights_dir() / "segmenter_unet.safetensors")
    assert "4 of 4 cases" in result.output


def test_exit_1_and_the_failures_file_when_a_case_fails(cohort, tmp_path):
    out = tmp_path / "f.parquet"
    args = ["extract", str(cohort / "with_bad.csv"), "--out", str(out), "--params", str(cohort / "params.yaml")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    failures = pd.read_csv(tmp_path / "f.failures.csv")
    assert list(failures["case_id"]) == ["empty"] and "mask is empty" in failures["error"][0]
    assert len(read_feature_table(out)[0]) == 4  # the other cases have their rows


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--masks", "drawn"], "masks"),
        (["--backbone", "resnet50"], "resnet50=random"),
        (["--params", "nope.yaml"], "no such file"),
    ],
)
def test_bad_options_exit_2_with_a_named_error(cohort, tmp_path, extra, message):
    result = runner.invoke(app, ["extract", str(cohort / "manifest.csv"), "--out", str(tmp_path / "f.parquet"), *extra])
    assert result.exit_code == 2 and message in result.output, result.output


def test_out_must_be_parquet(cohort, tmp_path):
    result = runner.invoke(app, ["extract", str(cohort / "manifest.csv"), "--out", str(tmp_path / "f.csv")])
    assert result.exit_code == 2 and ".parquet" in result.output
