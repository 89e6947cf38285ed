"""The hostile-input probe of issue 22 §5 as tests: every case gets a 4xx with the service's error
body (``field/expected/got/fix/request_id``) or a per-case failure, never a 500 or a traceback.

Elsewhere, the same probe's other cases:

* pixel bombs (grey/RGB PNG, deflated DICOM): ``tests/io/test_decode_limits.py``,
  ``tests/service/test_pixel_limits.py``;
* crafted bundles (bad tree arrays, ``hashes.json`` as a list, invalid ``config.json``, traversal
  names, signatures): ``tests/fusion/test_bundle_validation.py``, ``tests/service/test_bundle_refusal.py``;
* crafted skops types, tampered files: ``tests/fusion/test_bundle.py``; a pickled backbone:
  ``tests/features/test_deep.py``; token checks, an oversized body, PHI in tags and the file name:
  ``tests/service/test_app.py``.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from usher2.cli import app as cli
from usher2.fusion.clinical import CLINICAL_MARGIN
from usher2.service.app import MAX_CLINICAL_CHARS, create_app

sys.path.insert(0, str(Path(__file__).parents[1] / "io"))  # tests/io is no package ("io" is taken)
from io_helpers import PHI, write_dicom

ERROR_KEYS = {"detail", "field", "expected", "got", "fix", "request_id"}


@pytest.fixture(scope="module")
def client(scoring_bundle) -> TestClient:
    return TestClient(create_app(scoring_bundle["bundle"], token="", cam=None), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def ranges(scoring_bundle) -> dict:
    return json.loads((scoring_bundle["bundle"] / "config.json").read_text())["clinical_ranges"]


@pytest.fixture(scope="module")
def png(scoring_bundle) -> bytes:
    test = scoring_bundle["test"]
    return (test / pd.read_csv(test / "manifest.csv")["image"][0]).read_bytes()


def _post(client: TestClient, png: bytes, **data: str):
    return client.post("/v1/score", files={"file": ("f.png", png, "image/png")}, data=data)


def _error(r, status: int, field: str) -> dict:
    assert r.status_code == status, r.text
    j = r.json()
    assert set(j) == ERROR_KEYS and j["request_id"] == r.headers["x-request-id"]
    assert j["field"] == field, j
    return j


def test_deeply_nested_clinical_json_is_a_400_not_a_500(client, png):
    deep = "[" * 2000 + "]" * 2000  # within the size limit, past json's recursion limit (1000)
    assert len(deep) <= MAX_CLINICAL_CHARS
    j = _error(_post(client, png, clinical=deep), 400, "clinical")
    assert "deeply nested" in j["got"]
    huge = '{"age": ' + "[" * 100_000 + "]" * 100_000 + "}"
    j = _error(_post(client, png, clinical=huge), 413, "clinical")
    assert j["got"] == f"{len(huge)} characters" and str(MAX_CLINICAL_CHARS) in j["expected"]


def test_clinical_far_outside_the_training_range_is_refused(client, png, ranges):
    lo, hi = ranges["age"]["min"], ranges["age"]["max"]
    j = _error(_post(client, png, clinical=json.dumps({"age": -5000})), 422, "clinical.age")
    assert f"{lo:g}-{hi:g}" in j["expected"] and "below" in j["got"] and "-5000" not in j["detail"]
    # Just past the margin is refused too; just inside it is scored, and flagged.
    edge = hi + CLINICAL_MARGIN * (hi - lo)
    _error(_post(client, png, clinical=json.dumps({"age": edge + 0.01})), 422, "clinical.age")
    r = _post(client, png, clinical=json.dumps({"age": edge - 0.01}))
    assert r.status_code == 200, r.text
    assert "clinical_out_of_range" in r.json()["flags"] and r.json()["probability"] is not None
    r = _post(client, png, clinical=json.dumps({"age": (lo + hi) / 2, "er": 1, "grade": ranges["grade"]["max"]}))
    assert r.status_code == 200 and "clinical_out_of_range" not in r.json()["flags"]


def test_non_numeric_clinical_is_an_error_not_a_silent_imputation(client, png):
    j = _error(_post(client, png, clinical=json.dumps({"age": "abc"})), 422, "clinical.age")
    assert "abc" not in j["detail"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=xyz", b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nab'),
        ("multipart/form-data", b"--xyz\r\n\r\n"),  # no boundary
        ("multipart/form-data; boundary=xyz", b"\x00\xff" * 64),
    ],
    ids=["unterminated", "no-boundary", "garbage"],
)
def test_malformed_multipart_gets_the_documented_error_body(client, content_type, body):
    r = client.post("/v1/score", content=body, headers={"Content-Type": content_type})
    assert 400 <= r.status_code < 500, r.text
    j = r.json()
    assert set(j) == ERROR_KEYS and j["request_id"] == r.headers["x-request-id"]


def test_unknown_path_and_method_use_the_error_body(client):
    j = _error(client.get("/v1/nothing"), 404, "path")
    assert "endpoints" in j["expected"]
    _error(client.get("/v1/score"), 405, "path")


def test_dicom_tag_values_are_never_echoed(client, tmp_path, caplog, capfd):
    frame = np.full((64, 64), 80, np.uint8)
    path = tmp_path / "odd.dcm"
    with warnings.catch_warnings():  # pydicom may warn on writing the invalid value (the test's own doing)
        warnings.simplefilter("ignore")
        write_dicom(path, frame.tobytes(), rows=64, cols=64, frames=1, photometric="QUORBLETHWAITE^XIMENA")
    capfd.readouterr()
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    r = client.post("/v1/score", files={"file": ("x.dcm", path.read_bytes(), "application/dicom")})
    assert r.status_code == 422, r.text
    assert "PhotometricInterpretation" in r.json()["detail"]
    out, err = capfd.readouterr()
    logs = "\n".join(rec.getMessage() for rec in caplog.records)
    for text in (r.text, out, err, logs):  # neither the answer nor pydicom's own warnings and logs
        for value in ("QUORBLETHWAITE", "XIMENA", *PHI.values()):
            assert value not in text


def test_page_and_model_endpoint_agree_on_the_token(scoring_bundle):
    open_ = TestClient(create_app(scoring_bundle["bundle"], token="", cam=None))
    info = open_.get("/v1/model").json()
    page = open_.get("/").text
    assert info["sha256"][:12] in page and f"{info['threshold']:.3f}" in page
    closed = TestClient(create_app(scoring_bundle["bundle"], token="s3cret", cam=None))
    assert closed.get("/v1/model").status_code == 401
    page = closed.get("/").text
    for secret in (info["sha256"][:12], f"{info['threshold']:.3f}", info["name"], 'data-clinical="age"'):
        assert secret not in page
    assert closed.get("/v1/model", headers={"Authorization": "Bearer s3cret"}).json() == info


def test_cli_reports_bad_clinical_cases_and_scores_the_rest(scoring_bundle, ranges, tmp_path, torch_one_thread):
    test = scoring_bundle["test"]
    man = pd.read_csv(test / "manifest.csv", dtype={"case_id": str}).iloc[:3].copy()
    man["image"] = [str((test / p).resolve()) for p in man["image"]]
    man = man.drop(columns=["mask"], errors="ignore")
    lo, hi = ranges["age"]["min"], ranges["age"]["max"]
    man["age"] = man["age"].astype(object)
    man.loc[man.index[0], "age"] = "abc"
    man.loc[man.index[1], "age"] = -5000
    man.loc[man.index[2], "age"] = hi + 0.25 * (hi - lo)  # outside the range, inside the margin
    man.to_csv(tmp_path / "m.csv", index=False)
    bundle = str(scoring_bundle["bundle"])
    for out in (tmp_path / "s.csv", tmp_path / "dir"):
        r = CliRunner().invoke(cli, ["score", str(tmp_path / "m.csv"), "--bundle", bundle, "--out", str(out)])
        assert r.exit_code == 1, r.output  # some cases failed; the run went on
        fails = pd.read_csv(out.with_name("s.failures.csv") if out.suffix else out / "failures.csv")
        fails = fails.set_index("case_id")["error"]
        ids = man["case_id"].tolist()
        assert sorted(fails.index) == sorted(ids[:2])
        assert "clinical.age" in fails[ids[0]] and "non-numeric" in fails[ids[0]]
        assert "clinical.age" in fails[ids[1]] and "below" in fails[ids[1]]
        rows = pd.read_csv(out if out.suffix else out / "frames.csv", dtype={"case_id": str})
        rows = rows[rows["case_id"] == ids[2]]
        assert len(rows) == 1 and bool(rows["clinical_out_of_range"].iloc[0])
        assert rows["probability"].notna().all()
