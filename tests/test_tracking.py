"""MLflow experiment tracking: tiny real runs read back through MLflow's own API; off means nothing written."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from usher2.io.errors import InputError
from usher2.tracking import DEFAULT_TRACKING_URI, Tracker, flatten_params, resolve_tracking_uri, track_run

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402 - after the skip

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _store(tmp_path: Path) -> str:
    return f"file:{tmp_path}/mlruns"


def _only_run(uri: str, experiment: str) -> mlflow.entities.Run:
    client = MlflowClient(resolve_tracking_uri(uri))
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in {uri}"
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    client = MlflowClient(resolve_tracking_uri(uri))
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _artifacts(uri: str, run_id: str, folder: str | None = None) -> set[str]:
    return {a.path for a in MlflowClient(resolve_tracking_uri(uri)).list_artifacts(run_id, folder)}


def _cohort(n: int = 40, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A one-column feature table and a manifest with two clinical columns (one case per patient)."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    ids = [f"c{i:03d}" for i in range(n)]
    feats = pd.DataFrame({"case_id": ids, "radiomics_f0": rng.normal(size=n) + y})
    manifest = pd.DataFrame(
        {
            "case_id": ids,
            "patient_id": ids,
            "image": [f"{i}.png" for i in ids],
            "label": y,
            "age": rng.normal(size=n) + y,
            "ki67": rng.normal(size=n),
        }
    )
    return feats, manifest


# The clinical model with 3 outer and 2 inner folds, uncalibrated: about a second per fit.
FIT = {"family": "clinical", "clinical": ["age", "ki67"], "outer_folds": 3, "inner_folds": 2, "calibration": None}
FIT_ARGS = "--model clinical --clinical age --clinical ki67 --outer-folds 3 --inner-folds 2 --calibration none".split()


# ------------------------------------------------------------------------------ the wrapper
def test_params_flatten_and_truncate_and_a_raising_run_ends_failed(tmp_path):
    uri = _store(tmp_path)
    assert flatten_params({"a": {"b": 1, "c": (1, 2)}, "d": None}) == {"a.b": "1", "a.c": "[1, 2]", "d": "None"}
    with pytest.raises(RuntimeError, match="boom"):
        with track_run(uri, experiment="e", run_name="r", params={"long": "x" * 7000, "n": {"k": 3}}) as t:
            t.log_metrics({"loss": 0.25, "nan": float("nan")}, step=4)
            t.log_dict({"z": np.float32(0.5)}, "sub/d.json")
            raise RuntimeError("boom")
    run = _only_run(uri, "e")
    assert run.info.status == "FAILED" and run.info.run_id == t.run_id
    assert run.data.params["n.k"] == "3"
    assert len(run.data.params["long"]) == 6000 and run.data.params["long"].endswith("...")
    assert _history(uri, t.run_id, "loss") == [(4, 0.25)] and np.isnan(run.data.metrics["nan"])
    local = MlflowClient(resolve_tracking_uri(uri)).download_artifacts(t.run_id, "sub/d.json", str(tmp_path / "dl"))
    assert json.loads(Path(local).read_text()) == {"z": 0.5}
    with pytest.raises(InputError, match="metric 'bad': expected a number"):
        t.log_metrics({"bad": "high"})


def test_uris_resolve_and_missing_mlflow_is_a_named_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(DEFAULT_TRACKING_URI) == (Path.cwd() / "mlruns").as_uri()
    assert resolve_tracking_uri("file:a/../b") == (Path.cwd() / "b").as_uri()
    assert resolve_tracking_uri(str(tmp_path / "a")) == (tmp_path / "a").as_uri()
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert resolve_tracking_uri(None) is None and resolve_tracking_uri("OFF") is None
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else find_spec(name, *a))
    with pytest.raises(InputError, match="pip install mlflow-skinny"):
        track_run("file:x", experiment="e").__enter__()
    from usher2.cli import app

    result = runner.invoke(app, ["fit", "m.csv", "--out", "b"])  # refused before anything is read
    assert result.exit_code == 2 and "mlflow-skinny" in result.output and "--no-track" in result.output
    with track_run("off", experiment="e") as t:  # off needs no mlflow
        assert not t.enabled
    assert list(tmp_path.iterdir()) == []


def test_off_imports_no_mlflow_and_on_contacts_no_network(tmp_path):
    """In a fresh interpreter (outside pytest, whose presence alone keeps MLflow's telemetry off): tracking off
    does not import mlflow, and a tracked run neither resolves nor connects to any host."""
    script = textwrap.dedent(
        f"""
        import socket, sys
        calls = []
        def blocked(*args, **kwargs):
            calls.append(args[:2])
            raise OSError("network blocked by the test")
        socket.getaddrinfo = blocked
        socket.socket.connect = lambda self, addr: blocked(addr)
        from usher2.tracking import Tracker, track_run
        with track_run(None, experiment="e") as t:
            t.log_params({{"a": 1}}); t.log_metrics({{"m": 1.0}}); t.log_dict({{}}, "c.json")
        assert "mlflow" not in sys.modules, "tracking off imported mlflow"
        with track_run("file:{tmp_path}/mlruns", experiment="e", params={{"a": 1}}) as t:
            t.log_metrics({{"m": 1.0}}, step=0)
        import time; time.sleep(0.5)  # telemetry, were it on, starts in a background thread
        assert not calls, calls
        print("ok")
        """
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("PYTEST", "MLFLOW_"))}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# ------------------------------------------------------------------------------ the trainings
def test_enhancer_run_has_config_params_per_epoch_metrics_and_card(tmp_path, torch_one_thread):
    from usher2.enhance.networks import GeneratorConfig
    from usher2.enhance.training import DataConfig, EnhancerTrainConfig, train_enhancer
    from usher2.simulate import SimulationConfig, simulate_cohort

    cfg = EnhancerTrainConfig(
        out=str(tmp_path / "run"),
        generator=GeneratorConfig(base_channels=4, depth=2),
        disc_channels=4,
        disc_layers=2,
        data=DataConfig(n_train=2, n_val=1, image_size=32),
        crop=32,
        batch_size=2,
        epochs=2,
        steps_per_epoch=2,
        lr=3e-4,
    )
    # Rendered here in-process (workers=1): the training resumes the cohort from disk instead of starting
    # a process pool for two frames, which costs seconds.
    d = cfg.data
    simulate_cohort(d.n_train, d.train_seed, tmp_path / "run" / "data" / "train", workers=1,
                    config=SimulationConfig(image_size=(d.image_size, d.image_size)))  # fmt: skip
    uri = _store(tmp_path)
    result = train_enhancer(cfg, log=lambda s: None, command="usher2 train enhancer --config tiny.yaml", track=uri)
    run = _only_run(uri, "usher2-enhancer")
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    p = run.data.params
    assert p["lr"] == "0.0003" and p["epochs"] == "2" and p["model"] == "pix2pix"
    assert p["generator.depth"] == "2" and p["data.n_train"] == "2" and p["data.target_devices"] == "[]"
    assert p == flatten_params(asdict(cfg))
    assert run.data.tags["usher2.command"] == "usher2 train enhancer --config tiny.yaml"
    for key in ("psnr", "ssim", "gcnr"):
        assert _history(uri, run.info.run_id, f"val_{key}") == [(i, h[key]) for i, h in enumerate(result.history)]
        assert run.data.metrics[f"best_val_{key}"] == result.best_metrics[key]
    losses = _history(uri, run.info.run_id, "train_loss_g")
    assert [s for s, _ in losses] == [0, 1] and all(np.isfinite(v) and v > 0 for _, v in losses)
    assert run.data.metrics["best_epoch"] == result.best_epoch and run.data.metrics["steps"] == 4
    assert _artifacts(uri, run.info.run_id) == {"config.json", "history.json", "enhancer_pix2pix.md"}
    client = MlflowClient(resolve_tracking_uri(uri))
    config = json.loads(Path(client.download_artifacts(run.info.run_id, "config.json", str(tmp_path))).read_text())
    assert config == json.loads(json.dumps(cfg.to_dict()))
    card = Path(client.download_artifacts(run.info.run_id, "enhancer_pix2pix.md", str(tmp_path)))
    assert card.read_text() == result.weights.with_suffix(".md").read_text()


def test_fit_run_has_settings_per_fold_aucs_summary_and_bundle_json(tmp_path):
    from usher2.fusion.fit import fit_cohort

    feats, manifest = _cohort()
    uri = _store(tmp_path)
    res = fit_cohort(feats, manifest, tmp_path / "bundle", **FIT, selection={"clinical_alpha": 0.5}, track=uri)
    run = _only_run(uri, "usher2-fit")
    assert run.info.status == "FINISHED" and run.info.run_name == "bundle"
    p = run.data.params
    assert (p["family"], p["classifier"], p["outer_folds"], p["inner_folds"]) == ("clinical", "lr", "3", "2")
    assert (p["calibration"], p["clinical"], p["selection.clinical_alpha"]) == ("none", '["age", "ki67"]', "0.5")
    assert p["n_cases"] == "40" and p["n_positive"] == "20" and p["n_columns"] == "2"
    folds = _history(uri, run.info.run_id, "fold_auc")
    assert folds == [(f["fold"], f["auc"]) for f in res.cv.folds] and len(folds) == 3
    m = run.data.metrics
    assert (m["auc"], m["auc_ci_low"], m["auc_ci_high"]) == (
        res.cv.auc["auc"],
        res.cv.auc["ci_low"],
        res.cv.auc["ci_high"],
    )
    assert m["threshold"] == res.threshold and m["n_selected"] == len(res.selected)
    assert _artifacts(uri, run.info.run_id, "bundle") == {"bundle/config.json", "bundle/metrics.json"}


def test_tracking_off_writes_nothing(tmp_path, monkeypatch):
    from usher2.fusion.fit import fit_cohort

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    feats, manifest = _cohort()
    fit_cohort(feats, manifest, tmp_path / "bundle", **FIT)  # track defaults to None
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    assert Tracker().run_id is None


# ------------------------------------------------------------------------------ the command line
def test_cli_tracks_under_the_current_directory_never_the_repository(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from usher2.cli import app

    feats, manifest = _cohort()
    table = pa.Table.from_pandas(feats)
    pq.write_table(
        table.replace_schema_metadata({**table.schema.metadata, b"usher2": b'{"inputs": []}'}), tmp_path / "f.parquet"
    )
    manifest.to_csv(tmp_path / "m.csv", index=False)
    repo_mlruns = sorted((REPO / "mlruns").rglob("*")) if (REPO / "mlruns").exists() else None
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = ["fit", "m.csv", "--features", "f.parquet", *FIT_ARGS]

    result = runner.invoke(app, [*base, "--out", "b1"])  # the default store: ./mlruns
    assert result.exit_code == 0, result.output
    assert _only_run(DEFAULT_TRACKING_URI, "usher2-fit").info.run_name == "b1"
    assert (tmp_path / "mlruns").is_dir()
    assert runner.invoke(app, [*base, "--out", "b2", "--no-track"]).exit_code == 0
    assert _only_run(DEFAULT_TRACKING_URI, "usher2-fit").info.run_name == "b1"  # still the only run
    other = f"file:{tmp_path}/elsewhere"
    result = runner.invoke(app, [*base, "--out", "b4"], env={"MLFLOW_TRACKING_URI": other})
    assert result.exit_code == 0, result.output
    assert _only_run(other, "usher2-fit").info.run_name == "b4"
    after = sorted((REPO / "mlruns").rglob("*")) if (REPO / "mlruns").exists() else None
    assert after == repo_mlruns, "a test wrote MLflow runs into the repository"
