"""Model bundles: round trip without pickle, tamper detection, and refusal of untrusted types."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from usher2.fusion.bundle import HASHES, TRUSTED_TYPES, load_bundle, save_bundle
from usher2.fusion.cv import fit_final, nested_cv
from usher2.fusion.fit import youden_threshold
from usher2.fusion.models import build_model, family_columns
from usher2.io.errors import InputError
from usher2.io.hashing import file_sha256

sys.path.insert(0, str(Path(__file__).parent))
from test_models import _data


@pytest.fixture(scope="module")
def fitted():
    X, y = _data(160)
    model, grid = build_model(family_columns(X.columns, "combined", clinical=["age"]), "lightgbm")
    cv = nested_cv(model, grid, X, y, outer_folds=3)
    final, best = fit_final(model, grid, X, y)
    return X, y, cv, final, best


def _save(tmp_path: Path, fitted, name: str = "b") -> Path:
    X, _, cv, final, best = fitted
    cols = list(X.columns)
    config = {
        "columns": cols,
        "threshold": youden_threshold(cv.oof["label"], cv.oof["probability"]),
        "best_params": best,
    }
    return save_bundle(tmp_path / name, final, config, {"auc": cv.auc}, cv.oof)


def test_round_trip_gives_the_same_probabilities(tmp_path, fitted):
    X, _, cv, final, _ = fitted
    path = _save(tmp_path, fitted)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", HASHES, "metrics.json", "model.skops", "oof.csv"]
    b = load_bundle(path)
    np.testing.assert_array_equal(b.predict_proba(X), final.predict_proba(X)[:, 1])
    assert 0 < b.threshold < 1 and b.metrics["auc"]["auc"] == pytest.approx(cv.auc["auc"])
    oof = pd.read_csv(path / "oof.csv", index_col="case_id")
    assert list(oof.columns) == ["patient_id", "fold", "label", "probability"] and len(oof) == len(X)
    with pytest.raises(InputError, match="missing"):
        b.predict_proba(X.drop(columns=["age"]))
    with pytest.raises(InputError, match="existing path"):
        _save(tmp_path, fitted)


def test_a_changed_file_is_refused_as_tampered(tmp_path, fitted):
    path = _save(tmp_path, fitted)
    cfg = json.loads((path / "config.json").read_text())
    cfg["threshold"] = 0.01
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="tampered"):
        load_bundle(path)


def test_a_crafted_bundle_with_an_untrusted_type_is_refused_and_nothing_runs(tmp_path, fitted):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    path = _save(tmp_path, fitted)
    marker = tmp_path / "PWNED"
    evil = FunctionTransformer(func=os.system, kw_args={"command": f"touch {marker}"})
    sio.dump(evil, path / "model.skops")
    hashes = json.loads((path / HASHES).read_text())
    hashes["model.skops"] = file_sha256(path / "model.skops")  # an attacker can rewrite the hash list too
    (path / HASHES).write_text(json.dumps(hashes))
    with pytest.raises(InputError, match="system") as err:
        load_bundle(path)
    assert "unknown types" in str(err.value) and not marker.exists()
    assert not any("system" in t for t in TRUSTED_TYPES)


def test_not_a_bundle(tmp_path):
    with pytest.raises(InputError, match=r"hashes\.json"):
        load_bundle(tmp_path)
