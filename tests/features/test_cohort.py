"""Cohort extraction (usher2.features.cohort): the named table, provenance, bad cases, perturbations, resume
after a kill, Dask."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from usher2.features.cohort import extract_cohort, read_feature_table
from usher2.features.config import ID_COLUMNS, ExtractConfig
from usher2.features.lexicon import LEXICON_COLUMNS
from usher2.io.errors import InputError
from usher2.io.manifest import read_manifest, write_manifest

PARAMS = {"imageType": {"Original": {}}, "setting": {"binWidth": 8}}
FAST = ExtractConfig(params=PARAMS, chunk_size=3)
BAD = {
    "empty_mask": "mask is empty",
    "one_px": "single voxel",
    "big_mask": "shape",
    "missing": "no such file",
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """8 simulated cases plus the bad-input cases of the issue (all in one manifest)."""
    from usher2.simulate import SimulationConfig, simulate_cohort

    root = tmp_path_factory.mktemp("extract")
    df = simulate_cohort(8, 910, root, config=SimulationConfig(image_size=(128, 128)), workers=1)
    rng = np.random.default_rng(0)
    img = (rng.random((128, 128)) * 255).astype(np.uint8)
    cv2.imwrite(str(root / "bad_img.png"), img)
    cv2.imwrite(str(root / "constant.png"), np.full((128, 128), 90, np.uint8))
    masks = {
        "empty_mask": np.zeros((128, 128), np.uint8),
        "one_px": np.zeros((128, 128), np.uint8),
        "border": np.zeros((128, 128), np.uint8),
        "big_mask": np.full((200, 200), 255, np.uint8),
        "whole_frame": np.full((128, 128), 255, np.uint8),
        "constant": np.zeros((128, 128), np.uint8),
    }
    masks["one_px"][64, 64] = 255
    masks["border"][0:40, 0:50] = 255
    masks["constant"][40:80, 40:80] = 255
    rows = []
    for name, m in masks.items():
        cv2.imwrite(str(root / f"{name}_mask.png"), m)
        image = "constant.png" if name == "constant" else "bad_img.png"
        rows.append({"case_id": name, "patient_id": name, "image": image, "mask": f"{name}_mask.png", "label": 0})
    rows.append({"case_id": "missing", "patient_id": "missing", "image": "gone.png", "mask": "", "label": 1})
    keep = ["case_id", "patient_id", "image", "mask", "label"]
    full = pd.concat([df[keep], pd.DataFrame(rows)], ignore_index=True)
    write_manifest(full, root / "all.csv")
    write_manifest(df[keep], root / "good.csv")
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_table_columns_provenance_and_bad_cases(cohort, tmp_path):
    out = tmp_path / "features.parquet"
    res = extract_cohort(cohort / "all.csv", out, FAST)
    manifest = pd.read_csv(cohort / "all.csv", dtype={"case_id": str})
    # one row per good case, in manifest order; bad cases are failures with their reason, never NaN rows
    assert sorted(res.failed_cases) == sorted(BAD)
    for case, reason in BAD.items():
        err = res.failures.loc[res.failures["case_id"] == case, "error"].iloc[0]
        assert reason in err, (case, err)
    expected = [c for c in manifest["case_id"] if c not in BAD]
    assert list(res.table["case_id"]) == expected
    feats = [c for c in res.table.columns if c.startswith(("radiomics_", "deep_"))]
    regions = {r: [c for c in feats if c.startswith(f"radiomics_{r}_")] for r in ("peritumoral", "posterior")}
    lexicon = [c for c in feats if c.startswith("radiomics_lexicon_")]
    assert tuple(lexicon) == LEXICON_COLUMNS
    lesion = [c for c in feats if not any(c in cols for cols in [*regions.values(), lexicon])]
    assert np.isfinite(res.table[lesion].to_numpy()).all()  # the lesion's features are never NaN
    # lexicon shape and margin descriptors always exist; those of the surroundings need tissue around the lesion
    always = [c for c in lexicon if "_orientation" in c or "_axis" in c or "_margin_" in c or "_calcification" in c]
    assert np.isfinite(res.table[always].to_numpy()).all()
    for r, cols in regions.items():
        assert len(cols) == 93  # Original image, first order + texture classes
        small = res.table[f"{r}_area_px"] < 16
        assert res.table.loc[small, cols].isna().all().all() and np.isfinite(res.table.loc[~small, cols]).all().all()
    # a whole-frame ROI has no ring and nothing below it
    whole = res.table.set_index("case_id").loc["whole_frame"]
    assert whole["peritumoral_area_px"] == 0 and whole["posterior_area_px"] == 0
    assert np.isnan(whole["radiomics_lexicon_posterior_contrast"]) and np.isnan(whole["radiomics_lexicon_halo_0"])
    assert "radiomics_original_glcm_Contrast" in feats and "deep_usresnet10t_511" in feats
    assert list(res.table.columns[:8]) == ID_COLUMNS and res.table["mask_uncertainty"].isna().all()  # given masks
    # defined values for the border-touching, whole-frame and constant-image cases
    row = res.table.set_index("case_id")
    assert row.loc["border", "mask_area_px"] == 40 * 50
    assert row.loc["whole_frame", "radiomics_original_shape2D_PixelSurface"] == pytest.approx(128 * 128)
    assert row.loc["constant", "radiomics_original_firstorder_Variance"] == 0.0
    # the mean grey level is the frame's, on the 0-255 scale
    sim = read_manifest(cohort / "good.csv").iloc[0]
    img = cv2.imread(sim["image_path"], cv2.IMREAD_GRAYSCALE).astype(float)
    m = cv2.imread(sim["mask_path"], cv2.IMREAD_GRAYSCALE) > 127
    assert row.loc[sim["case_id"], "radiomics_original_firstorder_Mean"] == pytest.approx(img[m].mean(), rel=1e-5)
    # files: the table with provenance in its metadata, the sidecar, the failures CSV
    table, prov = read_feature_table(out)
    pd.testing.assert_frame_equal(table, res.table)
    assert prov == json.loads((tmp_path / "features.provenance.json").read_text())
    inputs = {x["case_id"]: x for x in prov["inputs"]}
    assert inputs["border"]["image_sha256"] == _sha(cohort / "bad_img.png")
    assert inputs["border"]["mask_sha256"] == _sha(cohort / "border_mask.png")
    assert prov["overlay_handling"] == "keep" and prov["mask_source"] == "given" and prov["enhancer"] == "none"
    assert prov["radiomics"]["pyradiomics"].lstrip("v") == "3.1.4"
    assert prov["radiomics"]["params"]["setting"]["binWidth"] == 8
    assert prov["deep"][0]["backbone"] == "usresnet10t" and len(prov["deep"][0]["weights_sha256"]) == 64
    assert prov["manifest_sha256"] == _sha(cohort / "all.csv")
    failures = pd.read_csv(tmp_path / "features.failures.csv")
    assert list(failures.columns) == ["case_id", "stage", "error"] and set(failures["case_id"]) == set(BAD)


def test_a_rerun_reuses_every_case_and_recomputes_a_changed_one(cohort, tmp_path):
    out = tmp_path / "f.parquet"
    first = extract_cohort(cohort / "good.csv", out, FAST)
    assert first.computed == 8
    again = extract_cohort(cohort / "good.csv", out, FAST)
    assert again.computed == 0
    pd.testing.assert_frame_equal(first.table, again.table)
    other = extract_cohort(cohort / "good.csv", out, ExtractConfig(params=PARAMS, backbones=()))
    assert other.computed == 8 and not any(c.startswith("deep_") for c in other.table.columns)


def test_perturbation_long_table(cohort, tmp_path):
    cfg = ExtractConfig(params=PARAMS, perturb=True, chunk_size=4)
    res = extract_cohort(cohort / "all.csv", tmp_path / "p.parquet", cfg)
    p = res.perturbations
    assert list(p.columns[:2]) == ["case_id", "perturbation"]
    prov = json.loads((tmp_path / "p.provenance.json").read_text())
    assert len(prov["enhancers"]["pix2pix"]["weights_file_sha256"]) == 64  # the enhancer_on perturbation's network
    names = set(p["perturbation"])
    assert names == {
        "original", "erode1", "erode2", "dilate1", "dilate2", "rotate-5", "rotate+5", "shift-2", "shift+2",
        "enhancer_on", "mask_predicted",
    }  # fmt: skip
    # the original rows are the table's rows
    orig = p[p["perturbation"] == "original"].drop(columns="perturbation").reset_index(drop=True)
    feats = [c for c in orig.columns if c != "case_id"]
    np.testing.assert_array_equal(orig[feats].to_numpy(), res.table[feats].to_numpy())
    # erosion shrinks and dilation grows the measured area, by the expected ring
    area = p.pivot(index="case_id", columns="perturbation", values="radiomics_original_shape2D_PixelSurface")
    # a frame edge is not a lesion contour: the whole-frame mask neither shrinks nor grows
    assert (area.loc["whole_frame", ["erode1", "erode2", "dilate1", "dilate2"]] == 128 * 128).all()
    good = area.dropna(subset=["erode2"]).drop(index="whole_frame")
    assert (good["erode2"] < good["erode1"]).all() and (good["erode1"] < good["original"]).all()
    assert (good["original"] < good["dilate1"]).all() and (good["dilate1"] < good["dilate2"]).all()
    # the rotated frame has the same lesion size (to interpolation), the shifted mask the same area
    np.testing.assert_allclose(good["rotate+5"], good["original"], rtol=0.05)
    assert area.loc["border", "shift+2"] == 40 * 50  # moved 2 px down and right: all of it stays in the frame
    assert area.loc["border", "shift-2"] == 38 * 48  # moved up and left: 2 rows and 2 columns leave the frame
    # a perturbation that cannot be computed is listed (a mask too thin to erode), not silently missing
    pf = res.failures[res.failures["stage"].str.startswith("perturbation:")]
    computed = set(p["case_id"] + "|" + p["perturbation"])
    for rec in pf.itertuples():
        assert f"{rec.case_id}|{rec.stage.split(':')[1]}" not in computed


@pytest.mark.slow
def test_resume_after_a_kill_computes_only_the_missing_cases(cohort, tmp_path):
    out = tmp_path / "k.parquet"
    parts = tmp_path / "k.parts"
    cmd = [sys.executable, "-m", "usher2.cli", "extract", str(cohort / "good.csv"), "--out", str(out)]
    cmd += ["--chunk-size", "1", "--no-radiomics"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(parts.glob("*/*.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_done = len(list(parts.glob("*/*.json")))
    assert 3 <= n_done < 8 and not out.exists(), n_done
    cfg = ExtractConfig(params=PARAMS, radiomics=False, chunk_size=1)
    resumed = extract_cohort(cohort / "good.csv", out, cfg)
    assert resumed.computed == 8 - n_done
    fresh = extract_cohort(cohort / "good.csv", tmp_path / "fresh.parquet", cfg)
    pd.testing.assert_frame_equal(resumed.table, fresh.table)


@pytest.mark.slow
def test_in_process_local_cluster_and_existing_scheduler_give_identical_tables(cohort, tmp_path):
    from distributed import LocalCluster

    base = extract_cohort(cohort / "all.csv", tmp_path / "a.parquet", FAST)
    local = extract_cohort(cohort / "all.csv", tmp_path / "b.parquet", FAST, workers=2)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, silence_logs=50
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        remote = extract_cohort(cohort / "all.csv", tmp_path / "c.parquet", FAST, scheduler=cluster.scheduler_address)
    for other in (local, remote):
        assert other.computed == base.computed == len(base.table) + len(BAD)
        pd.testing.assert_frame_equal(other.table, base.table)
        pd.testing.assert_frame_equal(other.failures, base.failures)


def test_unreachable_scheduler_is_a_clear_error(cohort, tmp_path):
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}), pytest.raises(InputError, match="scheduler"):
        extract_cohort(cohort / "good.csv", tmp_path / "x.parquet", FAST, scheduler="tcp://127.0.0.1:9")


def test_the_torch_backend_gives_the_same_table_and_errors_and_records_itself(cohort, tmp_path):
    """``radiomics_backend="torch"``: the same columns in the same order, the same values to float tolerance
    (Original image: the class modules agree with pyradiomics to ~1e-12 relative, tests/features/torchrad;
    1e-9 leaves room for float64 summation order), the same bad cases refused, the backend in the provenance
    and in the resume digest (a table from the other backend is recomputed, not reused)."""
    cfg = ExtractConfig(params=PARAMS, backbones=(), chunk_size=4)
    ref = extract_cohort(cohort / "all.csv", tmp_path / "py.parquet", cfg)
    out = tmp_path / "torch.parquet"
    got = extract_cohort(cohort / "all.csv", out, ExtractConfig(params=PARAMS, backbones=(), radiomics_backend="torch"))
    assert list(got.table.columns) == list(ref.table.columns)
    assert set(got.failures["case_id"]) == set(ref.failures["case_id"])
    a, b = ref.table.set_index("case_id"), got.table.set_index("case_id")
    num = [c for c in a.columns if c.startswith("radiomics_")]
    np.testing.assert_allclose(b.loc[a.index, num].to_numpy(float), a[num].to_numpy(float), rtol=1e-9, atol=1e-9)
    prov = read_feature_table(out)[1]
    assert prov["radiomics"]["backend"] == "torch" and prov["settings"]["radiomics_backend"] == "torch"
    assert prov["settings_sha256"] != read_feature_table(tmp_path / "py.parquet")[1]["settings_sha256"]
