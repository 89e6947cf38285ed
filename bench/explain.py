"""Benchmark explainability: CAMs/s per method on the shipped backbone, and memory over 1,000 CAMs.

Usage:
    python bench/explain.py [--threads 1] [--reps 20] [--memory-cams 1000] [--batch 1]

Sections (memory first, on a baseline that ScoreCAM's large temporary batches have not raised):
1. memory: resident memory (RSS) before and after ``--memory-cams`` consecutive Grad-CAMs
   (after 50 warm-up calls); target growth <= 5%.
2. speed: CAMs/s per method (gradcam, gradcam++, scorecam, eigencam, layercam) on the CPU for
   the shipped ``usresnet10t`` backbone at its input size (128 x 128 ROI crop), through
   :func:`usher2.explain.explain` (hooks registered and released on every call) with the
   default target (sum of the pooled features), ``--batch`` crops per call; and
   :func:`usher2.explain.explain_frame` (crop + normalise + Grad-CAM + paste-back) on a
   256 x 256 frame.

With more torch threads than free cores, OpenMP threads spin against each other; on a shared
2-core machine one thread was about 100x faster than two for small inputs, hence ``--threads 1``.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import numpy as np
import torch

from usher2.explain import CAM_METHODS, PooledFeatureTarget, explain, explain_frame
from usher2.features.deep import DeepExtractor


def _rss_mib() -> float:
    try:
        import psutil

        return psutil.Process(os.getpid()).memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_speed(ex: DeepExtractor, reps: int, batch: int) -> None:
    h, w = ex.input_size
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, 3, h, w)).astype(np.float32))
    targets = [PooledFeatureTarget()] * batch
    print(f"\n2. speed: {ex.name} at {h} x {w}, CPU, {torch.get_num_threads()} thread(s), batch {batch}")
    print(f"   {'method':<14}{'ms/call':>10}{'CAMs/s':>10}")
    for method in CAM_METHODS:
        explain(ex.model, x, method=method, targets=targets)  # warm-up
        n = max(2, reps // 10) if method == "scorecam" else reps  # one forward pass per channel (512 here)
        t = time.perf_counter()
        for _ in range(n):
            explain(ex.model, x, method=method, targets=targets)
        dt = (time.perf_counter() - t) / n
        print(f"   {method:<14}{1000 * dt:>10.1f}{batch / dt:>10.1f}")
    frame = np.random.default_rng(1).random((256, 256), dtype=np.float32)
    mask = np.zeros((256, 256), bool)
    mask[80:170, 60:200] = True
    explain_frame(frame, mask, backbone=ex)
    t = time.perf_counter()
    for _ in range(reps):
        explain_frame(frame, mask, backbone=ex)
    dt = (time.perf_counter() - t) / reps
    print(f"   {'explain_frame':<14}{1000 * dt:>10.1f}{1 / dt:>10.1f}   (256 x 256 frame, Grad-CAM, crop + paste-back)")


def bench_memory(ex: DeepExtractor, n: int) -> None:
    h, w = ex.input_size
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32))
    targets = [PooledFeatureTarget()]
    for _ in range(50):
        explain(ex.model, x, targets=targets)
    gc.collect()
    before = _rss_mib()
    t = time.perf_counter()
    for _ in range(n):
        explain(ex.model, x, targets=targets)
    dt = time.perf_counter() - t
    gc.collect()
    after = _rss_mib()
    growth = 100 * (after - before) / before
    print(f"\n1. memory: {n} consecutive Grad-CAMs ({ex.name}, {h} x {w}, {n / dt:.0f} CAMs/s)")
    print(f"   RSS {before:.1f} -> {after:.1f} MiB: {growth:+.2f}% (target <= +5%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--memory-cams", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ex = DeepExtractor("usresnet10t", device="cpu")
    bench_memory(ex, args.memory_cams)
    bench_speed(ex, args.reps, args.batch)


if __name__ == "__main__":
    main()
