"""``usher2 score INPUT --out DIR`` (frames, sequences, overlays, report), ``usher2 evaluate`` and
``usher2 report BUNDLE``, on the small fitted bundle of the ``scoring_bundle`` fixture."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from usher2.cli import app
from usher2.evaluate import roc_auc_ci
from usher2.score.folder import temporal_aggregate

sys.path.insert(0, str(Path(__file__).parent / "io"))  # tests/io is no package ("io" is taken)
from io_helpers import PHI, write_dicom

runner = CliRunner()

# The CSV path (cohort extraction), the folder path (frames batched by shape) and Pipeline.score reach a probability
# through float32 networks (eps 1.2e-7) run on different batches: the features differ in their last bits and the
# logit by a few float32 ulps, which moves p by at most that much relative (dp/p = (1 - p) dlogit). Measured: 7.7e-8
# between these paths on an AMD EPYC, up to 2.1e-7 between batch compositions and 7.9e-7 between AVX-512 and AVX2
# kernels on the simulated test frames. 1e-5 (~100 float32 ulps) clears those 10x; a real disagreement (another
# crop, mask, frame or model) moves p far more: one mask pixel alone moves the shape features by ~1e-3.
FLOAT32_PATHS_REL = 1e-5


@pytest.fixture(scope="module")
def inputs(scoring_bundle, tmp_path_factory):
    """2 PNG frames, a 5-frame MJPG video, a 4-frame DICOM (with PHI) and an unreadable file."""
    src = tmp_path_factory.mktemp("score_in")
    man = pd.read_csv(scoring_bundle["test"] / "manifest.csv")
    imgs = [scoring_bundle["test"] / p for p in man["image"]]
    for p in imgs[:2]:
        shutil.copy(p, src / p.name)
    grey = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in imgs[2:7]]
    h, w = grey[0].shape
    vw = cv2.VideoWriter(str(src / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for g in grey:
        vw.write(cv2.cvtColor(g, cv2.COLOR_GRAY2BGR))
    vw.release()
    write_dicom(src / "cine.dcm", np.stack(grey[:4]).astype(np.uint8).tobytes(), rows=h, cols=w, frames=4)
    (src / "broken.png").write_bytes(b"not a png at all")
    return src, imgs


@pytest.fixture(scope="module")
def scored(scoring_bundle, inputs, tmp_path_factory, torch_one_thread):
    src, _ = inputs
    out = tmp_path_factory.mktemp("score_out") / "run"
    # --device cpu: the flag reaches the scorer (the suite runs on CPU; CUDA would pick itself otherwise)
    args = ["score", str(src), "--bundle", str(scoring_bundle["bundle"]), "--out", str(out), "--device", "cpu"]
    result = runner.invoke(app, args)
    return out, result, args


def test_folder_output_rows_flags_and_exit_code(scored):
    out, result, _ = scored
    assert result.exit_code == 1, result.output  # one unreadable input
    frames = pd.read_csv(out / "frames.csv", dtype={"case_id": str})
    cases = pd.read_csv(out / "cases.csv", dtype={"case_id": str}).set_index("case_id")
    fails = pd.read_csv(out / "failures.csv")
    assert fails["case_id"].tolist() == ["broken"] and "broken.png" in fails["error"].iloc[0]
    assert frames.groupby("case_id").size().to_dict() == {
        "cine": 4,
        "clip": 5,
        **{p: 1 for p in cases.index if p.startswith("sim_")},
    }
    assert cases.loc["cine", "kind"] == "sequence" and cases.loc["clip", "kind"] == "sequence"
    assert (cases.drop(index=["cine", "clip"])["kind"] == "image").all()
    scored = frames["probability"].notna()
    assert (frames.loc[scored, "label"] == (frames.loc[scored, "probability"] >= frames["threshold"]).astype(int)).all()
    assert (frames["no_lesion"] == frames["probability"].isna()).all()


def test_temporal_aggregate_follows_from_the_frame_rows(scored):
    out, _, _ = scored
    frames = pd.read_csv(out / "frames.csv", dtype={"case_id": str})
    cases = pd.read_csv(out / "cases.csv", dtype={"case_id": str}).set_index("case_id")
    for case in ("cine", "clip"):
        f = frames[frames["case_id"] == case]
        conf = f["probability"].notna() & ~f["low_segmentation_confidence"].astype(bool)
        expected = f.loc[conf, "probability"].mean() if conf.any() else f["probability"].mean()
        assert cases.loc[case, "probability"] == pytest.approx(expected, abs=1e-9)
        agg = temporal_aggregate(
            f["probability"], ~f["low_segmentation_confidence"].astype(bool), f["threshold"].iloc[0]
        )
        assert agg["probability"] == pytest.approx(cases.loc[case, "probability"], abs=1e-9)
        assert cases.loc[case, "label"] == int(expected >= f["threshold"].iloc[0])


def test_frame_probability_equals_the_csv_path(scored, scoring_bundle, inputs, tmp_path, torch_one_thread):
    out, _, _ = scored
    _, imgs = inputs
    csv = tmp_path / "s.csv"
    folder = tmp_path / "two"
    folder.mkdir()
    for p in imgs[:2]:
        shutil.copy(p, folder / p.name)
    args = ["score", str(folder), "--bundle", str(scoring_bundle["bundle"]), "--out", str(csv), "--device", "cpu"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    ref = pd.read_csv(csv, dtype={"case_id": str}).set_index("case_id")["probability"]
    frames = pd.read_csv(out / "frames.csv", dtype={"case_id": str}).set_index("case_id")
    for case, p in ref.items():
        assert frames.loc[case, "probability"] == pytest.approx(p, rel=FLOAT32_PATHS_REL)


def test_overlays_sheets_video_and_report(scored, inputs):
    out, _, _ = scored
    _, imgs = inputs
    frames = pd.read_csv(out / "frames.csv", dtype={"case_id": str})
    h, w = cv2.imread(str(imgs[0]), cv2.IMREAD_GRAYSCALE).shape
    for rel in frames["overlay"]:
        im = cv2.imread(str(out / rel))
        assert im is not None and im.shape == (h, w, 3)
    assert (out / "sheets" / "cine.png").is_file() and (out / "sheets" / "clip.png").is_file()
    cap = cv2.VideoCapture(str(out / "videos" / "clip.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 5
    assert not (out / "videos" / "cine.mp4").exists()  # a DICOM gets a contact sheet, not a video
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']https?://""", html)
    # every image input's overlay and both sequences' plots and sheets are embedded
    assert html.count("data:image/png;base64,") == (frames["case_id"].str.startswith("sim_")).sum() + 2 * 2
    doc = json.loads((out / "scores.json").read_text())
    assert doc["model"]["sha256"] and doc["model"]["heatmap"]["method"] == "gradcam"


def test_no_patient_identifiers_in_any_output(scored):
    out, result, _ = scored
    texts = [result.output] + [p.read_text() for p in out.rglob("*") if p.suffix in (".csv", ".json", ".html")]
    for value in PHI.values():
        assert not any(str(value) in t for t in texts), value


def test_rerun_resumes_from_the_finished_inputs(scored, torch_one_thread):
    out, _, args = scored
    before = (out / "frames.csv").read_text()
    parts = sorted((out / ".parts").glob("*.json"))
    assert len(parts) == 4  # one per readable input
    parts[0].unlink()
    stamps = {p: p.stat().st_mtime_ns for p in parts[1:]}
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    # The input is scored again alone, in the same batches and process as before: bit-identical probabilities.
    assert (out / "frames.csv").read_text() == before
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # reused, not rewritten
    assert parts[0].is_file()


def test_evaluate_scores_and_report(scoring_bundle, tmp_path):
    test = scoring_bundle["test"]
    csv = tmp_path / "scores.csv"
    r = runner.invoke(
        app, ["score", str(test / "manifest.csv"), "--bundle", str(scoring_bundle["bundle"]), "--out", str(csv)]
    )
    assert r.exit_code == 0, r.output
    ev = tmp_path / "eval"
    r = runner.invoke(
        app, ["evaluate", str(csv), "--manifest", str(test / "manifest.csv"), "--out", str(ev), "--cam-examples", "1"]
    )
    assert r.exit_code == 0, r.output
    auc = pd.read_csv(ev / "auc.csv")
    pred = pd.read_csv(ev / "predictions.csv", dtype={"case_id": str})
    t = pred[pred["split"] == "test"]
    man = pd.read_csv(test / "manifest.csv", dtype={"case_id": str}).set_index("case_id")
    scores = pd.read_csv(csv, dtype={"case_id": str}).set_index("case_id")
    assert (t["label"].to_numpy() == man.loc[t["case_id"], "label"].to_numpy()).all()
    assert np.allclose(t["probability"], scores.loc[t["case_id"], "probability"])
    assert auc["test_auc"].iloc[0] == pytest.approx(roc_auc_ci(t["label"], t["probability"]).auc, abs=1e-12)
    assert auc["n"].iloc[0] + auc["n_unscored"].iloc[0] == len(man)
    oof = pd.read_csv(scoring_bundle["bundle"] / "oof.csv")
    assert (pred["split"] == "train_oof").sum() == len(oof)
    thr = json.loads((ev / "thresholds.json").read_text())
    cfg = json.loads((scoring_bundle["bundle"] / "config.json").read_text())
    assert thr == {"combined": pytest.approx(cfg["threshold"])}
    assert (ev / "report.html").is_file()
    assert f"{auc['test_auc'].iloc[0]:.3f}" in r.output
    # The bundle the scores name is loaded with every check: an edited metrics.json (a better
    # nested-CV AUC) is refused, not reported.
    copy = tmp_path / "bundle"
    shutil.copytree(scoring_bundle["bundle"], copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["auc"]["auc"] = 0.99
    (copy / "metrics.json").write_text(json.dumps(metrics))
    side = csv.with_suffix(".json")
    side.write_text(json.dumps({**json.loads(side.read_text()), "bundle": str(copy)}))
    r = runner.invoke(app, ["evaluate", str(csv), "--manifest", str(test / "manifest.csv"), "--out", str(ev)])
    assert r.exit_code == 2 and "metrics.json" in r.output and "tampered" in r.output, r.output


def test_report_of_a_bundle(scoring_bundle, tmp_path):
    out = tmp_path / "b.html"
    r = runner.invoke(app, ["report", str(scoring_bundle["bundle"]), "--out", str(out)])
    assert r.exit_code == 0, r.output
    html = out.read_text()
    assert "No held-out cohort" in html and "test cohort" not in html
    auc = pd.read_csv(tmp_path / "b_files" / "report_tables" / "auc.csv")
    oof = pd.read_csv(scoring_bundle["bundle"] / "oof.csv")
    expected = roc_auc_ci(oof["label"], oof["probability"]).auc
    assert np.isclose(auc.filter(like="auc").to_numpy(float), expected, atol=1e-9).any()


def test_pipeline_score_in_memory_matches_the_folder_output(scored, inputs, scoring_bundle, torch_one_thread):
    from usher2.io.frames import read_frame
    from usher2.pipeline import Pipeline

    out, _, _ = scored
    _, imgs = inputs
    res = Pipeline().score([read_frame(p) for p in imgs[:2]], scoring_bundle["bundle"], cam=None)
    frames = pd.read_csv(out / "frames.csv", dtype={"case_id": str}).set_index("case_id")
    for p, r in zip(imgs[:2], res, strict=True):
        assert r.heat is None and r.mask is not None and r.mask.shape == r.pixels.shape
        assert r.probability == pytest.approx(frames.loc[p.stem, "probability"], rel=FLOAT32_PATHS_REL)
