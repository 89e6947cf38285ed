"""Issue 23: does the end-to-end model survive predicted masks? A held-out-device experiment on BUS-BRA.

Usage:
    python bench/fusion_masks.py --segmenter-weights runs/ablation-segmenter-lodo-basic128/heldout_devices/\
segmenter.safetensors
                                 [--backbone NAME=PATH | (default: train one on the GE frames)]
                                 [--oof-probs 'runs/segmenter-unet-cpu/cv_fold*/probs']
                                 [--variants given augment icc oof oof-given] [--families dlr combined]
                                 [--n-train N] [--n-test N] [--work runs/fusion_masks] [--out FILE.json]

**Split.** Train = BUS-BRA's GE Logiq 5 and 7 frames (all five folds, 1,711 frames); test = its
Toshiba Aplio 300 and U-Systems frames (164). No patient has frames on both sides. The segmenter
that predicts the test masks (``--segmenter-weights``) must not have seen the test devices: the
leave-device-out runs (``runs/ablation-segmenter-lodo-*/heldout_devices/segmenter.safetensors``)
were trained on the GE frames only. The shipped segmenter saw every frame: plumbing only.

**Deep features.** The shipped backbone (usresnet10t) was trained on BUS-BRA pathology labels of
folds 1-4, test devices included, so its features of test frames have seen their labels. By
default a backbone of the same recipe is trained on the GE frames only (``deep_usge10t``: 1,711 GE
crops + 600 simulated, ``--backbone-epochs`` 20, about 30 min on one free core; done once, then
cached as ``WORK/deep_usge10t.safetensors``).

**Fit variants** (each a DLR bundle, and a combined one with ``--families combined``):

* ``given``: trained on the annotated masks (what the issue's bundle was).
* ``augment``: annotated masks + one copy of every training frame with its contour redrawn at a
  segmenter's error scale (``contour-1``, :func:`usher2.features.extract.contour_error`: Dice
  with the annotation 0.80 on average), a copy kept with its patient, never evaluated.
* ``icc``: annotated masks, selection restricted to features with ICC(3,1) >= ``--icc-threshold``
  between the annotated and the redrawn contour (``contour-1``); with ``--oof-probs``, ``icc-oof``
  uses the annotated vs the out-of-fold predicted mask instead (the issue's "predicted-vs-given").
* ``icc-augment``: both of the above.
* ``oof`` (needs ``--oof-probs``): trained on out-of-fold predicted masks (a segmenter that did not
  train on the frame's patient), thresholded as the segmenter does; ``oof-given``: both.

Every bundle is fitted with :func:`usher2.fusion.fit.fit_cohort` (the ``usher2 fit`` core) on the
training frames, with the test frames as a fixed test split (so its own metrics are the given-mask
test AUC), and then scores the test frames' features from the predicted masks: exactly what
``usher2 score --masks given`` and ``usher2 score --segmenter-weights W`` compute (the features are
the same extraction; check one bundle by hand with the CLI).

**Reported** per variant and family: test AUC with predicted and with given masks (95% CI:
patient-cluster bootstrap, 2,000 resamples), the gap predicted - given on the frames scored both
ways (paired patient-cluster bootstrap CI and DeLong p), per device; and for the
``low_segmentation_confidence`` flag (the fixed 0.45 bits, and the threshold calibrated on the
training frames' out-of-fold maps with ``--oof-probs``): n, Dice of the predicted masks with the
annotation, and AUC of flagged and unflagged frames. Targets (issue 23): predicted-mask AUC within
0.03 of given for DLR; unflagged frames' Dice >= 0.80.

**Cost.** Extraction dominates and is cached under ``--work``/features (resumable; a rerun
computes nothing): radiomics take about 0.4 s of one core per frame and mask, so the 1,711
training frames x 2 contours and the 164 test frames x (1 + one per segmenter) are about 30 min
on one free core (the first run here took 97 min of wall time on a CPU shared with segmenter
trainings); deep features a few minutes. A cached rerun with 2 segmenters and 8 fits took 525 s.
``--n-train 300 --n-test 60`` is a quick development run (patients sampled, seeded; a smaller
``n`` is a prefix of a larger one and reuses its features).
"""

from __future__ import annotations

import argparse
import glob
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.evaluate.roc import delong_test, roc_auc_ci
from usher2.features.extract import (
    ID_COLUMNS,
    ExtractConfig,
    extract_cohort,
    predicted_masks,
    prepare_pixels,
    with_segmenter_weights,
)
from usher2.fusion.bundle import load_bundle
from usher2.fusion.confidence import LOW_CONFIDENCE, calibrate_confidence
from usher2.fusion.fit import fit_cohort
from usher2.io.atomic import atomic_write_text
from usher2.io.batch import read_case
from usher2.io.manifest import read_manifest, write_manifest

N_BOOT = 2000
CONTOUR = "contour-1"


# ------------------------------------------------------------------------------ data
def cohort(root: str, work: Path, n_train: int | None, n_test: int | None, seed: int) -> pd.DataFrame:
    """BUS-BRA's manifest plus ``split`` (train = GE devices, test = the rest), optionally subsampled by patient.

    A subsample takes whole patients in the order of one seeded permutation, so a smaller ``n`` is a
    prefix of a larger one and reuses its cached features."""
    from usher2.io.importers import import_bus_bra

    path = work / "bus_bra.csv"
    if not path.is_file():
        import_bus_bra(root, path)
    df = read_manifest(path, check_files=False)
    df["split"] = np.where(df["device"].astype(str).str.startswith("GE"), "train", "test")
    shared = set(df.loc[df["split"] == "train", "patient_id"]) & set(df.loc[df["split"] == "test", "patient_id"])
    assert not shared, f"{len(shared)} patients have frames on both sides"
    rng = np.random.default_rng(seed)
    keep = []
    for split, n in (("train", n_train), ("test", n_test)):
        part = df[df["split"] == split]
        if n is not None and n < len(part):
            patients = rng.permutation(part["patient_id"].unique())
            sizes = part.groupby("patient_id").size().loc[patients].cumsum()
            part = part[part["patient_id"].isin(sizes.index[sizes <= n])]
        keep.append(part)
    return pd.concat(keep).reset_index(drop=True)


def ge_backbone(root: str, work: Path, epochs: int) -> Path:
    """Train (once) the shipped backbone's recipe on BUS-BRA's GE frames only (+ simulated); return its weights."""
    from usher2.features.pretrain import BackboneTrainConfig, train_backbone

    weights = work / "deep_usge10t.safetensors"
    if weights.is_file():
        return weights
    rootp, ge = Path(root).resolve(), work / "bus-bra-ge"
    ge.mkdir(parents=True, exist_ok=True)
    data = pd.read_csv(rootp / "bus_data.csv", dtype={"ID": str})
    keep = data["Device"].astype(str).str.startswith("GE")
    data[keep].to_csv(ge / "bus_data.csv", index=False)
    folds = pd.read_csv(rootp / "5-fold-cv.csv", dtype={"ID": str})
    folds[folds["ID"].isin(data.loc[keep, "ID"])].to_csv(ge / "5-fold-cv.csv", index=False)
    for name in ("Images", "Masks", "LICENSE.txt"):
        if not (ge / name).exists():
            (ge / name).symlink_to(rootp / name)
    cfg = BackboneTrainConfig(
        out=str(work / "backbone-ge"),
        export=str(weights),
        bus_bra=str(ge),
        train_folds=(1, 2, 3, 4, 5),
        val_folds=(),
        simulated=600,
        simulated_seed=6000,
        val_simulated=0,
        epochs=epochs,
    )
    train_backbone(cfg, command="python bench/fusion_masks.py (GE-only backbone)")
    return weights


class Extractor:
    """Cached extractions: radiomics and deep features as two tables joined on case_id (so a new
    backbone does not recompute the radiomics), timed."""

    def __init__(self, work: Path, backbone: str) -> None:
        self.dir = work / "features"
        self.backbone = backbone
        self.seconds: dict[str, float] = {}
        self.provenance: dict[str, Any] = {}

    def __call__(
        self, name: str, cases: pd.DataFrame, cfg: ExtractConfig, *, contour: bool = False
    ) -> tuple[pd.DataFrame, pd.DataFrame | None, list[str]]:
        """(features indexed by case_id, perturbation rows or None, failed case ids)."""
        from dataclasses import replace

        pert = {"perturb": True, "perturbations": (CONTOUR,)} if contour else {}
        parts = {
            "radiomics": replace(cfg, backbones=(), **pert),
            "deep": replace(cfg, radiomics=False, lexicon=False, backbones=(self.backbone,), **pert),
        }
        tables, ptables, failed, prov = [], [], set(), {}
        for kind, c in parts.items():
            t0 = time.perf_counter()
            tag = "" if kind == "radiomics" else "_" + self.backbone.split("=")[0]
            res = extract_cohort(cases, self.dir / f"{name}_{kind}{tag}.parquet", c)
            self.seconds[f"{name}/{kind}"] = round(time.perf_counter() - t0, 1)
            tables.append(res.table.set_index("case_id"))
            if res.perturbations is not None:
                ptables.append(res.perturbations.set_index(["case_id", "perturbation"]))
            failed |= set(res.failed_cases)
            prov[kind] = json.loads(res.paths["provenance"].read_text())
        rad, deep = tables
        table = rad.join(deep[[c for c in deep.columns if c.startswith("deep_")]], how="inner")
        ptable = None
        if ptables:
            ptable = ptables[0].join(ptables[1], how="inner").reset_index()
        # what a bundle records: one extraction with both feature kinds (usher2 score re-extracts from it)
        merged = {k: v for k, v in prov["radiomics"].items() if k not in ("inputs",)}
        merged["settings"] = {**prov["radiomics"]["settings"], "backbones": [self.backbone], "perturb": False}
        merged["settings"]["perturbations"] = None
        merged["deep"] = prov["deep"]["deep"]
        self.provenance[name] = merged
        return table, ptable, sorted(failed)


# ------------------------------------------------------------------------------ statistics
def _auc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg)))


def auc_ci(y: Any, p: Any, groups: Any) -> dict[str, Any]:
    """AUC with a patient-cluster bootstrap 95% CI (usher2.evaluate.roc); NaN when a class is missing."""
    y, p = np.asarray(y, int), np.asarray(p, float)
    if len(np.unique(y)) < 2 or min(np.bincount(y)) < 2:
        return {"auc": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": len(y)}
    r = roc_auc_ci(y, p, method="bootstrap", n_boot=N_BOOT, groups=np.asarray(groups), seed=0)
    return {"auc": r.auc, "ci_low": r.ci_low, "ci_high": r.ci_high, "n": len(y), "n_pos": int(y.sum())}


def paired_gap(y: Any, pred: Any, given: Any, groups: Any, seed: int = 0) -> dict[str, Any]:
    """AUC(pred) - AUC(given) on the same frames: patient-cluster bootstrap CI and DeLong's paired p."""
    y, a, b, g = np.asarray(y, int), np.asarray(pred, float), np.asarray(given, float), np.asarray(groups)
    uniq, inv = np.unique(g, return_inverse=True)
    members = [np.flatnonzero(inv == i) for i in range(len(uniq))]
    rng = np.random.default_rng(seed)
    boots = []
    while len(boots) < N_BOOT:
        idx = np.concatenate([members[i] for i in rng.integers(0, len(uniq), len(uniq))])
        if y[idx].min() == y[idx].max():
            continue
        boots.append(_auc(y[idx], a[idx]) - _auc(y[idx], b[idx]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    d = delong_test(y, a, b)
    return {"gap": _auc(y, a) - _auc(y, b), "ci_low": float(lo), "ci_high": float(hi), "delong_p": d.p, "n": len(y)}


def mean_ci(values: Any, groups: Any, seed: int = 0) -> dict[str, float]:
    from usher2.evaluate.segmentation import bootstrap_ci

    v = np.asarray(values, float)
    if not len(v):
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    m, lo, hi = bootstrap_ci(v, n_boot=N_BOOT, groups=np.asarray(groups), seed=seed)
    return {"mean": m, "ci_low": lo, "ci_high": hi, "n": len(v)}


# ------------------------------------------------------------------------------ masks
def test_masks(cases: pd.DataFrame, cfg: ExtractConfig) -> pd.DataFrame:
    """Predicted mask of every test frame (as scoring computes it) against the annotation: Dice, uncertainty."""
    rows = []
    for row in cases.to_dict("records"):
        c = read_case(row, masks=True)
        try:
            p = prepare_pixels(cfg, c.frame.pixels, c.mask, where=c.case_id, masks="predicted")
        except Exception as exc:  # the segmenter found no lesion: scoring flags no_lesion
            rows.append({"case_id": c.case_id, "no_lesion": True, "dice": 0.0, "uncertainty": np.nan, "err": str(exc)})
            continue
        m, g = p["mask"], c.mask
        dice = 2 * int((m & g).sum()) / max(1, int(m.sum()) + int(g.sum()))
        rows.append({"case_id": c.case_id, "no_lesion": False, "dice": dice, "uncertainty": p["uncertainty"]})
    return pd.DataFrame(rows).set_index("case_id")


def oof_manifest(
    cases: pd.DataFrame, probs: list[str], work: Path, weights: Path | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold masks of the training frames (thresholded like the segmenter) and a manifest pointing at them."""
    post = {"threshold": 0.5, "largest_component": False}
    if weights is not None:  # the maps come from that recipe's CV: threshold them as its weights say
        from usher2.weights import load_state

        _, meta = load_state(weights, what="segmenter weights")
        post.update(json.loads(meta.get("postprocess", "{}")))
    folders = sorted({f for pattern in probs for f in glob.glob(pattern)})
    if not folders:
        raise SystemExit(f"--oof-probs: no folder matches {probs}")
    table = predicted_masks(
        cases, folders, work / "oof_masks", threshold=post["threshold"], largest_component=post["largest_component"]
    ).set_index("case_id")
    m = cases.set_index("case_id").loc[table.index[~table["no_lesion"]]].reset_index()
    m["mask"] = table.loc[m["case_id"], "mask"].to_numpy()
    path = work / "train_oof_manifest.csv"
    keep = [c for c in m.columns if c not in ("image_path", "mask_path")]
    m["image"] = m["image_path"]
    write_manifest(m[keep], path)
    return read_manifest(path, check_files=False), table


def segmenter_name(weights: str | Path) -> str:
    """``runs/ablation-segmenter-lodo-basic128/heldout_devices/segmenter.safetensors`` -> ``lodo-basic128``."""
    p = Path(weights)
    run = p.parent.parent.name if p.parent.name == "heldout_devices" else p.stem
    return run.replace("ablation-segmenter-", "")


def mask_summary(sg: dict[str, Any], m: pd.DataFrame) -> dict[str, Any]:
    """Dice of one segmenter's test masks with the annotation, and how well its uncertainty finds the bad ones."""
    masks = sg["masks"]
    found = masks[~masks["no_lesion"]]
    # what the flag would give at other thresholds on these frames: descriptive, never used to choose one
    sweep = []
    for q in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        t = float(np.quantile(found["uncertainty"], q))
        un = found[found["uncertainty"] <= t]
        sweep.append({"threshold": t, "unflagged": len(un), "dice_unflagged": float(un["dice"].mean())})
    return {
        "weights": sg["weights"],
        "no_lesion": int(masks["no_lesion"].sum()),
        "failed_predicted": sg["failed"],
        "dice_all": mean_ci(masks["dice"], m.loc[masks.index, "patient_id"]),
        "dice_found": mean_ci(found["dice"], m.loc[found.index, "patient_id"]),
        "uncertainty_auc_for_dice_below_0.5": _auc(
            (found["dice"] < 0.5).astype(int).to_numpy(), found["uncertainty"].to_numpy()
        ),
        "flag_sweep_descriptive": sweep,
    }


# ------------------------------------------------------------------------------ the experiment
def fit_variant(
    name: str,
    family: str,
    train: pd.DataFrame,
    test_given: pd.DataFrame,
    manifest: pd.DataFrame,
    work: Path,
    prov: dict[str, Any],
    *,
    augment: pd.DataFrame | None = None,
    icc: pd.DataFrame | None = None,
    training_masks: str = "given",
    confidence: dict[str, Any] | None = None,
    icc_threshold: float = 0.9,
    seed: int = 0,
) -> Path:
    X = pd.concat([train, test_given[train.columns.intersection(test_given.columns)]])
    X = X.reset_index().rename(columns={"index": "case_id"})
    out = work / "bundles" / f"{family}-{name}"
    fit_cohort(
        X,
        manifest,
        out,
        family=family,
        clinical=["birads"] if family == "combined" else [],
        test_ids=list(test_given.index),
        augment=augment,
        perturbations=icc,
        icc_perturbations=None,
        selection={"icc_threshold": icc_threshold},
        training_masks=training_masks,
        mask_variant=name,
        segmentation_confidence=confidence,
        provenance=prov,
        overwrite=True,
        seed=seed,
    )
    return out


def evaluate_bundle(
    bundle: Path,
    manifest: pd.DataFrame,
    given: pd.DataFrame,
    pred: pd.DataFrame,
    masks: pd.DataFrame,
    flag_thresholds: dict[str, float],
) -> dict[str, Any]:
    b = load_bundle(bundle)
    m = manifest.set_index("case_id")
    clin = m[["birads"]].astype(float)
    pg = pd.Series(b.predict_proba(given.join(clin)), index=given.index)
    pp = pd.Series(b.predict_proba(pred.join(clin)), index=pred.index)
    both = pg.index.intersection(pp.index)
    y, g = m.loc[both, "label"].astype(int).to_numpy(), m.loc[both, "patient_id"].astype(str).to_numpy()
    out: dict[str, Any] = {
        "mask_robustness": b.config.mask_robustness,
        "n_selected": len(b.config.selected_features),
        "given": auc_ci(m.loc[pg.index, "label"], pg, m.loc[pg.index, "patient_id"]),
        "predicted": auc_ci(m.loc[pp.index, "label"], pp, m.loc[pp.index, "patient_id"]),
        "given_same_frames": auc_ci(y, pg[both], g),
        "gap": paired_gap(y, pp[both], pg[both], g),
        "n_no_lesion": len(given.index.difference(pred.index)),
        "devices": {},
        "flags": {},
    }
    for device, idx in m.loc[both].groupby("device").groups.items():
        yy = m.loc[idx, "label"].astype(int)
        out["devices"][str(device)] = {
            "n": len(idx),
            "n_pos": int(yy.sum()),
            "given": _auc(yy.to_numpy(), pg[idx].to_numpy()),
            "predicted": _auc(yy.to_numpy(), pp[idx].to_numpy()),
        }
    for tname, t in flag_thresholds.items():
        unc = masks.loc[both, "uncertainty"]
        rows = {}
        for side, sel in (("unflagged", unc <= t), ("flagged", unc > t)):
            ids = both[sel.to_numpy()]
            rows[side] = {
                "n": len(ids),
                "dice": mean_ci(masks.loc[ids, "dice"], m.loc[ids, "patient_id"]),
                "dice_below_0.5": float((masks.loc[ids, "dice"] < 0.5).mean()) if len(ids) else float("nan"),
                "auc_predicted": auc_ci(m.loc[ids, "label"], pp[ids], m.loc[ids, "patient_id"]),
                "auc_given": auc_ci(m.loc[ids, "label"], pg[ids], m.loc[ids, "patient_id"]),
            }
        out["flags"][tname] = {"threshold": t, **rows}
    return out


def _fmt(r: dict[str, Any]) -> str:
    if not np.isfinite(r.get("auc", np.nan)):
        return "n/a"
    return f"{r['auc']:.3f} ({r['ci_low']:.3f}-{r['ci_high']:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bus-bra", default="../shared/data/bus-bra")
    ap.add_argument("--work", default="runs/fusion_masks")
    ap.add_argument("--out", default=None, help="JSON results (default: WORK/results.json)")
    ap.add_argument(
        "--segmenter-weights", nargs="+", required=True, help="segmenters that predict the test masks (one or more)"
    )
    ap.add_argument("--backbone", default=None, help="NAME=PATH; default: the GE-only backbone (trained once)")
    ap.add_argument("--backbone-epochs", type=int, default=20)
    ap.add_argument("--oof-probs", nargs="*", default=[], help="folders (globs) of out-of-fold probability maps")
    ap.add_argument("--oof-weights", default=None, help="weights of the OOF recipe (threshold, post-processing)")
    ap.add_argument(
        "--variants", nargs="+", default=["given", "augment", "icc", "icc-augment", "oof", "oof-given", "icc-oof"]
    )
    ap.add_argument("--families", nargs="+", default=["dlr", "combined"])
    ap.add_argument("--icc-threshold", type=float, default=0.9)
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    df = cohort(args.bus_bra, work, args.n_train, args.n_test, args.seed)
    tr_cases, te_cases = df[df["split"] == "train"], df[df["split"] == "test"]
    t0 = time.perf_counter()
    backbone = args.backbone or f"usge10t={ge_backbone(args.bus_bra, work, args.backbone_epochs)}"
    t_backbone = time.perf_counter() - t0
    ex = Extractor(work, backbone)
    base = ExtractConfig()
    train, train_p, failed_tr = ex("train", tr_cases, base, contour=True)
    test_g, _, failed_g = ex("test_given", te_cases, base)
    feat_cols = [c for c in train.columns if c not in ID_COLUMNS]
    train, test_g = train[feat_cols], test_g[feat_cols]
    segs: dict[str, dict[str, Any]] = {}  # per segmenter: predicted-mask features, masks vs annotation
    for w in args.segmenter_weights:
        name = segmenter_name(w)
        cfg = with_segmenter_weights(ExtractConfig(masks="predicted"), w)
        test_p, _, failed_p = ex(f"test_pred_{name}", te_cases, cfg)
        t0 = time.perf_counter()
        masks = test_masks(te_cases, cfg)
        ex.seconds[f"test_masks_{name}"] = round(time.perf_counter() - t0, 1)
        segs[name] = {"weights": str(w), "features": test_p[feat_cols], "masks": masks, "failed": failed_p}
    prov = ex.provenance["train"]

    oof = None
    confidence = None
    variants = list(args.variants)
    if args.oof_probs:
        oof_m, oof = oof_manifest(tr_cases, args.oof_probs, work, Path(args.oof_weights) if args.oof_weights else None)
        train_oof, _, _ = ex("train_oof", oof_m, base)
        train_oof = train_oof[feat_cols]
        found = oof[~oof["no_lesion"] & oof["dice"].notna()]
        cal = calibrate_confidence(found["uncertainty"], found["dice"], source=" ".join(args.oof_probs))
        confidence = cal.to_dict()
    else:
        variants = [v for v in variants if "oof" not in v]
    flag_thresholds = {"fixed_0.45": LOW_CONFIDENCE}
    if confidence is not None:
        flag_thresholds["calibrated"] = confidence["threshold"]

    contour_rows = train_p[train_p["perturbation"] == CONTOUR] if train_p is not None else None
    icc_table = train_p[train_p["perturbation"].isin(["original", CONTOUR])] if train_p is not None else None
    results: dict[str, Any] = {}
    fit_seconds: dict[str, float] = {}
    for family in args.families:
        for v in variants:
            kw: dict[str, Any] = {"confidence": confidence, "icc_threshold": args.icc_threshold, "seed": args.seed}
            rows = train
            if v == "augment":
                kw["augment"] = contour_rows
            elif v == "icc":
                kw["icc"] = icc_table
            elif v == "icc-augment":  # both: selection by ICC, training on the copies too
                kw["icc"], kw["augment"] = icc_table, contour_rows
            elif v == "oof":
                rows, kw["training_masks"] = train_oof, "out-of-fold"
            elif v == "oof-given":  # given rows, plus the OOF-mask rows as copies
                kw["augment"] = train_oof.reset_index().assign(perturbation="mask_oof")
            elif v == "icc-oof":
                both = train.index.intersection(train_oof.index)
                kw["icc"] = pd.concat(
                    [
                        train.loc[both].reset_index().assign(perturbation="original"),
                        train_oof.loc[both].reset_index().assign(perturbation="mask_oof"),
                    ]
                )
            t0 = time.perf_counter()
            bundle = fit_variant(v, family, rows, test_g, df, work, prov, **kw)
            fit_seconds[f"{family}-{v}"] = round(time.perf_counter() - t0, 1)
            for name, sg in segs.items():
                r = evaluate_bundle(bundle, df, test_g, sg["features"], sg["masks"], flag_thresholds)
                results[f"{family}-{v}@{name}"] = r
                gap = r["gap"]["gap"]
                print(
                    f"{family}-{v}@{name}: predicted {_fmt(r['predicted'])}, given {_fmt(r['given'])}, gap {gap:+.3f}"
                )

    m = df.set_index("case_id")
    y_te = m.loc[test_g.index, "label"].astype(int)
    summary = {
        "split": {
            "train": {"frames": len(train), "patients": int(tr_cases["patient_id"].nunique()), "failed": failed_tr},
            "test": {
                "frames": len(test_g),
                "patients": int(te_cases["patient_id"].nunique()),
                "devices": te_cases["device"].value_counts().to_dict(),
                "failed_given": failed_g,
            },
        },
        "backbone": backbone,
        "segmenters": {name: mask_summary(sg, m) for name, sg in segs.items()},
        "birads_alone_test_auc": auc_ci(
            y_te, m.loc[test_g.index, "birads"].astype(float), m.loc[test_g.index, "patient_id"]
        ),
        "confidence_calibration": confidence,
        "oof_masks": None
        if oof is None
        else {"n": len(oof), "no_lesion": int(oof["no_lesion"].sum()), "dice": float(oof["dice"].mean())},
        "results": results,
        "seconds": {
            "backbone": round(t_backbone, 1),
            "extract": ex.seconds,
            "fit": fit_seconds,
            "total": round(time.perf_counter() - t_start, 1),
        },
        "args": vars(args),
    }
    out = Path(args.out) if args.out else work / "results.json"
    atomic_write_text(out, json.dumps(summary, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    report(summary)
    print(f"\n-> {out}")


def report(s: dict[str, Any]) -> None:
    sp = s["split"]
    print(
        f"\n## Held-out devices (issue 23): train GE frames n={sp['train']['frames']}, test n={sp['test']['frames']} "
        f"{sp['test']['devices']}; backbone {s['backbone']}"
    )
    for name, tm in s["segmenters"].items():
        print(
            f"segmenter {name}: {tm['no_lesion']} test frames with no lesion found; Dice {tm['dice_all']['mean']:.3f} "
            f"(all frames), {tm['dice_found']['mean']:.3f} (lesion found); uncertainty AUC for Dice < 0.5: "
            f"{tm['uncertainty_auc_for_dice_below_0.5']:.3f}"
        )
    print(f"BI-RADS alone on the test frames: AUC {_fmt(s['birads_alone_test_auc'])}\n")
    head = ["model", "variant", "predicted masks AUC (95% CI)", "given masks AUC (95% CI)"]
    head += ["gap pred - given (95% CI), DeLong p", "per device n (pred/given AUC)", "features"]
    print("| " + " | ".join(head) + " |")
    print("|---|---|---|---|---|---|---|")
    for key, r in s["results"].items():
        fam, _, var = key.partition("-")
        g = r["gap"]
        dev = "; ".join(
            f"{d.split(' @')[0]} {v['n']} ({v['predicted']:.2f}/{v['given']:.2f})" for d, v in r["devices"].items()
        )
        print(
            f"| {fam} | {var} | {_fmt(r['predicted'])} | {_fmt(r['given'])} | {g['gap']:+.3f} ({g['ci_low']:+.3f} to "
            f"{g['ci_high']:+.3f}), p={g['delong_p']:.3f} | {dev} | {r['n_selected']} |"
        )
    head = ["model", "variant", "flag threshold", "unflagged n", "unflagged Dice", "unflagged AUC (predicted masks)"]
    head += ["flagged n", "flagged Dice", "flagged AUC (predicted masks)"]
    print("\n| " + " | ".join(head) + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, r in s["results"].items():
        fam, _, var = key.partition("-")
        for tname, f in r["flags"].items():
            u, fl = f["unflagged"], f["flagged"]
            print(
                f"| {fam} | {var} | {tname} ({f['threshold']:.3f}) | {u['n']} | {u['dice']['mean']:.3f} | "
                f"{_fmt(u['auc_predicted'])} | {fl['n']} | {fl['dice']['mean']:.3f} | {_fmt(fl['auc_predicted'])} |"
            )
    print(f"\ntimings (s): {json.dumps(s['seconds'])}")


if __name__ == "__main__":
    main()
