"""The cohort report: sections, embedded images only, numbers derivable from the predictions, graceful failures."""

from __future__ import annotations

import html
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from usher2.evaluate import delong_test, roc_auc_ci, threshold_metrics, youden_threshold
from usher2.io.errors import InputError
from usher2.report import METHOD_FIELDS, SECTIONS, write_cohort_report
from usher2.report.html import fmt_p as _fmt_p

CLINICAL = ["age", "tumour_size_mm", "er"]
N_TRAIN = 36


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory) -> Path:
    """A small evaluation directory: 56 simulated frames, clinical + radiomics bundles (synthetic features)."""
    from usher2.fusion.bundle import load_bundle
    from usher2.fusion.fit import fit_cohort
    from usher2.simulate import SimulationConfig, simulate_cohort

    root = tmp_path_factory.mktemp("report")
    sim = root / "sim"
    man = simulate_cohort(56, 5, sim, config=SimulationConfig(image_size=(128, 128)), workers=1)
    man["image"] = [str(sim / p) for p in man["image"]]
    man["mask"] = [str(sim / p) for p in man["mask"]]
    rng = np.random.default_rng(0)
    logit = np.log(man["true_prob"] / (1 - man["true_prob"])).to_numpy()
    feats = pd.DataFrame({"case_id": man["case_id"]})
    for j in range(4):
        feats[f"radiomics_f{j}"] = logit * (1.0 if j < 2 else 0.0) + rng.normal(scale=1.5, size=len(man))
    train_ids, test_ids = man["case_id"][:N_TRAIN], man["case_id"][N_TRAIN:]
    ev = root / "eval"
    rows, thresholds = [], {}
    for family in ("clinical", "radiomics"):
        fit = fit_cohort(
            feats[feats["case_id"].isin(train_ids)],
            man[man["case_id"].isin(train_ids)],
            ev / "bundles" / family,
            clinical=CLINICAL if family == "clinical" else (),
            family=family,
            outer_folds=3,
            inner_folds=2,
            # scoring's settings (the report draws Grad-CAM as `usher2 score` would): the shipped
            # segmenter and backbone; the synthetic columns are not the backbone's, so its target is the sum
            provenance={"settings": {"backbones": ["usresnet10t"], "segmenter": "unet"}},
        )
        thresholds[family] = fit.threshold
        oof = fit.cv.oof.reset_index()
        rows.append(
            oof.assign(model=family, split="train_oof")[
                ["case_id", "patient_id", "label", "model", "split", "probability"]
            ]
        )
        b = load_bundle(fit.bundle)
        test = man[man["case_id"].isin(test_ids)].set_index("case_id")
        X = feats.set_index("case_id").loc[test.index].join(test[CLINICAL])
        rows.append(
            pd.DataFrame(
                {"case_id": test.index, "patient_id": test["patient_id"], "label": test["label"], "model": family,
                 "split": "test", "probability": b.predict_proba(X)}
            )
        )  # fmt: skip
    pd.concat(rows, ignore_index=True).to_csv(ev / "predictions.csv", index=False)
    (ev / "thresholds.json").write_text(json.dumps(thresholds))
    test_man = man[man["case_id"].isin(test_ids)]
    test_man[["case_id", "patient_id", "image", "mask", "label", *CLINICAL]].to_csv(ev / "manifest.csv", index=False)
    feats[feats["case_id"].isin(test_ids)].to_parquet(
        ev / "features.parquet"
    )  # clinical columns come from the manifest
    summary = {
        "title": "Test <cohort> & report",
        "usher2": "0.1.0",
        "created": "2025-01-01T00:00:00+00:00",
        "cohort": {"train": {"n": N_TRAIN, "patients": N_TRAIN, "positives": int(man["label"][:N_TRAIN].sum())}},
        "oracle_auc": {"clinical": 0.7, "radiomics": 0.8},
        "primary_model": "radiomics",
        "methods": {"data": "simulated", "outcome": "HER2 status", "model": "logistic regression"},
        "bundles": {"clinical": "bundles/clinical", "radiomics": "bundles/radiomics"},
    }
    (ev / "summary.json").write_text(json.dumps(summary))
    return ev


@pytest.fixture(scope="module")
def report(eval_dir) -> tuple[str, float]:
    t0 = time.perf_counter()
    out = write_cohort_report(eval_dir, eval_dir / "report.html", cam_examples=2)
    return out.read_text(encoding="utf-8"), time.perf_counter() - t0


def _test_preds(ev: Path) -> pd.DataFrame:
    p = pd.read_csv(ev / "predictions.csv", dtype={"case_id": str})
    return p[p["split"] == "test"]


def _copy(eval_dir: Path, tmp_path: Path) -> Path:
    ev = tmp_path / "eval"
    shutil.copytree(eval_dir, ev, ignore=shutil.ignore_patterns("report*"))
    return ev


def test_sections_images_and_no_external_fetches(eval_dir, report):
    doc, seconds = report
    print(f"report rendered in {seconds:.1f} s")
    for name in SECTIONS:
        assert f"<h2>{html.escape(name)}</h2>" in doc
    imgs = re.findall(r"<img [^>]*>", doc)
    assert len(imgs) >= 8  # ROC x2, calibration, DCA, nomogram, waterfall, SHAP, CAMs
    assert all('src="data:image/png;base64,' in tag for tag in imgs)
    assert "http://" not in doc and "https://" not in doc
    assert "<script" not in doc.lower() and "@import" not in doc and "url(" not in doc
    assert "Test &lt;cohort&gt; &amp; report" in doc  # data text is escaped
    for key in ("data", "outcome", "predictors", "missing_data", "splits", "software"):
        assert key in METHOD_FIELDS
    assert doc.count("not reported") >= 5  # predictors, missing data, splits, validation, software
    assert "HER2 status" in doc
    errors = pd.read_csv(eval_dir / "report_tables" / "errors.csv")
    assert (errors["kind"] == "InputError").all(), errors  # nothing unexpected
    assert not errors["section"].isin(SECTIONS[:8]).any(), errors
    cams = doc[doc.index(f"<h2>{html.escape(SECTIONS[8])}</h2>") :]
    assert len(re.findall(r"<img ", cams)) >= 1  # Grad-CAM overlays were drawn, as scoring draws them
    assert "target: pooled features (sum): the model reads no deep features" in cams
    assert seconds < 40


def test_auc_and_delong_numbers(eval_dir, report):
    doc, _ = report
    t = _test_preds(eval_dir)
    a = t[t["model"] == "clinical"].set_index("case_id")
    b = t[t["model"] == "radiomics"].set_index("case_id").loc[a.index]
    for m, d in (("clinical", a), ("radiomics", b)):
        r = roc_auc_ci(d["label"], d["probability"])
        assert f"<td>{m}</td><td>test</td><td class=num>{len(d)}</td>" in doc
        row = re.search(rf"<td>{m}</td><td>test</td>.*?</tr>", doc).group(0)
        assert f">{r.auc:.3f}<" in row and f"{r.ci_low:.3f}-{r.ci_high:.3f}" in row
    r = delong_test(a["label"], a["probability"], b["probability"])
    row = re.search(r"<tr><td>clinical</td><td>radiomics</td>.*?</tr>", doc).group(0)
    for text in (f"{r.difference:.3f}", f"{r.ci_low:.3f}-{r.ci_high:.3f}", f"{r.z:.2f}", html.escape(_fmt_p(r.p))):
        assert f">{text}<" in row, (text, row)
    table = pd.read_csv(eval_dir / "report_tables" / "delong.csv")
    assert table.loc[0, "z"] == pytest.approx(r.z)
    aucs = pd.read_csv(eval_dir / "report_tables" / "auc.csv")
    assert set(aucs["split"]) == {"test", "train_oof"}


def test_threshold_metrics_use_the_training_threshold(eval_dir, tmp_path):
    ev = _copy(eval_dir, tmp_path)
    d = _test_preds(ev)
    d = d[d["model"] == "radiomics"]
    youden = youden_threshold(d["label"], d["probability"])
    # a training threshold that gives a different sensitivity on test than the test's own Youden
    candidates = np.unique(d["probability"])
    sens = lambda t: threshold_metrics(d["label"], d["probability"], t).sensitivity.value  # noqa: E731
    train_t = next(float(t) for t in candidates[::-1] if sens(t) != sens(youden))
    (ev / "thresholds.json").write_text(json.dumps({"radiomics": train_t, "clinical": 0.5}))
    doc = write_cohort_report(ev, ev / "report.html", cam_examples=0).read_text()
    m = threshold_metrics(d["label"], d["probability"], train_t)
    row = re.search(r"<tr><td>radiomics</td><td class=num>[^<]*</td><td>thresholds.json</td>.*?</tr>", doc).group(0)
    assert f">{train_t:.3f}<" in row
    s = m.sensitivity
    assert f">{s.value:.3f} ({s.ci_low:.3f}-{s.ci_high:.3f})<" in row
    assert (
        f"<td class=num>{m.tp}</td><td class=num>{m.fp}</td><td class=num>{m.fn}</td><td class=num>{m.tn}</td>" in row
    )
    saved = pd.read_csv(ev / "report_tables" / "threshold_metrics.csv")
    got = saved[(saved["model"] == "radiomics") & (saved["metric"] == "sensitivity")]
    assert got["value"].iloc[0] == pytest.approx(s.value) and got["threshold"].iloc[0] == pytest.approx(train_t)


def test_a_failing_analysis_is_reported_and_the_rest_written(eval_dir, tmp_path):
    ev = _copy(eval_dir, tmp_path)
    p = pd.read_csv(ev / "predictions.csv", dtype={"case_id": str})
    p.loc[(p["model"] == "radiomics") & (p["split"] == "test"), "probability"] = 0.4  # constant on test: primary fails
    p.to_csv(ev / "predictions.csv", index=False)
    (ev / "features.parquet").unlink()  # nomogram and SHAP cannot get their inputs
    out = write_cohort_report(ev, ev / "report.html", cam_examples=1)
    doc = out.read_text()
    for name in SECTIONS:
        assert f"<h2>{html.escape(name)}</h2>" in doc
    assert 'class="fail"' in doc
    assert "constant" in doc  # the InputError's own words
    assert "features.parquet" in doc
    r = roc_auc_ci(*_test_preds(ev).query("model == 'clinical'")[["label", "probability"]].T.to_numpy())
    assert f">{r.auc:.3f}<" in doc  # the clinical model's results are still there
    errors = pd.read_csv(ev / "report_tables" / "errors.csv")
    assert (errors["kind"] == "InputError").all(), errors
    assert "3. Discrimination" in set(errors["section"])


def test_unreadable_cam_cases_are_listed(eval_dir, tmp_path):
    ev = _copy(eval_dir, tmp_path)
    man = pd.read_csv(ev / "manifest.csv", dtype={"case_id": str})
    man["image"] = str(ev / "nowhere.png")
    man.to_csv(ev / "manifest.csv", index=False)
    doc = write_cohort_report(ev, ev / "r.html", cam_examples=1).read_text()
    assert "Cases that could not be shown" in doc and "nowhere.png" in doc


@pytest.mark.parametrize("broken", ["summary.json", "predictions.csv"])
def test_missing_or_invalid_inputs_raise(eval_dir, tmp_path, broken):
    ev = _copy(eval_dir, tmp_path)
    (ev / broken).unlink()
    with pytest.raises(InputError, match=broken):
        write_cohort_report(ev, ev / "r.html")
    (ev / broken).write_text("{not json" if broken.endswith("json") else "a,b\n1,2\n")
    with pytest.raises(InputError, match=broken):
        write_cohort_report(ev, ev / "r.html")
    assert not (ev / "r.html").exists()


def test_nomogram_draws_one_imaging_axis(eval_dir, report):
    # the radiomics model (no clinical columns): its selected features summed into one Radscore axis,
    # whose coefficient is 1 by construction (the axis is already in log-odds)
    nomo = pd.read_csv(eval_dir / "report_tables" / "nomogram.csv")
    assert nomo["model"].unique().tolist() == ["radiomics"]
    assert nomo["predictor"].tolist() == ["Radscore"] and nomo["coef"].tolist() == [1.0]
    with pytest.raises(InputError, match="'imaging' or 'features'"):
        write_cohort_report(eval_dir, eval_dir / "x.html", nomogram="axes")
