"""Benchmark the MRI adapter: 3D preparation + extraction speed, and each study recipe against its oracle.

Usage:
    python bench/mri.py [--out runs/bench-mri] [--studies prostate breast-mpmri breast-birads breast-deep]
                        [--n-train N] [--n-test 200] [--workers 2] [--speed-cases 3] [--skip-speed]
                        [--skip-recipes]

Sections:
1. speed: ``--speed-cases`` phantoms on a 40 x 256 x 256 grid of 3 x 0.5 x 0.5 mm (the breast study's
   target spacing) with T1, T2 and ADC; each case read from NIfTI, prepared (resampled to 0.5 x 0.5 x 3
   mm, T1 and ADC registered rigidly to T2, z-scored) and its 3D radiomics extracted (usher2's MRI
   defaults: Original image, every class, plus a 3 mm peritumoral shell) on one process. Printed:
   seconds per case by stage, median over the cases, against the target <= 5 s on 2 cores.
2. recipes: ``usher2 mri reproduce`` of each study with the recipe's training size (or ``--n-train``)
   and ``--n-test`` held-out phantoms (200 by default, for a usable CI; 0: the recipe's own, 41 for
   the prostate study), ``--workers`` processes. Printed per study: extraction throughput (cases/s for the
   whole 3D preparation + extraction of both cohorts), and per task every model's held-out AUC
   (DeLong 95% CI) next to the oracle AUC of what it can see on the same cases; the final model's
   ratio against the target >= 0.95. The ``ceiling`` column is the finite-sample ceiling: a logistic
   regression on the true label-model terms of the oracle's variables (``mri_truth_design``), fitted
   on the same training phantoms and scored on the same held-out ones, i.e. what a model that knew
   which variables matter, and their form, would reach with this many training cases
   (``ceiling/oracle`` beside it). Descriptor models have none (their inputs are noisy readings).

Everything is cached under ``--out``: a rerun reuses the phantoms and feature tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

from usher2.mri.recipes import TARGET_RATIO, load_recipe, reproduce


def speed(out: Path, n: int) -> None:
    import SimpleITK as sitk

    from usher2.mri.features import MRIExtractConfig, _features, _prepared, mri_case_features
    from usher2.mri.manifest import read_mri_manifest
    from usher2.mri.phantom import MRIPhantomConfig, simulate_mri_cohort

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    cfg = MRIPhantomConfig(shape_zyx=(40, 256, 256), spacing_zyx_mm=(3.0, 0.5, 0.5), sequences=("t1", "t2", "adc"))
    simulate_mri_cohort(n, 7, out / "speed", cfg, workers=2)
    man = read_mri_manifest(out / "speed" / "manifest.csv", sequences=["t2", "adc", "t1"])
    ext = MRIExtractConfig(sequences=("t2", "adc", "t1"), spacing=(0.5, 0.5, 3.0), kinetics=False)
    mri_case_features(man.iloc[0].to_dict(), ext)  # warm-up: imports, extractor set-up
    rows = []
    for case in man.to_dict(orient="records"):
        t = time.perf_counter()
        p = _prepared(case, ext)  # read + prepare_case (what mri_case_features does first)
        t_prep = time.perf_counter() - t
        t1 = time.perf_counter()
        feats = _features(ext, p["prep"].volumes, p["mask"], p["dce"], p["times"])
        t_feat = time.perf_counter() - t1
        tim = p["prep"].timings
        rows.append(
            {
                "case": case["case_id"],
                "read": t_prep - tim["total"],
                "resample": tim["resample"],
                "register": tim["register"],
                "mask+normalise": tim["mask"] + tim["normalise"],
                "radiomics": t_feat,
                "total (s)": time.perf_counter() - t,
                "columns": len(feats),
            }
        )
    df = pd.DataFrame(rows)
    print("\n## 1. Preparation + extraction of a 3-sequence 256 x 256 x 40 case (T2 reference, T1 + ADC registered)")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    med = statistics.median(df["total (s)"])
    print(f"median {med:.2f} s per case; target <= 5 s: {'met' if med <= 5 else 'NOT met'}")


def ceilings(study_dir: Path, study: str) -> dict[tuple[str, str], float]:
    """``{(task, model): AUC}`` of the correctly specified logistic regression on the oracle's variables."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from usher2.mri.phantom import mri_truth_design
    from usher2.mri.recipes import _phantom_config

    rec = load_recipe(study)
    paths = {k: study_dir / "phantoms" / k / "manifest.csv" for k in ("train", "test")}
    if not all(p.is_file() for p in paths.values()):
        return {}
    config = _phantom_config(rec, None)
    cohorts = {k: pd.read_csv(p) for k, p in paths.items()}
    out = {}
    for task in rec.tasks:
        man = {k: (m.query(task.subset) if task.subset else m) for k, m in cohorts.items()}
        man = {k: m[pd.to_numeric(m[task.label], errors="coerce").notna()] for k, m in man.items()}
        for m in rec.models:
            if m.task != task.name or m.oracle == "descriptors":
                continue
            names = [m.oracle] if isinstance(m.oracle, str) else list(m.oracle)
            kind = "her2_low" if task.label == "her2_low" else "label"
            design = {k: mri_truth_design(man[k], names, config, task=kind) for k in man}
            y = {k: man[k][task.label].astype(int).to_numpy() for k in man}
            lr = LogisticRegression(C=1e4, max_iter=5000).fit(design["train"].to_numpy(), y["train"])
            score = lr.decision_function(design["test"].to_numpy())
            out[(task.name, m.name)] = float(roc_auc_score(y["test"], score)) if 0 < y["test"].sum() else np.nan
    return out


def recipes(out: Path, studies: list[str], n_train: int | None, n_test: int | None, workers: int) -> None:
    print("\n## 2. Study recipes on held-out phantoms")
    rows = []
    for study in studies:
        t = time.perf_counter()
        res = reproduce(study, out / study, n_train=n_train, n_test=n_test, workers=workers, log=print)
        man = [pd.read_csv(p) for p in (out / study / "phantoms").glob("*/manifest.csv")]
        n_cases = sum(len(m) for m in man)
        rate = n_cases / res.seconds["features"] if res.seconds["features"] > 0.5 else float("nan")
        print(
            f"\n### {study}: {n_cases} cases, features {res.seconds['features']:.0f} s ({rate:.2f} cases/s), "
            f"models {res.seconds['models']:.0f} s, total {time.perf_counter() - t:.0f} s"
        )
        t2 = res.table.copy()
        ceil = ceilings(out / study, study)
        t2["ceiling"] = [ceil.get((a, b), float("nan")) for a, b in zip(t2["task"], t2["model"], strict=True)]
        t2["ceiling/oracle"] = t2["ceiling"] / t2["oracle_auc"]
        print(
            t2[
                [
                    "task",
                    "model",
                    "final",
                    "n_train",
                    "n_test",
                    "cv_auc",
                    "test_auc",
                    "test_ci_low",
                    "test_ci_high",
                    "oracle_view",
                    "oracle_auc",
                    "ratio",
                    "ceiling",
                    "ceiling/oracle",
                ]
            ].to_string(index=False, float_format=lambda v: f"{v:.3f}")
        )
        for r in res.final().itertuples():
            c = ceil.get((r.task, r.model), float("nan"))
            rows.append(
                {
                    "study": study,
                    "task": r.task,
                    "final model": r.model,
                    "held-out AUC (95% CI)": f"{r.test_auc:.3f} ({r.test_ci_low:.3f}-{r.test_ci_high:.3f})",
                    "oracle AUC": f"{r.oracle_auc:.3f}",
                    "ratio": f"{r.ratio:.3f}",
                    f">= {TARGET_RATIO}": "met" if r.meets_target else "NOT met",
                    "ceiling (ratio)": f"{c:.3f} ({c / r.oracle_auc:.3f})",
                    "cases/s": f"{rate:.2f}",
                }
            )
    print("\n## Summary: final models")
    print(pd.DataFrame(rows).to_string(index=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-mri"))
    ap.add_argument("--studies", nargs="+", default=["prostate", "breast-birads", "breast-mpmri", "breast-deep"])
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-test", type=int, default=200, help="held-out phantoms per study (0: the recipe's)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--speed-cases", type=int, default=3)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-recipes", action="store_true")
    a = ap.parse_args()
    print(f"usher2 bench/mri.py on {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    a.out.mkdir(parents=True, exist_ok=True)
    if not a.skip_speed:
        speed(a.out, a.speed_cases)
    if not a.skip_recipes:
        recipes(a.out, a.studies, a.n_train, a.n_test or None, a.workers)


if __name__ == "__main__":
    main()
