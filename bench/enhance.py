"""Benchmark every enhancer: quality on held-out simulated pairs and on BUS-BRA, and speed.

Usage:
    python bench/enhance.py [--n-sim 100] [--n-busbra 120] [--threads 2] [--methods none srad pix2pix]

Sections (one row per method; ``none`` is the input itself):
1. Held-out simulated pairs (cohort seed 3000, never used in training: the enhancer trains on
   seed 1000 and validates on 2000): PSNR / SSIM against the clean rendering, lesion gCNR and CNR
   (lesion vs a ring 3-13 px outside it), speckle SNR in that ring.
2. BUS-BRA official fold 1 (no clean reference; fold 1 is never used to train the CycleGAN):
   lesion-vs-ring gCNR and ring speckle SNR; then the raw frames' quality per device.
3. Speed: ms per 256 x 256 frame on the CPU with ``--threads`` threads (batch 1 and 8), and on
   the GPU when one is present.
4. Downstream: Dice of the shipped segmenter on the held-out simulated frames of section 1, each
   enhanced first by every method. The segmenter was trained on raw frames, so an enhancer that
   shifts the input distribution can lower Dice even when it helps a human reader.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from _timing import cpu_inputs, gpu_frames_per_second, seconds_per_call

from usher2.enhance import available_enhancers, create_enhancer
from usher2.evaluate.image_quality import cnr, gcnr, psnr, region_ring, speckle_snr, ssim
from usher2.io.errors import InputError

BUS_BRA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bus-bra"
LEARNED = ("pix2pix", "cyclegan")


def _methods(requested: list[str] | None) -> dict[str, object]:
    out = {}
    for name in requested or available_enhancers():
        try:
            out[name] = create_enhancer(name)
        except InputError as exc:  # a learned enhancer whose weights are not trained yet
            print(f"skipping {name}: {exc}")
    return out


def _simulated(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from usher2.enhance.training import simulated_pairs

    with tempfile.TemporaryDirectory() as tmp:
        pairs = simulated_pairs(Path(tmp), n, 3000)
    return pairs["x"][:, 0].numpy(), pairs["y"][:, 0].numpy(), pairs["mask"][:, 0].numpy() > 0.5


def _row(name: str, values: dict[str, float], cols: list[str]) -> str:
    return f"{name:<10}" + "".join(f"{values[c]:>10.3f}" for c in cols)


def bench_simulated(methods: dict[str, object], n: int) -> dict[str, dict[str, float]]:
    x, clean, masks = _simulated(n)
    rings = [region_ring(m) for m in masks]
    cols = ["PSNR dB", "SSIM", "gCNR", "CNR", "SNR ring"]
    print(f"\n1. held-out simulated pairs (n={n}, cohort seed 3000)")
    print(f"{'method':<10}" + "".join(f"{c:>10}" for c in cols))
    results = {}
    for name, e in methods.items():
        y = np.concatenate([e(x[i : i + 16, None]) for i in range(0, n, 16)])[:, 0]
        r = {
            "PSNR dB": np.mean([psnr(y[i], clean[i], data_range=1.0) for i in range(n)]),
            "SSIM": np.mean([ssim(y[i], clean[i], data_range=1.0) for i in range(n)]),
            "gCNR": np.mean([gcnr(y[i], masks[i], rings[i]) for i in range(n)]),
            "CNR": np.mean([cnr(y[i], masks[i], rings[i]) for i in range(n)]),
            "SNR ring": np.mean([speckle_snr(y[i], rings[i]) for i in range(n)]),
        }
        results[name] = r
        print(_row(name, r, cols))
    return results


def bench_bus_bra(methods: dict[str, object], n: int) -> dict[str, dict[str, float]] | None:
    if not BUS_BRA.exists():
        print(f"\n2. BUS-BRA: skipped ({BUS_BRA} is absent)")
        return None
    import pandas as pd

    info = pd.read_csv(BUS_BRA / "bus_data.csv").merge(pd.read_csv(BUS_BRA / "5-fold-cv.csv")[["ID", "kFold"]], on="ID")
    fold1 = info[info["kFold"] == 1].sort_values("ID")
    pick = fold1.iloc[np.linspace(0, len(fold1) - 1, min(n, len(fold1))).astype(int)]
    frames, masks = [], []
    for _, row in pick.iterrows():
        frames.append(cv2.imread(str(BUS_BRA / "Images" / f"{row.ID}.png"), cv2.IMREAD_GRAYSCALE) / 255.0)
        masks.append(cv2.imread(str(BUS_BRA / "Masks" / f"mask_{row.ID[4:]}.png"), cv2.IMREAD_GRAYSCALE) > 127)
    rings = [region_ring(m) for m in masks]
    cols = ["gCNR", "SNR ring"]
    print(f"\n2. BUS-BRA official fold 1 (n={len(pick)} frames, native size)")
    print(f"{'method':<10}" + "".join(f"{c:>10}" for c in cols))
    results = {}
    for name, e in methods.items():
        g, s = [], []
        for f, m, ring in zip(frames, masks, rings, strict=True):
            y = e(f.astype(np.float32)[None, None])[0, 0]
            g.append(gcnr(y, m, ring))
            s.append(speckle_snr(y, ring))
        results[name] = {"gCNR": float(np.mean(g)), "SNR ring": float(np.mean(s))}
        print(_row(name, results[name], cols))
    print("\n   raw frames by device (all folds, first 60 frames of each): median lesion gCNR / ring SNR")
    for device, rows in info.groupby("Device"):
        g, s = [], []
        for _, row in rows.sort_values("ID").head(60).iterrows():
            f = cv2.imread(str(BUS_BRA / "Images" / f"{row.ID}.png"), cv2.IMREAD_GRAYSCALE) / 255.0
            m = cv2.imread(str(BUS_BRA / "Masks" / f"mask_{row.ID[4:]}.png"), cv2.IMREAD_GRAYSCALE) > 127
            g.append(gcnr(f, m, region_ring(m)))
            s.append(speckle_snr(f, region_ring(m)))
        print(f"   {device:<32} n={len(rows):>4}  gCNR {np.median(g):.3f}  SNR {np.median(s):.2f}")
    return results


def bench_speed(methods: dict[str, object], threads: int) -> None:
    x1, x8 = cpu_inputs(threads)
    print(f"\n3. speed, ms per 256x256 frame (CPU, {threads} threads)")
    print(f"{'method':<10}{'batch 1':>10}{'batch 8':>10}")
    for name, e in methods.items():
        b1 = seconds_per_call(e, x1, 5) * 1000
        b8 = seconds_per_call(e, x8, 1) * 1000 / 8
        print(f"{name:<10}{b1:>10.1f}{b8:>10.1f}")
    if torch.cuda.is_available():
        print(f"\n   GPU ({torch.cuda.get_device_name()}), frames/s at batch 256, 256 x 256, fp32 and bf16")
        for name in LEARNED:
            if name not in methods:
                continue
            for dtype in (torch.float32, torch.bfloat16):
                fps = gpu_frames_per_second(methods[name].generator, 256, dtype)
                print(f"   {name:<10} {dtype!s:<15} {fps:>10.0f} frames/s")
    else:
        print("   GPU: none on this machine")


def bench_downstream(methods: dict[str, object], n: int) -> None:
    from usher2.evaluate.segmentation import bootstrap_ci, dice
    from usher2.segment import create_segmenter

    print(f"\n4. downstream: shipped segmenter (trained on raw frames) on enhanced held-out frames (n={n})")
    try:
        seg = create_segmenter("unet", device="cpu")
    except InputError as exc:
        print(f"   skipped: {exc}")
        return
    x, _, masks = _simulated(n)
    print(f"{'method':<10}{'Dice':>10}{'95% CI':>18}")
    for name, e in methods.items():
        y = np.concatenate([np.asarray(e(x[i : i + 8, None])) for i in range(0, len(x), 8)])
        pred = np.concatenate([seg.predict_mask(y[i : i + 8]) for i in range(0, len(y), 8)])[:, 0]
        mean, lo, hi = bootstrap_ci(np.array([dice(p, m) for p, m in zip(pred, masks, strict=True)]))
        print(f"{name:<10}{mean:>10.3f}{f'{lo:.3f}-{hi:.3f}':>18}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-sim", type=int, default=100)
    ap.add_argument("--n-busbra", type=int, default=120)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="+")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = _methods(args.methods)
    sim = bench_simulated(methods, args.n_sim)
    real = bench_bus_bra(methods, args.n_busbra)
    bench_speed(methods, args.threads)
    bench_downstream(methods, args.n_sim)
    classical = [m for m in sim if m not in LEARNED and m != "none"]
    if classical:
        best = max(classical, key=lambda m: sim[m]["PSNR dB"])
        print(f"\nbest classical baseline by PSNR: {best}")
        for name in (m for m in LEARNED if m in sim):
            d = {k: sim[name][k] - sim[best][k] for k in ("PSNR dB", "SSIM", "gCNR")}
            line = f"{name} - {best}: PSNR {d['PSNR dB']:+.2f} dB, SSIM {d['SSIM']:+.3f}, sim gCNR {d['gCNR']:+.3f}"
            if real is not None:
                best_real = max((m for m in classical), key=lambda m: real[m]["gCNR"])
                line += f", BUS-BRA gCNR {real[name]['gCNR'] - real[best_real]['gCNR']:+.3f} (vs {best_real})"
            print(line)


if __name__ == "__main__":
    main()
