"""The scoring service: every endpoint, numbers equal to the in-memory scorer, hardening, privacy."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

from usher2.explain.render import CONTOUR
from usher2.features.deep import roi_box
from usher2.io.frames import read_frame
from usher2.score.engine import FrameScorer
from usher2.service import TOKEN_ENV, create_app, rle_decode

PATIENT_NAME = "Quorblethwaite^Ximena"
PHI = {
    "PatientName": PATIENT_NAME,
    "PatientID": "PID-44817-ZQ",
    "PatientBirthDate": "19410229",
    "AccessionNumber": "ACC-90210-XJ",
    "InstitutionName": "Hospital Snorkelbury",
}
CLINICAL = {"age": 61, "er": 1, "grade": 2}


# ------------------------------------------------------------------------------------ helpers
class CountingScorer:
    """Wraps a scorer; counts calls and can hold them until released (to fill the queue)."""

    def __init__(self, inner: FrameScorer, *, block: bool = False) -> None:
        self.inner = inner
        self.model_info = inner.model_info
        self.calls = 0
        self.block = block
        self.entered = threading.Event()
        self.release = threading.Event()

    def score_frame(self, frame: Any, clinical: Any = None, **kw: Any) -> Any:
        self.calls += 1
        self.entered.set()
        if self.block and not self.release.wait(30):
            raise TimeoutError("the test never released the scorer")
        return self.inner.score_frame(frame, clinical, **kw)


def _png(b64: str) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB) if arr.ndim == 3 else arr


def _post(client: TestClient, path: Path | bytes, *, name: str = "frame.png", **data: Any) -> Any:
    content = path.read_bytes() if isinstance(path, Path) else path
    form = {k: (json.dumps(v) if k == "clinical" and not isinstance(v, str) else str(v)) for k, v in data.items()}
    return client.post("/v1/score", files={"file": (name, content, "application/octet-stream")}, data=form)


def _write_dicom(path: Path, frames: list[np.ndarray]) -> Path:
    """An 8-bit MONOCHROME2 ultrasound DICOM (multi-frame when given several) carrying PHI tags."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for key, value in PHI.items():
        setattr(ds, key, value)
    ds.Modality = "US"
    ds.Rows, ds.Columns = frames[0].shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = len(frames)
    ds.PixelData = np.stack(frames).astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def images(scoring_bundle) -> list[Path]:
    test = scoring_bundle["test"]
    m = pd.read_csv(test / "manifest.csv")
    return [test / p for p in m["image"][:4]]


@pytest.fixture(scope="module")
def ref(scoring_bundle) -> FrameScorer:
    """The in-memory scorer the service must agree with."""
    return FrameScorer(scoring_bundle["bundle"])


@pytest.fixture(scope="module")
def client(scoring_bundle) -> TestClient:
    return TestClient(create_app(scoring_bundle["bundle"], token=""))


@pytest.fixture(scope="module")
def scored(client, images) -> dict[int, Any]:
    """Responses for images 0 and 1 (0 without clinical values, 1 with), reused by several tests."""
    return {0: _post(client, images[0]), 1: _post(client, images[1], clinical=CLINICAL)}


# -------------------------------------------------------------------------------------- tests
def test_health_model_and_openapi(client, ref):
    h = client.get("/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["model_loaded"] is True
    assert h.headers["x-request-id"]
    m = client.get("/v1/model").json()
    assert m == json.loads(json.dumps(ref.model_info))
    assert m["clinical"] == ["age", "er", "grade"] and len(m["sha256"]) == 64
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/score"]["post"]
    assert "multipart/form-data" in op["requestBody"]["content"]
    assert {"400", "401", "413", "415", "422", "503"} <= set(op["responses"])
    assert any(s.get("scheme") == "bearer" for s in spec["components"]["securitySchemes"].values())
    assert client.get("/docs").status_code == 200


def test_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    doc, csp = r.text, r.headers["content-security-policy"]
    for c in ("age", "er", "grade"):
        assert f'data-clinical="{c}"' in doc
    assert 'type="file"' in doc and 'id="submit"' in doc and 'id="overlay"' in doc
    assert "http://" not in doc and "https://" not in doc and "@import" not in doc
    assert 'id="token"' not in doc  # no token configured
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "img-src data:" in csp


@pytest.mark.parametrize("k", [0, 1])
def test_score_equals_in_memory_scorer(scored, images, ref, k):
    r = scored[k]
    assert r.status_code == 200, r.text
    j = r.json()
    clinical = CLINICAL if k == 1 else None
    want = ref.score_frame(read_frame(images[k]), clinical)
    assert want.probability is not None
    assert j["probability"] == pytest.approx(want.probability, abs=1e-9)
    assert j["threshold"] == pytest.approx(want.threshold, abs=1e-12)
    assert j["label"] == int(j["probability"] >= j["threshold"]) == want.label
    assert j["flags"] == want.flags()
    assert ("clinical_missing" in j["flags"]) == (clinical is None)
    assert j["mask_uncertainty"] == pytest.approx(want.mask_uncertainty, abs=1e-9)
    # The mask: RLE and PNG both give the scorer's mask back, pixel for pixel.
    assert np.array_equal(rle_decode(j["mask_rle"]), want.mask)
    assert np.array_equal(_png(j["mask_png"]), np.where(want.mask, 255, 0).astype(np.uint8))
    assert j["mask_area_px"] == int(want.mask.sum()) == sum(j["mask_rle"]["counts"][1::2])
    # The heat map: round(255 * heat), 0 outside the ROI box.
    heat = _png(j["heatmap_png"]).astype(int)
    assert np.abs(heat - np.uint8(np.clip(want.heat, 0, 1) * 255 + 0.5)).max() <= 1
    # The overlay: the lesion's outer contour is green; outside the heat map's box it is the grey frame.
    ov = _png(j["overlay_png"])
    assert ov.shape == (*want.mask.shape, 3)
    contours, _ = cv2.findContours(want.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = np.concatenate(contours)[:, 0, :]
    assert (ov[pts[:, 1], pts[:, 0]] == CONTOUR).all()  # the one renderer's green (usher2.explain.render)
    y0, y1, x0, x1 = roi_box(want.mask)  # the box the heat was pasted into; outside it the grey frame
    box = np.zeros(want.mask.shape, bool)
    box[max(y0, 0) : y1, max(x0, 0) : x1] = True
    assert not (want.heat[~box] > 0).any()
    outside = ~box & ~cv2.dilate(want.mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    grey = np.uint8(np.clip(want.pixels, 0, 1) * 255 + 0.5)
    assert outside.sum() > 1000 and np.array_equal(ov[outside], np.repeat(grey[outside][:, None], 3, axis=1))
    # Inside the box, JET at 40%: blue channel = round(255 * (0.6 * grey + 0.4 * jet_blue)); JET's blue >= 0.5 at 0.
    inside = box & ~cv2.dilate(want.mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & (want.heat == 0)
    if inside.any():
        assert (ov[inside][:, 2].astype(int) >= 0.6 * grey[inside] + 0.4 * 127 - 1).all()
    assert j["frame"] == {"height": 128, "width": 128, "index": 0, "spacing_mm": None}
    assert j["model"] == {k2: ref.model_info[k2] for k2 in ("name", "version", "sha256")}
    t = j["timings"]
    assert t["total_s"] >= t["score_s"] > 0 and {"queue_s", "read_s", "model_wait_s", "encode_s", "heatmap_s"} <= set(t)
    assert j["request_id"] == r.headers["x-request-id"]
    assert r.headers["cache-control"] == "no-store"


def test_no_lesion_is_200_with_null_probability(client, tmp_path):
    path = tmp_path / "blank.png"
    Image.fromarray(np.full((96, 112), 51, np.uint8)).save(path)  # uniform grey: the segmenter finds nothing
    r = _post(client, path)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["probability"] is None and j["label"] is None and j["flags"] == ["no_lesion"]
    assert "empty predicted mask" in j["error"]
    assert j["mask_png"] is None and j["mask_rle"] is None and j["heatmap_png"] is None
    assert np.array_equal(_png(j["overlay_png"]), np.full((96, 112, 3), 51, np.uint8))  # the frame, untouched


def test_dicom_phi_never_leaves(client, scored, images, ref, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    a = np.asarray(Image.open(images[0]).convert("L"))
    b = np.asarray(Image.open(images[2]).convert("L"))
    path = _write_dicom(tmp_path / "two.dcm", [a, b])
    upload = f"{PATIENT_NAME.replace('^', '_')}.dcm"  # identifiers in the filename too
    r0 = _post(client, path, name=upload)
    r1 = _post(client, path, name=upload, frame=1)
    bad = _post(client, path, name=upload, frame=2)
    for r in (r0, r1):
        assert r.status_code == 200, r.text
    # Frame 0 has the PNG's pixels, so the same probability as the PNG upload; frame 1 is image 2.
    assert r0.json()["probability"] == pytest.approx(scored[0].json()["probability"], abs=1e-12)
    assert r1.json()["frame"]["index"] == 1
    assert r1.json()["probability"] == pytest.approx(ref.score_frame(read_frame(path, 1)).probability, abs=1e-9)
    assert bad.status_code == 422 and bad.json()["field"] == "frame" and "0..1" in bad.json()["detail"]
    out, err = capfd.readouterr()
    logs = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "request_id=" in logs and "status=200" in logs and "bytes_in=" in logs
    for text in (*(r.text + json.dumps(dict(r.headers)) for r in (r0, r1, bad)), logs, out, err):
        for value in (*PHI.values(), "Quorblethwaite", "Ximena", upload):
            assert value not in text


def test_bearer_token(ref, scoring_bundle, monkeypatch):
    counting = CountingScorer(ref)
    c = TestClient(create_app(counting, token="s3cret-token"))
    assert c.get("/healthz").status_code == 200
    page = c.get("/")
    assert page.status_code == 200 and 'id="token"' in page.text
    missing = c.get("/v1/model")
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["field"] == "Authorization" and "no Authorization header" in missing.json()["detail"]
    wrong = c.get("/v1/model", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert c.get("/v1/model", headers={"Authorization": "Basic czNjcmV0"}).status_code == 401
    assert c.get("/v1/model", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    png = scoring_bundle["test"] / pd.read_csv(scoring_bundle["test"] / "manifest.csv")["image"][0]
    r = c.post("/v1/score", files={"file": ("f.png", png.read_bytes())})
    assert r.status_code == 401 and counting.calls == 0  # refused before the body is read
    # The token from the environment; token="" turns authentication off even when it is set.
    monkeypatch.setenv(TOKEN_ENV, "env-token")
    env = TestClient(create_app(counting))
    assert env.get("/v1/model").status_code == 401
    assert env.get("/v1/model", headers={"Authorization": "Bearer env-token"}).status_code == 200
    assert TestClient(create_app(counting, token="")).get("/v1/model").status_code == 200


def test_upload_size_limit(ref, images, caplog):
    caplog.set_level(logging.INFO, logger="usher2.service")
    counting = CountingScorer(ref)
    c = TestClient(create_app(counting, max_upload_mb=0.1))  # 0.1 MiB + 64 KiB of form allowance
    big = b"\x89PNG\r\n\x1a\n" + bytes(300_000)
    r = c.post("/v1/score", files={"file": ("big.png", big)})
    assert r.status_code == 413
    j = r.json()
    assert j["field"] == "request body" and "at most 0.1 MiB" in j["detail"] and "(Content-Length)" in j["got"]
    # Without Content-Length (chunked), the body is counted as it streams in.
    boundary = "usher2test"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'.encode()

    def chunks():
        yield head
        for i in range(0, len(big), 16_384):
            yield big[i : i + 16_384]
        yield f"\r\n--{boundary}--\r\n".encode()

    r = c.post("/v1/score", content=chunks(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and "and counting" in r.json()["got"]
    assert counting.calls == 0
    ok = _post(c, images[0])  # a 13 kB frame is under the limit
    assert ok.status_code == 200 and counting.calls == 1
    assert sum("status=413" in rec.getMessage() for rec in caplog.records) == 2


def test_queue_full_gives_503(ref, images):
    blocking = CountingScorer(ref, block=True)
    c = TestClient(create_app(blocking, max_concurrent=1, max_queue=1))
    results: dict[str, Any] = {}

    def post(key: str, k: int) -> None:
        results[key] = _post(c, images[k])

    running = threading.Thread(target=post, args=("running", 0))
    running.start()
    assert blocking.entered.wait(30)
    waiting = threading.Thread(target=post, args=("waiting", 1))
    waiting.start()
    deadline = time.monotonic() + 30
    while c.get("/healthz").json()["batch_queue"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    health = c.get("/healthz").json()
    # one in the model, one read and queued for the next batch: the batch queue counts toward the limit
    assert health["pending"] == health["batch_queue"] == 2 and health["capacity"] == 2
    full = _post(c, images[2])
    blocking.release.set()
    running.join(30)
    waiting.join(30)
    assert full.status_code == 503
    assert int(full.headers["retry-after"]) >= 1
    assert full.json()["field"] == "service" and "at most 1 waiting and 1 running requests" in full.json()["detail"]
    assert results["running"].status_code == results["waiting"].status_code == 200
    assert blocking.calls == 2  # the refused request never reached the scorer
    want = ref.score_frame(read_frame(images[1])).probability
    assert results["waiting"].json()["probability"] == pytest.approx(want, abs=1e-9)
    waited = results["waiting"].json()["timings"]
    assert waited["model_wait_s"] > 0 and waited["batch_size"] == 1  # it queued behind the held batch
    assert c.get("/healthz").json()["pending"] == 0


def test_concurrent_requests_give_the_serial_results(scoring_bundle, images, ref):
    """Four threads score at once; probabilities and Grad-CAM maps equal the one-at-a-time ones.

    Requests that arrive together share a batch through the networks, where a float32 output
    differs in its last bits with the batch it runs in (usher2.score.engine's docstring): hence
    1e-6 in probability rather than bit for bit (test_batching.py's BATCHED_PROB_TOL says more).
    """
    c = TestClient(create_app(ref, max_concurrent=2, max_queue=4))
    got: dict[int, Any] = {}
    threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, _post(c, images[k]))) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for k in range(4):
        assert got[k].status_code == 200, got[k].text
        want = ref.score_frame(read_frame(images[k]))
        assert got[k].json()["probability"] == pytest.approx(want.probability, abs=1e-6)
        heat = _png(got[k].json()["heatmap_png"]).astype(int)
        assert np.abs(heat - np.uint8(np.clip(want.heat, 0, 1) * 255 + 0.5)).max() <= 1


@pytest.mark.parametrize(
    ("send", "status", "field", "words"),
    [
        ({"data": {"clinical": "{}"}}, 400, "file", ["multipart/form-data field 'file'", "no file field"]),
        ({"data": {"file": "Doe^Jane"}}, 422, "file", ["uploaded file part", "a text field"]),
        ({"content": b""}, 400, "file", ["non-empty", "0 bytes"]),
        ({"content": b"just some text\n"}, 415, "file", ["PNG, JPEG, TIFF or BMP image or a DICOM", "15 bytes"]),
        ({"content": b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(64)}, 415, "file", ["one frame", "a video"]),
        ({"truncate": 200}, 422, "file", ["complete", "corrupt or truncated"]),
        ({"clinical": "{'age': 50}"}, 400, "clinical", ["a JSON object", "invalid JSON"]),
        ({"clinical": "[50, 1, 2]"}, 422, "clinical", ["a JSON object", "got an array"]),
        ({"clinical": '{"agee": 50}'}, 422, "clinical", ["age, er, grade", "unknown key 'agee'"]),
        ({"clinical": '{"age": "fifty"}'}, 422, "clinical.age", ["a number or null", "got a string"]),
        ({"clinical": '{"er": true}'}, 422, "clinical.er", ["a number or null", "0/1"]),
        ({"clinical": '{"age": NaN}'}, 422, "clinical.age", ["finite", "NaN"]),
        ({"frame": "first"}, 422, "frame", ["integer >= 0", "'first'"]),
        ({"frame": "1"}, 422, "frame", ["frame index 0", "got 1"]),
    ],
)
def test_bad_uploads_name_field_expected_and_got(ref, images, send, status, field, words):
    counting = CountingScorer(ref)
    c = TestClient(create_app(counting))
    png = images[0].read_bytes()
    if "data" in send:
        r = c.post("/v1/score", data=send["data"])
    else:
        content = send.get("content", png[: send["truncate"]] if "truncate" in send else png)
        form = {k: send[k] for k in ("clinical", "frame") if k in send}
        r = c.post("/v1/score", files={"file": ("upload.bin", content, "application/octet-stream")}, data=form)
    assert r.status_code == status, r.text
    j = r.json()
    assert j["field"] == field and j["detail"].startswith(f"{field}: expected ")
    for w in words:
        assert w in j["detail"], j["detail"]
    assert j["request_id"] == r.headers["x-request-id"]
    assert "upload.bin" not in r.text and "Doe" not in r.text  # neither the filename nor a value is echoed
    assert counting.calls == 0
