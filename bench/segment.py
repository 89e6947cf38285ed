"""Benchmark the segmenter: BUS-BRA 5-fold cross-validation, held-out simulated Dice, no-lesion frames, speed.

Usage:
    python bench/segment.py [--run runs/segmenter-unet-cpu] [--n-sim 60] [--threads 2] [--model unet]

Sections:
1. BUS-BRA 5-fold cross-validation of the shipped recipe (official patient-grouped folds; each
   fold's network never saw its held-out patients): Dice, IoU, HD95 and ASSD with 95% CIs
   (patient-level bootstrap), per fold and per device, and how often lesion-free crops of the
   held-out frames are returned as no-lesion. Read from the run folder's per-frame scores
   (``cv_scores.csv``, ``cv_negatives.csv``) when it is present, else from the summary recorded
   in the shipped weights when they were trained (re-create the run with
   ``python train/segment.py --config train/configs/segmenter_unet_cpu.yaml``, about 70 min on 2 cores).
2. Held-out simulated frames (cohort seed 5000, never trained on), segmented now by the shipped
   weights: Dice, IoU, HD95 with 95% CIs; with and without flip test-time augmentation.
3. Speed at 256 x 256: ms per frame and frames/s on the CPU with ``--threads`` threads (batch 1
   and 8, with and without TTA), and on the GPU at batch 256 in fp32 and bf16 when one is present.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from _timing import cpu_inputs, gpu_frames_per_second, seconds_per_call

from usher2.evaluate.segmentation import bootstrap_ci, segmentation_metrics
from usher2.segment import create_segmenter

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("dice", "iou", "hd95", "assd")


def _ci(values: np.ndarray, groups: np.ndarray | None = None, digits: int = 3) -> str:
    mean, lo, hi = bootstrap_ci(values, groups=groups)
    return f"{mean:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def bench_cv(run: Path, seg: object) -> None:
    scores_path, negatives_path = run / "cv_scores.csv", run / "cv_negatives.csv"
    if scores_path.is_file():
        summary = json.loads((run / "cv_summary.json").read_text()) if (run / "cv_summary.json").is_file() else {}
        suffix = "_lcc" if summary.get("largest_component") else ""
        s = pd.read_csv(scores_path, dtype={"patient_id": str})
        print(f"\n1. BUS-BRA 5-fold cross-validation, per-frame scores from {scores_path}")
        print(f"   {len(s)} frames, {s['patient_id'].nunique()} patients; mean (95% CI, patient bootstrap)")
        g = s["patient_id"].to_numpy()
        print(f"   {'':<32}{'n':>6}{'Dice':>22}{'IoU':>22}{'HD95 px':>22}")
        print(
            f"   {'all':<32}{len(s):>6}"
            + "".join(f"{_ci(s[m + suffix].to_numpy(float), g, 3 if m != 'hd95' else 1):>22}" for m in METRICS[:3])
        )
        for label, col in (("fold", "fold"), ("device", "device")):
            for key, part in s.groupby(col):
                pg = part["patient_id"].to_numpy()
                cells = "".join(
                    f"{_ci(part[m + suffix].to_numpy(float), pg, 3 if m != 'hd95' else 1):>22}" for m in METRICS[:3]
                )
                print(f"   {f'{label} {key}'[:32]:<32}{len(part):>6}{cells}")
        print(f"   ASSD {_ci(s['assd' + suffix].to_numpy(float), g, 1)} px; largest component only: {bool(suffix)}")
        if negatives_path.is_file():
            n = pd.read_csv(negatives_path, dtype={"patient_id": str})
            spec = _ci(n["no_lesion"].to_numpy(float), n["patient_id"].to_numpy())
            print(
                f"   lesion-free crops returned as no-lesion: {spec} of {len(n)}; "
                f"mean false-positive area {100 * n['false_area'].mean():.1f}% of the crop"
            )
        return
    cv = json.loads(seg.metadata.get("cv") or "{}")  # type: ignore[attr-defined]
    print(f"\n1. BUS-BRA 5-fold cross-validation: no run folder at {run}; summary recorded in the shipped weights")
    if not cv:
        print("   none recorded")
        return

    def fmt(v: dict[str, float], digits: int = 3) -> str:
        return f"{v['mean']:.{digits}f} ({v['ci_low']:.{digits}f}-{v['ci_high']:.{digits}f})"

    print(f"   {cv['n_frames']} frames, {cv['n_patients']} patients; mean (95% CI, patient bootstrap)")
    print(f"   Dice {fmt(cv['dice'])}  IoU {fmt(cv['iou'])}", end="")
    print(f"  HD95 {fmt(cv['hd95'], 1)} px  ASSD {fmt(cv['assd'], 1)} px")
    print("   per fold Dice: " + ", ".join(f"{k}: {v:.3f}" for k, v in cv["per_fold"].items()))
    for device, v in cv["per_device"].items():
        print(f"   {device[:32]:<32} n={v['n']:>4}  Dice {v['dice']:.3f}")
    if "no_lesion" in cv:
        nl = cv["no_lesion"]
        print(f"   lesion-free crops returned as no-lesion: {fmt(nl['specificity'])} of {nl['n_negative_crops']}")
    print("   (per-device CIs need the run folder; see this script's docstring)")


def bench_simulated(name: str, n: int) -> None:
    from usher2.simulate import SimulationConfig, simulate_cohort

    with tempfile.TemporaryDirectory() as tmp:
        df = simulate_cohort(n, 5000, Path(tmp), config=SimulationConfig(image_size=(256, 256)), workers=2)
        x = np.stack([cv2.imread(str(Path(tmp) / p), cv2.IMREAD_GRAYSCALE) for p in df["image"]])
        truth = np.stack([cv2.imread(str(Path(tmp) / p), cv2.IMREAD_GRAYSCALE) > 127 for p in df["mask"]])
    x = x[:, None].astype(np.float32) / 255.0
    groups = df["patient_id"].to_numpy()
    print(f"\n2. held-out simulated frames (cohort seed 5000, n={len(x)}, never trained on)")
    print(f"   {'':<10}{'Dice':>22}{'IoU':>22}{'HD95 px':>22}{'no lesion':>11}")
    for tta in (False, True):
        seg = create_segmenter(name, device="cpu", tta=tta)
        results = [r for i in range(0, len(x), 8) for r in seg.segment(x[i : i + 8])]
        rows = pd.DataFrame([segmentation_metrics(r.mask, t) for r, t in zip(results, truth, strict=True)])
        cells = "".join(f"{_ci(rows[m].to_numpy(float), groups, 3 if m != 'hd95' else 1):>22}" for m in METRICS[:3])
        print(f"   {'TTA' if tta else 'plain':<10}{cells}{sum(r.no_lesion for r in results):>11}")


def bench_speed(name: str, threads: int) -> None:
    x1, x8 = cpu_inputs(threads)
    print(f"\n3. speed at 256 x 256 (CPU, {threads} threads), full segment(): network, resizing, post-processing")
    print(f"   {'':<10}{'batch 1 ms':>12}{'batch 8 ms/frame':>18}{'frames/s':>10}")
    for tta in (False, True):
        seg = create_segmenter(name, device="cpu", tta=tta)
        b1 = seconds_per_call(seg.segment, x1, 10) * 1000
        b8 = seconds_per_call(seg.segment, x8, 3) * 1000 / 8
        print(f"   {'TTA' if tta else 'plain':<10}{b1:>12.1f}{b8:>18.1f}{1000 / b8:>10.0f}")
    if not torch.cuda.is_available():
        print("   GPU: none on this machine")
        return
    seg = create_segmenter(name, device="cuda")
    net = seg.net  # type: ignore[attr-defined]
    size = seg.config.input_size  # type: ignore[attr-defined]
    print(f"\n   GPU ({torch.cuda.get_device_name()}), network only, batch 256")
    for res in sorted({size, 256}):
        for dtype in (torch.float32, torch.bfloat16):
            fps = gpu_frames_per_second(net, res, dtype)
            print(f"   {res} x {res} {dtype!s:<15} {fps:>10.0f} frames/s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "segmenter-unet-cpu")
    ap.add_argument("--n-sim", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="unet")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    seg = create_segmenter(args.model, device="cpu")
    print(f"segmenter {args.model}: {seg.weights} ({seg.settings()['weights_sha256']})")  # type: ignore[attr-defined]
    bench_cv(args.run, seg)
    bench_simulated(args.model, args.n_sim)
    bench_speed(args.model, args.threads)


if __name__ == "__main__":
    main()
