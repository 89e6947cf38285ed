"""Every door refuses the crafted bundle of issue 22 (a tree child index of 2**40, hashes.json
updated) at load, before any prediction: the CLI in-process and as a process (exit 2, where the
unchecked model segfaults), and the service; and --sign/--verify tell a user's bundles from
altered ones in ``fit``, ``score``, ``serve`` and ``report``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from usher2.cli import app
from usher2.fusion.bundle import SIGNATURE, load_bundle, sign_bundle
from usher2.io.errors import InputError
from usher2.service import create_app

sys.path.insert(0, str(Path(__file__).parents[1] / "fusion"))
from test_bundle_validation import KEY, crafted_tree_bundle, fit_model, rehash, save

runner = CliRunner()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> Path:
    """``bad/`` (the crafted random forest), ``good/`` (the same forest, unsigned), a frame and a key file."""
    root = tmp_path_factory.mktemp("refusal")
    crafted_tree_bundle(root / "bad")
    model, X, _ = fit_model("rf")
    save(root / "good", model, X)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(root / "frame.png")
    (root / "bundle.key").write_bytes(KEY + b"\n")
    return root


def _score(bundles: Path, bundle: str, out: Path, *extra: str, env: dict[str, str] | None = None):
    args = ["score", str(bundles / "frame.png"), "--bundle", str(bundles / bundle), "--out", str(out), *extra]
    return runner.invoke(app, args, env=env)


@pytest.mark.parametrize("out", ["folder", "scores.csv"])
def test_cli_score_refuses_the_crafted_bundle_with_a_named_error(bundles, tmp_path, out):
    result = _score(bundles, "bad", tmp_path / out)
    assert result.exit_code == 2, result.output
    assert "estimators_[0] (DecisionTreeClassifier): tree_.children_left[0]" in result.output
    assert "got 1099511627776" in result.output and not (tmp_path / out).exists()


def test_the_cli_process_exits_2_where_the_unchecked_model_segfaults(bundles, tmp_path):
    # the control: built by skops without the checks, the model's first prediction kills the process
    crash = (
        "import sys, skops.io as sio, pandas as pd, json; d = sys.argv[1]; "
        "m = sio.load(d + '/model.skops', trusted=sio.get_untrusted_types(file=d + '/model.skops')); "
        "cols = json.load(open(d + '/config.json'))['columns']; "
        "m.predict_proba(pd.DataFrame([[0.0] * len(cols)], columns=cols))"
    )
    control = subprocess.run([sys.executable, "-c", crash, str(bundles / "bad")], capture_output=True, timeout=300)
    assert control.returncode == -11, control.stderr[-2000:]  # SIGSEGV (a shell reports 139)
    args = ["score", str(bundles / "frame.png"), "--bundle", str(bundles / "bad"), "--out", str(tmp_path / "s.csv")]
    proc = subprocess.run([sys.executable, "-m", "usher2.cli", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "tree_.children_left[0]" in proc.stderr and "Traceback" not in proc.stderr


def test_the_library_and_the_service_refuse_the_crafted_bundle(bundles):
    with pytest.raises(
        InputError, match=r"tree_\.children_left\[0\]: expected -1 or a node index in \[1, \d+\), got 1099511627776"
    ):
        load_bundle(bundles / "bad")
    with pytest.raises(InputError, match=r"tree_\.children_left\[0\].*got 1099511627776"):
        create_app(bundles / "bad", token="", cam=None)


def test_verify_refuses_an_unsigned_bundle_in_every_door(bundles, tmp_path):
    key = str(bundles / "bundle.key")
    result = _score(bundles, "good", tmp_path / "s.csv", "--verify", key)
    assert result.exit_code == 2 and "signature.json: expected the bundle's signature" in result.output
    result = _score(bundles, "good", tmp_path / "s.csv", env={"USHER2_BUNDLE_KEY_FILE": key})
    assert result.exit_code == 2 and "signature.json" in result.output
    result = runner.invoke(app, ["serve", "--bundle", str(bundles / "good"), "--verify", key])
    assert result.exit_code == 2 and "signature.json" in result.output
    result = runner.invoke(app, ["report", str(bundles / "good"), "--out", str(tmp_path / "r.html"), "--verify", key])
    assert result.exit_code == 2 and "signature.json" in result.output and not (tmp_path / "r.html").exists()
    with pytest.raises(InputError, match=r"signature\.json"):
        create_app(bundles / "good", token="", cam=None, verify_key=KEY)
    result = _score(bundles, "good", tmp_path / "s.csv", "--verify", str(tmp_path / "no.key"))
    assert result.exit_code == 2 and "no.key: expected a key file" in result.output


def test_fit_sign_then_report_verify(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = tmp_path / "bundle.key"
    key.write_bytes(KEY)
    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(60)]
    y = np.tile([0, 1], 30)
    feats = pd.DataFrame(rng.normal(size=(60, 6)), columns=[f"radiomics_f{i}" for i in range(6)])
    feats["radiomics_f0"] += 1.5 * y
    table = pa.Table.from_pandas(feats.assign(case_id=ids), preserve_index=False)
    pq.write_table(
        table.replace_schema_metadata({b"usher2": json.dumps({"inputs": []}).encode()}), tmp_path / "f.parquet"
    )
    manifest = pd.DataFrame({"case_id": ids, "patient_id": ids, "image": ids, "mask": ids, "label": y})
    manifest.to_csv(tmp_path / "m.csv", index=False)
    args = ["fit", str(tmp_path / "m.csv"), "--features", str(tmp_path / "f.parquet"), "--out", str(tmp_path / "b")]
    args += ["--model", "radiomics", "--outer-folds", "2", "--inner-folds", "2", "--calibration", "none"]
    # a missing key file fails before the fit, not after it
    result = runner.invoke(app, [*args, "--sign", str(tmp_path / "none.key")])
    assert (
        result.exit_code == 2 and "none.key: expected a key file" in result.output and "nested CV" not in result.output
    )
    result = runner.invoke(app, [*args, "--sign", str(key)])
    assert result.exit_code == 0, result.output
    assert f"signed: {tmp_path / 'b' / SIGNATURE}" in result.output.replace("\n", "")
    assert load_bundle(tmp_path / "b", verify_key=KEY).verified
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", str(tmp_path / "b"), "--out", str(out), "--verify", str(key)])
    assert result.exit_code == 0 and out.is_file(), result.output
    # altered after signing (threshold changed, hashes.json rewritten): refused with the key
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    (tmp_path / "b" / "config.json").write_text(json.dumps({**cfg, "threshold": 0.01}))
    rehash(tmp_path / "b")
    result = runner.invoke(app, ["report", str(tmp_path / "b"), "--out", str(out), "--verify", str(key)])
    assert result.exit_code == 2 and "changed after signing" in result.output


def test_a_signed_bundle_is_served_with_its_key(scoring_bundle, tmp_path):
    signed = Path(shutil.copytree(scoring_bundle["bundle"], tmp_path / "b"))
    sign_bundle(signed, KEY)
    client = TestClient(create_app(signed, token="", cam=None, verify_key=KEY))
    assert client.get("/healthz").status_code == 200
    with pytest.raises(InputError, match="changed after signing"):
        create_app(signed, token="", cam=None, verify_key=b"not the key the bundle was signed with")
