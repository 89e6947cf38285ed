"""The CLI, in-process: the public command contract, --help everywhere, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import typer.main
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from usher2 import __version__
from usher2.cli import app
from usher2.simulate import oracle_aucs

runner = CliRunner()


def _all_command_paths(cmd: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    # typer >= 0.2x vendors click; walk any group-like command by its ``commands`` mapping.
    paths = [prefix]
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            paths += _all_command_paths(sub, (*prefix, name))
    return paths


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"usher2 {__version__}"


def test_public_commands_exist_and_every_command_has_help() -> None:
    paths = _all_command_paths(typer.main.get_command(app))
    for contract in [("simulate",), ("import", "bus-bra"), ("import", "busi"), ("demo",)]:
        assert contract in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


def test_simulate_writes_a_cohort_and_prints_its_oracle_aucs(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    result = runner.invoke(app, ["simulate", "--n", "16", "--seed", "3", "--out", str(out), "--size", "128"])
    assert result.exit_code == 0, result.output
    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == 16
    for col in ("image", "mask", "clean"):
        assert all((out / p).is_file() for p in manifest[col])
    assert manifest["label"].nunique() == 2
    aucs = oracle_aucs(manifest)
    # The table shows exactly what oracle_aucs computes from the manifest.
    for name, key in [("clinical only", "clinical"), ("image traits only", "image"), ("all (true_prob)", "all")]:
        assert re.search(rf"{re.escape(name)}\s*│\s*{aucs[key]:.3f}\s*│", result.output), (name, result.output)
    assert aucs["all"] == pytest.approx(roc_auc_score(manifest["label"], manifest["true_prob"]), abs=1e-12)


def test_simulate_single_class_cohort_says_why_there_is_no_auc(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--n", "2", "--seed", "3", "--out", str(tmp_path), "--size", "64"])
    assert result.exit_code == 0, result.output
    # Seed 3's first two patients are both HER2-negative (simulate_labels(2, seed=3)).
    assert pd.read_csv(tmp_path / "manifest.csv")["label"].tolist() == [0, 0]
    assert "oracle AUCs are undefined: every one of its 2 cases has label [0]" in result.output


def test_import_bus_bra_reports_a_missing_layout_clearly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", "bus-bra", str(tmp_path), "--out", str(tmp_path / "m.csv")])
    assert result.exit_code == 2
    assert "bus_data.csv" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "m.csv").exists()


def test_import_bus_bra_real(bus_bra_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "bus-bra.csv"
    result = runner.invoke(app, ["import", "bus-bra", str(bus_bra_root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out)
    assert len(df) == 1875
    assert df["patient_id"].nunique() == 1064


def test_simulate_rejects_bad_n(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--n", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--n" in result.output


def test_out_of_range_setting_is_one_clear_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--n", "1", "--out", str(tmp_path), "--size", "5000"])
    assert result.exit_code == 2
    assert "image_size" in result.output and "5000" in result.output
    assert "Traceback" not in result.output


def test_train_is_one_command_for_every_network(tmp_path):
    # usher2 train KIND: the three trainers behind one command; a bad kind or file is named, exit 2
    bad = CliRunner().invoke(app, ["train", "gan", "--config", str(tmp_path / "c.yaml"), "--no-track"])
    assert bad.exit_code == 2 and "one of enhancer, segmenter, backbone" in bad.output
    for kind in ("enhancer", "segmenter", "backbone"):
        r = CliRunner().invoke(app, ["train", kind, "--config", str(tmp_path / "c.yaml"), "--no-track"])
        assert r.exit_code == 2 and "c.yaml" in r.output and "no such file" in r.output, (kind, r.output)


@pytest.mark.parametrize("command", ["score", "extract"])
def test_an_unknown_radiomics_backend_is_one_clear_line(tmp_path: Path, command: str) -> None:
    (tmp_path / "m.csv").write_text("case_id,image\n")
    args = {
        "score": ["score", str(tmp_path / "m.csv"), "--bundle", str(tmp_path), "--out", str(tmp_path / "o")],
        "extract": ["extract", str(tmp_path / "m.csv"), "--out", str(tmp_path / "f.parquet")],
    }[command]
    result = runner.invoke(app, [*args, "--radiomics-backend", "fast"])
    assert result.exit_code == 2, result.output
    out = result.output
    assert "radiomics_backend" in out and "'pyradiomics' or 'torch'" in out and "fast" in out
    assert "Traceback" not in result.output
