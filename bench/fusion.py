"""Benchmark the fusion core on simulated cohorts with known truth, and its speed at scale.

Usage:
    python bench/fusion.py [--train 600] [--test 400] [--classifier lr] [--workers 2] [--work runs/bench-fusion]
                           [--sections families scale]

Sections:
1. families: simulate a training cohort (seed 7100, n=600) and a test cohort (seed 7200, n=400),
   extract features (default radiomics parameters + the shipped usresnet10t backbone; cached in
   ``--work``, resumable), then for clinical, radiomics, deep, dlr and combined: 5-fold nested CV
   on the training cohort, the final refit, and the test AUC with its DeLong 95% CI next to the
   oracle AUC of the same test cases (clinical -> clinical oracle; radiomics/deep/dlr -> image
   oracle; combined -> all). Then DeLong p-values for the orderings the studies report. Targets:
   combined >= 0.97 x oracle; combined >= DLR >= each single source.
2. scale: a full nested-CV fit (5 outer x 3 inner folds, sigmoid calibration, lr) of the dlr
   family on a random 1,000 x 2,000 feature matrix with a planted signal: wall time and peak
   memory. Target <= 5 minutes on 2 cores.
3. bus-bra: benign vs malignant on BUS-BRA with its official patient-grouped 5 folds as the outer
   loop: clinical (BI-RADS), radiomics, deep, dlr and combined (dlr + BI-RADS), AUC with CI.
   Deep features come from a backbone trained on simulated frames only
   (``train/configs/deep_ussim10t_cpu.yaml``), because the shipped one saw BUS-BRA folds 1-4.
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from usher2.evaluate.roc import delong_test, roc_auc_ci
from usher2.features.extract import ID_COLUMNS, ExtractConfig, extract_cohort
from usher2.fusion.cv import fit_final, nested_cv, selected_features
from usher2.fusion.models import build_model, family_columns
from usher2.simulate import SimulationConfig, oracle_aucs, simulate_cohort

CLINICAL = ["age", "tumour_size_mm", "ln_status", "er", "pr", "grade", "ki67"]
ORACLE_OF = {"clinical": "clinical", "radiomics": "image", "deep": "image", "dlr": "image", "combined": "all"}


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _cohort(
    work: Path, name: str, n: int, seed: int, workers: int, enhancer: str | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    folder = work / name
    manifest = simulate_cohort(n, seed, folder, config=SimulationConfig())
    cfg = ExtractConfig(enhancer=enhancer)
    res = extract_cohort(folder / "manifest.csv", work / f"{name}.parquet", cfg, workers=workers)
    if res.failed_cases:
        print(f"  {name}: {len(res.failed_cases)} cases failed extraction and are left out")
    table = res.table.set_index("case_id")
    m = manifest.set_index("case_id").loc[table.index]
    X = table.drop(columns=[c for c in ID_COLUMNS if c in table.columns]).join(m[CLINICAL])
    return X, m


def bench_families(args: argparse.Namespace) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    X_tr, m_tr = _cohort(work, "train", args.train, 7100, args.workers, args.enhancer)
    X_te, m_te = _cohort(work, "test", args.test, 7200, args.workers, args.enhancer)
    n_feat, prep = X_tr.shape[1] - len(CLINICAL), time.perf_counter() - t
    head = f"train n={len(X_tr)} seed 7100, test n={len(X_te)} seed 7200; enhancer {args.enhancer or 'none'}; "
    head += f"{n_feat} imaging features"
    print(f"\n## 1. Families ({head}; simulate + extract {prep:.0f} s)\n")
    y_tr, y_te = m_tr["label"].to_numpy(int), m_te["label"].to_numpy(int)
    oracle = oracle_aucs(m_te.reset_index())
    print("| model | nested-CV AUC (train) | test AUC (95% CI) | oracle | ratio | features | fit s | peak GB |")
    print("|---|---|---|---|---|---|---|---|")
    scores = {}
    for family in ("clinical", "radiomics", "deep", "dlr", "combined"):
        t = time.perf_counter()
        cols = family_columns(list(X_tr.columns), family, clinical=CLINICAL)
        model, grid = build_model(cols, args.classifier, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cv = nested_cv(model, grid, X_tr, y_tr, m_tr["patient_id"].to_numpy())
            final, _ = fit_final(model, grid, X_tr, y_tr, m_tr["patient_id"].to_numpy())
        p = final.predict_proba(X_te)[:, 1]
        scores[family] = p
        r = roc_auc_ci(y_te, p)
        o = oracle[ORACLE_OF[family]]
        print(
            f"| {family} | {cv.auc['auc']:.3f} | {r.auc:.3f} ({r.ci_low:.3f}-{r.ci_high:.3f}) | {o:.3f} "
            f"({ORACLE_OF[family]}) | {r.auc / o:.3f} | {len(selected_features(final))} | "
            f"{time.perf_counter() - t:.0f} | {_peak_gb():.2f} |"
        )
    print("\nDeLong tests on the test set (two-sided):\n")
    print("| comparison | AUC difference (95% CI) | z | p |")
    print("|---|---|---|---|")
    for a, b in (("combined", "dlr"), ("dlr", "radiomics"), ("dlr", "deep"), ("combined", "clinical")):
        d = delong_test(y_te, scores[a], scores[b])
        print(f"| {a} vs {b} | {d.difference:+.3f} ({d.ci_low:+.3f} to {d.ci_high:+.3f}) | {d.z:.2f} | {d.p:.4f} |")
    ratio = roc_auc_ci(y_te, scores["combined"]).auc / oracle["all"]
    print(f"\nTarget combined >= 0.97 x oracle: {ratio:.3f} ({'met' if ratio >= 0.97 else 'NOT met'})")


def bench_scale() -> None:
    rng = np.random.default_rng(0)
    n, p = 1000, 2000
    y = rng.integers(0, 2, n)
    base = rng.normal(size=(n, 50))  # correlated blocks, as radiomics features are
    X = pd.DataFrame(
        np.repeat(base, p // 50, axis=1) + 0.5 * rng.normal(size=(n, p)),
        columns=[f"radiomics_f{i}" for i in range(p // 2)] + [f"deep_bb_{i}" for i in range(p // 2)],
        index=[f"c{i}" for i in range(n)],
    )
    X.iloc[:, :5] += 0.6 * y[:, None]
    model, grid = build_model(family_columns(X.columns, "dlr"), "lr")
    t = time.perf_counter()
    cv = nested_cv(model, grid, X, y)
    fit_final(model, grid, X, y)
    s = time.perf_counter() - t
    print(f"\n## 2. Scale: dlr, lr, {n} cases x {p} features, 5 x 3 nested CV + final refit\n")
    print("| seconds | peak GB | AUC | target |")
    print("|---|---|---|---|")
    print(f"| {s:.0f} | {_peak_gb():.2f} | {cv.auc['auc']:.3f} | <= 300 s ({'met' if s <= 300 else 'NOT met'}) |")


def bench_bus_bra(args: argparse.Namespace) -> None:
    """Benign vs malignant on BUS-BRA, its official patient-grouped 5 folds as the outer loop."""
    from usher2.io.importers import import_bus_bra

    root = Path(args.bus_bra_root)
    if not root.is_dir():
        print(f"\n## 3. BUS-BRA: skipped, {root} is absent")
        return
    backbone = Path(args.bus_bra_backbone)
    if not backbone.is_file():
        print(f"\n## 3. BUS-BRA: skipped, no backbone trained without BUS-BRA labels at {backbone}")
        print("   (train it: usher2 train backbone --config train/configs/deep_ussim10t_cpu.yaml)")
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    manifest = import_bus_bra(root, work / "bus_bra.csv")
    t = time.perf_counter()
    cfg = ExtractConfig(backbones=(f"ussim10t={backbone}",))
    res = extract_cohort(work / "bus_bra.csv", work / "bus_bra.parquet", cfg, workers=args.workers)
    table = res.table.set_index("case_id")
    m = manifest.set_index("case_id").loc[table.index]
    X = table.drop(columns=[c for c in ID_COLUMNS if c in table.columns]).join(m[["birads"]].astype(float))
    y, groups, folds = m["label"].to_numpy(int), m["patient_id"].astype(str).to_numpy(), m["fold"].to_numpy()
    print(
        f"\n## 3. BUS-BRA benign vs malignant ({len(X)} frames, {len(set(groups))} patients, "
        f"{int(y.sum())} malignant; extraction {time.perf_counter() - t:.0f} s, {len(res.failed_cases)} failed)\n"
    )
    print("Outer loop: the official 5 folds (patient-grouped); deep features from a backbone trained on simulated")
    print("frames only (no BUS-BRA label); given masks.\n")
    print("| model | AUC (95% CI, DeLong on pooled out-of-fold) | per-fold AUC | fit s |")
    print("|---|---|---|---|")
    runs = (("clinical", ["birads"]), ("radiomics", []), ("deep", []), ("dlr", []), ("combined", ["birads"]))
    for family, clinical in runs:
        t = time.perf_counter()
        model, grid = build_model(family_columns(list(X.columns), family, clinical=clinical), args.classifier)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cv = nested_cv(model, grid, X, y, groups, fold_ids=folds)
        a = cv.auc
        per = ", ".join(f"{f['auc']:.3f}" for f in cv.folds)
        name = family + (" (BI-RADS)" if clinical else "")
        ci = f"{a['auc']:.3f} ({a['ci_low']:.3f}-{a['ci_high']:.3f})"
        print(f"| {name} | {ci} | {per} | {time.perf_counter() - t:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=600)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--classifier", default="lr")
    ap.add_argument("--enhancer", default="none", help="enhancer before extraction, e.g. pix2pix (default: none)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default="runs/bench-fusion")
    ap.add_argument("--sections", nargs="+", default=["families", "scale", "bus-bra"])
    ap.add_argument("--bus-bra-root", default="../shared/data/bus-bra")
    ap.add_argument("--bus-bra-backbone", default="runs/deep-ussim10t/deep_ussim10t.safetensors")
    args = ap.parse_args()
    args.enhancer = None if args.enhancer in ("", "none") else args.enhancer
    print("# usher2 fusion bench")
    if "families" in args.sections:
        bench_families(args)
    if "scale" in args.sections:
        bench_scale()
    if "bus-bra" in args.sections:
        bench_bus_bra(args)


if __name__ == "__main__":
    main()
