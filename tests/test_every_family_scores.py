"""Every model family that ``usher2 fit`` writes can be scored frame by frame through every door.

Issue 22 §4: a ``--model radiomics`` bundle recorded the family's columns in ``config["columns"]``
but was fitted on the whole table, so only the CSV path could score it. Here each family (early
fusion, and the two families with a late-fusion variant) is fitted on the session's small
simulated cohort, and one held-out frame with its clinical values is scored through
``usher2 score --out DIR``, ``usher2 score --out S.csv`` and ``POST /v1/score``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from usher2.cli import app
from usher2.service.app import create_app

runner = CliRunner()

CLINICAL = ("age", "er", "grade")
MODELS = [
    ("clinical", "early"),
    ("radiomics", "early"),
    ("deep", "early"),
    ("dlr", "early"),
    ("combined", "early"),
    ("dlr", "late"),
    ("combined", "late"),
]


@pytest.fixture(scope="module")
def frame(scoring_bundle, tmp_path_factory) -> dict:
    """A one-row manifest of the first held-out case with its clinical values."""
    test = scoring_bundle["test"]
    man = pd.read_csv(test / "manifest.csv", dtype={"case_id": str})
    row = man.iloc[[0]].copy()
    row["image"] = [str((test / p).resolve()) for p in row["image"]]
    row = row.drop(columns=[c for c in ("mask",) if c in row.columns])
    d = tmp_path_factory.mktemp("one_frame")
    row.to_csv(d / "manifest.csv", index=False)
    clinical = {c: float(row[c].iloc[0]) for c in CLINICAL}
    return {"manifest": d / "manifest.csv", "image": Path(row["image"].iloc[0]), "clinical": clinical}


@pytest.mark.slow
@pytest.mark.parametrize(("family", "fusion"), MODELS, ids=[f"{f}-{u}" for f, u in MODELS])
def test_family_scores_equally_through_every_door(
    family, fusion, scoring_bundle, frame, tmp_path, torch_one_thread
) -> None:
    features = scoring_bundle["bundle"].parent.parent / "train_features.parquet"
    bundle = tmp_path / "bundle"
    args = ["fit", str(scoring_bundle["train"] / "manifest.csv"), "--features", str(features), "--out", str(bundle)]
    args += ["--model", family, "--fusion", fusion, "--outer-folds", "3", "--inner-folds", "2"]
    args += ["--calibration", "none"]
    if family in ("clinical", "combined"):
        for c in CLINICAL:
            args += ["--clinical", c]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    config = json.loads((bundle / "config.json").read_text())
    from usher2.fusion.bundle import load_bundle

    fitted = load_bundle(bundle).model
    # The cause of the bug: the model must read exactly the recorded columns, in order.
    assert [str(c) for c in fitted.feature_names_in_] == config["columns"]

    csv = tmp_path / "s.csv"
    r = runner.invoke(app, ["score", str(frame["manifest"]), "--bundle", str(bundle), "--out", str(csv)])
    assert r.exit_code == 0, r.output
    p_csv = float(pd.read_csv(csv)["probability"].iloc[0])

    folder = tmp_path / "dir"
    r = runner.invoke(
        app, ["score", str(frame["manifest"]), "--bundle", str(bundle), "--out", str(folder), "--no-report"]
    )
    assert r.exit_code == 0, r.output
    p_dir = float(pd.read_csv(folder / "frames.csv")["probability"].iloc[0])

    client = TestClient(create_app(bundle, token="", cam=None))
    with frame["image"].open("rb") as fh:
        files = {"file": (frame["image"].name, fh, "image/png")}
        data = {"clinical": json.dumps(frame["clinical"])} if config["clinical"] else {}
        resp = client.post("/v1/score", files=files, data=data)
    assert resp.status_code == 200, resp.text
    p_http = resp.json()["probability"]

    assert np.isfinite(p_csv) and 0.0 < p_csv < 1.0
    # The three doors compute the same float32 features by different code paths (the cohort
    # extractor vs the batched frame scorer), so the probabilities agree to float32 precision, not
    # bit for bit: measured up to 2.1e-7 relative between batch compositions and 7.9e-7 between
    # AVX-512 and AVX2 kernels (see FLOAT32_PATHS_REL in tests/test_cli_score_dir.py); 1e-5 clears
    # that tenfold, while a real disagreement (another column order, mask or model) moves p by far more.
    assert p_dir == pytest.approx(p_csv, rel=1e-5)
    assert p_http == pytest.approx(p_csv, rel=1e-5)
