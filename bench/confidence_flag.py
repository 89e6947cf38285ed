"""Issue 23: does ``low_segmentation_confidence`` separate bad masks on devices the segmenter never saw?

Usage:
    python bench/confidence_flag.py --run runs/segmenter-unet-cpu [--bus-bra ../shared/data/bus-bra]
                                    [--fixed 0.45] [--out FILE.json]

``--run`` is a segmenter training folder of ``train/segment.py`` with cross-validation *and* a
leave-device-out run (``heldout_devices: [toshiba, u-systems]``, as the shipped CPU recipe):

* **Calibration** (training folds only): the out-of-fold probability maps of the GE Logiq frames
  (``cv_fold*/probs``: each frame predicted by the fold model that did not train on its patient)
  against their annotations, through :func:`usher2.fusion.confidence.calibrate_confidence` (the
  rule ``usher2 fit --confidence-probs`` applies: the largest uncertainty that leaves at most 5% of
  unflagged masks at Dice < 0.5). Caveat: those fold models trained on the other devices' frames
  of other patients; the calibration frames themselves are GE only.
* **Test**: the Toshiba and U-Systems frames, predicted by the leave-device-out model
  (``heldout_devices/probs``, trained on the GE frames only). Reported for the fixed threshold and
  the calibrated one: frames flagged, mean Dice of flagged and unflagged masks with patient-cluster
  bootstrap 95% CIs, and the uncertainty's AUC for finding masks with Dice < 0.5.

Masks come from the stored maps as :func:`usher2.features.extract.predicted_masks` makes them
(thresholded and post-processed with the weights' settings, uncertainty as the segmenter's score),
so the numbers are those of the saved maps, not a re-run of the networks. Fusion AUC per flag
group needs the fitted bundles of ``bench/fusion_masks.py`` and is not computed here.
"""

from __future__ import annotations

import argparse
import glob
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.evaluate.segmentation import bootstrap_ci
from usher2.features.extract import predicted_masks
from usher2.fusion.confidence import calibrate_confidence
from usher2.io.atomic import atomic_write_text
from usher2.io.importers import import_bus_bra
from usher2.io.manifest import read_manifest

N_BOOT = 2000


def _postprocess(weights: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("postprocess", "{}"))


def _mean_ci(values: pd.Series, groups: pd.Series) -> dict[str, float]:
    v = values.to_numpy(float)
    if not len(v):
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    m, lo, hi = bootstrap_ci(v, n_boot=N_BOOT, groups=groups.to_numpy(), seed=0)
    return {"mean": m, "ci_low": lo, "ci_high": hi, "n": len(v)}


def _auc(bad: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(bad, score)) if 0 < bad.sum() < len(bad) else float("nan")


def _split(found: pd.DataFrame, threshold: float) -> dict[str, Any]:
    flagged = found["uncertainty"] > threshold
    return {
        "threshold": threshold,
        "flagged": int(flagged.sum()),
        "unflagged": int((~flagged).sum()),
        "dice_unflagged": _mean_ci(found.loc[~flagged, "dice"], found.loc[~flagged, "patient_id"]),
        "dice_flagged": _mean_ci(found.loc[flagged, "dice"], found.loc[flagged, "patient_id"]),
        "bad_rate_unflagged": float((found.loc[~flagged, "dice"] < 0.5).mean()),
        "bad_rate_flagged": float((found.loc[flagged, "dice"] < 0.5).mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--bus-bra", default="../shared/data/bus-bra")
    ap.add_argument("--fixed", type=float, default=0.45, help="the fixed default threshold (bits)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()

    cv_dirs = sorted(glob.glob(str(a.run / "cv_fold*" / "probs")))
    held_dir = a.run / "heldout_devices" / "probs"
    held_weights = a.run / "heldout_devices" / "segmenter.safetensors"
    if not cv_dirs or not held_dir.is_dir() or not held_weights.is_file():
        raise SystemExit(f"{a.run}: needs cv_fold*/probs and heldout_devices/{{probs,segmenter.safetensors}}")
    post = _postprocess(held_weights)
    kw = {"threshold": float(post.get("threshold", 0.5)), "largest_component": bool(post.get("largest_component"))}
    with tempfile.TemporaryDirectory(prefix="usher2-flag-") as tmp:
        manifest = Path(tmp) / "bus_bra.csv"
        import_bus_bra(a.bus_bra, manifest)
        df = read_manifest(manifest, check_files=False)
        ge = df[df["device"].astype(str).str.startswith("GE")]
        other = df[~df["device"].astype(str).str.startswith("GE")]
        cal = predicted_masks(ge, cv_dirs, Path(tmp) / "cal", **kw)
        test = predicted_masks(other, held_dir, Path(tmp) / "test", **kw)
    pid = df.set_index("case_id")["patient_id"]
    for t in (cal, test):
        t["patient_id"] = t["case_id"].map(pid).to_numpy()
    cal_found = cal[~cal["no_lesion"] & cal["dice"].notna()]
    test_found = test[~test["no_lesion"] & test["dice"].notna()].reset_index(drop=True)
    rules = {
        "recall 0.8 (default)": {"recall": 0.8},
        "recall 0.9": {"recall": 0.9},
        "<= 5% bad unflagged": {"recall": None, "max_bad_rate": 0.05},
    }
    cals = {
        name: calibrate_confidence(cal_found["uncertainty"], cal_found["dice"], source=", ".join(cv_dirs), **kw_rule)
        for name, kw_rule in rules.items()
    }
    bad = (test_found["dice"] < 0.5).to_numpy()
    cal_bad = (cal_found["dice"] < 0.5).to_numpy()
    result = {
        "run": str(a.run),
        "calibration": {
            "frames": len(cal),
            "no_lesion": int(cal["no_lesion"].sum()),
            "bad_rate": float(cal_bad.mean()),
            "uncertainty_median_good_bad": [
                float(cal_found["uncertainty"][~cal_bad].median()),
                float(cal_found["uncertainty"][cal_bad].median()),
            ],
            "rules": {name: c.to_dict() for name, c in cals.items()},
        },
        "test": {
            "frames": len(test),
            "no_lesion": int(test["no_lesion"].sum()),
            "devices": other["device"].value_counts().to_dict(),
            "patients": int(other["patient_id"].nunique()),
            "bad_rate": float(bad.mean()),
            "uncertainty_median_good_bad": [
                float(test_found["uncertainty"][~bad].median()),
                float(test_found["uncertainty"][bad].median()),
            ],
            "dice_found": _mean_ci(test_found["dice"], test_found["patient_id"]),
            "uncertainty_auc_for_dice_below_0.5": _auc(bad, test_found["uncertainty"].to_numpy()),
            "fixed": _split(test_found, a.fixed),
            **{name: _split(test_found, c.threshold) for name, c in cals.items()},
        },
    }
    out = a.out or a.run / "confidence_flag.json"
    atomic_write_text(out, json.dumps(result, indent=2, default=float))
    t, c = result["test"], result["calibration"]
    print(
        f"calibration: {c['frames']} GE frames' out-of-fold masks, {c['no_lesion']} no lesion, "
        f"{c['bad_rate']:.1%} of found masks at Dice < 0.5; median uncertainty good/bad "
        f"{c['uncertainty_median_good_bad'][0]:.3f}/{c['uncertainty_median_good_bad'][1]:.3f} bits"
    )
    print(
        f"held-out devices: {t['frames']} frames, {t['patients']} patients, {t['no_lesion']} no lesion, "
        f"{t['bad_rate']:.1%} of found masks at Dice < 0.5; median uncertainty good/bad "
        f"{t['uncertainty_median_good_bad'][0]:.3f}/{t['uncertainty_median_good_bad'][1]:.3f} bits; Dice of found "
        f"masks {t['dice_found']['mean']:.3f}; uncertainty AUC for Dice < 0.5: "
        f"{t['uncertainty_auc_for_dice_below_0.5']:.3f}"
    )
    print(
        "| threshold rule | bits | flagged | unflagged | Dice unflagged (95% CI) | Dice flagged (95% CI) | bad unfl. |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in ("fixed", *rules):
        s = t[name]
        u, f = s["dice_unflagged"], s["dice_flagged"]
        label = f"fixed {a.fixed}" if name == "fixed" else f"calibrated: {name}"
        print(
            f"| {label} | {s['threshold']:.3f} | {s['flagged']} | {s['unflagged']} | "
            f"{u['mean']:.3f} ({u['ci_low']:.3f}-{u['ci_high']:.3f}) | {f['mean']:.3f} ({f['ci_low']:.3f}-"
            f"{f['ci_high']:.3f}) | {s['bad_rate_unflagged']:.1%} |"
        )
    print(f"-> {out}")


if __name__ == "__main__":
    main()
