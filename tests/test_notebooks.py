"""The notebooks in ``notebooks/`` run end to end, and what they print follows from the files they write.

Each notebook runs under nbclient in this interpreter's own kernel (a kernel spec written into the
test's temporary folder, so nothing is registered globally), with ``notebooks/`` as the working
directory. The test sizes are injected after the cell tagged ``parameters``, as papermill does, and
``OUT_DIR`` points into the temporary folder: nothing is written into the repository. The executed
notebooks are saved beside the outputs (``tmp_path/<name>``) for inspection.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT = 300  # seconds per cell; the test sizes need well under a minute for any cell


def _inject(nb: nbformat.NotebookNode, params: dict[str, Any]) -> None:
    """Insert ``NAME = value`` lines after the cell tagged ``parameters`` (papermill's rule)."""
    where = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(where) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    text = "# injected by tests/test_notebooks.py\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(text)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(where[0] + 1, cell)


def _execute(name: str, params: dict[str, Any], tmp_path: Path) -> nbformat.NotebookNode:
    """Run ``notebooks/<name>`` with ``params`` injected; fail on any error output."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    _inject(nb, params)
    spec = tmp_path / "kernels" / "usher2-test"
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "usher2 test", "language": "python"}))
    km = KernelManager(kernel_name="usher2-test", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]))
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / name)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    return nb


def _stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "stream" and o.get("name") == "stdout"
    )


def _summary(nb: nbformat.NotebookNode) -> dict[str, Any]:
    """The one-line JSON summary the last code cell prints."""
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    lines = [line for o in last.outputs if o.output_type == "stream" for line in o.text.splitlines()]
    found = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(found) == 1, lines
    return found[0]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel inherits the environment: one thread per library, as CI's 2 shared cores need."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")


def test_committed_notebooks_have_no_outputs_and_one_parameters_cell():
    for name in ("quickstart.ipynb", "bus_bra.ipynb"):
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name}: strip the outputs"
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "OUT_DIR" in tagged[0].source, name


@pytest.mark.slow
def test_quickstart_runs_and_its_aucs_follow_from_its_predictions(tmp_path):
    from usher2.io.manifest import read_manifest
    from usher2.simulate import SimulationConfig, oracle_aucs

    out = tmp_path / "out"
    n_train, n_test, size = 40, 30, 128
    nb = _execute(
        "quickstart.ipynb",
        {"N_TRAIN": n_train, "N_TEST": n_test, "IMAGE_SIZE": size, "OUT_DIR": str(out)},
        tmp_path,
    )
    s = _summary(nb)
    run = Path(s["run_dir"])
    assert run == (out / "run").resolve() and s["n_train"] == n_train and s["n_test"] == n_test
    assert set(s["auc"]) == {"clinical", "radiomics", "combined"}

    pred = pd.read_csv(run / "predictions.csv", dtype={"case_id": str, "patient_id": str})
    auc_csv = pd.read_csv(run / "auc.csv").set_index("model")
    counts = pred.groupby(["model", "split"]).size().unstack()
    assert (counts["train_oof"] == n_train).all() and (counts["test"] == n_test).all()
    test_manifest = read_manifest(out / f"cohorts_{size}px_seed0" / "test" / "manifest.csv", check_files=False)
    oracle = oracle_aucs(test_manifest, SimulationConfig(image_size=(size, size)))
    family_oracle = {"clinical": "clinical", "radiomics": "image", "combined": "all"}
    for model, printed in s["auc"].items():
        for split, key in (("test", "test"), ("train_oof", "cv")):
            p = pred[(pred["model"] == model) & (pred["split"] == split)]
            recomputed = roc_auc_score(p["label"].astype(int), p["probability"])
            assert 0.0 <= printed[key] <= 1.0
            assert printed[key] == pytest.approx(recomputed, abs=1e-12), (model, split)
            assert auc_csv.loc[model, f"{key}_auc"] == pytest.approx(recomputed, abs=1e-12)
        assert printed["oracle"] == pytest.approx(oracle[family_oracle[model]], abs=1e-12)
        assert 0.5 <= printed["oracle"] <= 1.0

    # the new frame is labelled at the primary (last) model's training threshold
    thresholds = json.loads((run / "thresholds.json").read_text())
    new = s["new_frame"]
    assert 0.0 <= new["probability"] <= 1.0
    assert new["label"] == int(new["probability"] >= thresholds["combined"])
    assert (run / "report.html").stat().st_size > 10_000
    assert all((out / "figures" / f).is_file() for f in ("roc_test.png", "roc_test.svg", "calibration_test.png"))
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # frames, ROC, calibration, Grad-CAM, the new frame


@pytest.mark.slow
def test_bus_bra_without_the_data_says_so_and_stops_cleanly(tmp_path):
    out = tmp_path / "out"
    nb = _execute("bus_bra.ipynb", {"BUS_BRA_ROOT": str(tmp_path / "absent"), "OUT_DIR": str(out)}, tmp_path)
    assert _summary(nb) == {"notebook": "bus_bra", "data": False}
    assert "BUS-BRA is not available" in _stdout(nb)
    assert not out.exists()  # nothing was written
    assert not any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.slow
def test_bus_bra_splits_by_patient_and_its_aucs_follow_from_its_predictions(tmp_path, bus_bra_root):
    out = tmp_path / "out"
    n_patients = 40
    nb = _execute(
        "bus_bra.ipynb",
        {"N_PATIENTS": n_patients, "BUS_BRA_ROOT": str(bus_bra_root), "OUT_DIR": str(out)},
        tmp_path,
    )
    s = _summary(nb)
    assert s["data"] is True and s["n_patients"] == n_patients
    assert set(s["auc"]) == {"radiomics", "BI-RADS", "radiomics + BI-RADS"}

    data = pd.read_csv(bus_bra_root / "bus_data.csv", dtype={"ID": str, "Case": str})
    official = pd.read_csv(bus_bra_root / "5-fold-cv.csv", dtype={"ID": str}).set_index("ID")["kFold"]
    frames_per_patient = data.groupby("Case").size()
    pred = pd.read_csv(s["predictions"], dtype={"case_id": str, "patient_id": str})
    for model, printed in s["auc"].items():
        p = pred[pred["model"] == model]
        assert p["case_id"].is_unique and len(p) == s["n_frames"]
        assert p["patient_id"].nunique() == n_patients
        # split by patient: a patient's frames are all there, and all in one outer fold
        sizes = p.groupby("patient_id").size()
        assert (sizes.to_numpy() == frames_per_patient.loc[sizes.index].to_numpy()).all()
        assert (p.groupby("patient_id")["fold"].nunique() == 1).all()
        # the outer folds are BUS-BRA's official ones, one to one
        assert (p["official_fold"].to_numpy() == official.loc[p["case_id"]].to_numpy()).all()
        assert (p.groupby("fold")["official_fold"].nunique() == 1).all()
        assert p.groupby("fold")["official_fold"].first().is_unique
        recomputed = roc_auc_score(p["label"], p["probability"])
        assert printed["auc"] == pytest.approx(recomputed, abs=1e-12), model
        assert 0.0 <= printed["ci_low"] <= printed["auc"] <= printed["ci_high"] <= 1.0
    assert np.isfinite(pred["probability"]).all()
    assert (out / "figures" / "roc_bus_bra.png").is_file()
