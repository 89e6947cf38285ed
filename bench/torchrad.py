"""Issue 25: per-ROI radiomics time, the torch backend against pyradiomics, in one run.

Usage:
    python bench/torchrad.py [--n 16] [--size 256] [--threads 1] [--device cpu]

Simulates ``--n`` frames (the usher2 simulator, seed 3) and times, per ROI:

* the full default set (Original + Wavelet + LoG 1-3 mm, every class: 753 columns) with
  pyradiomics (:class:`~usher2.features.radiomics.RadiomicsExtractor`, one frame at a time) and
  with :class:`~usher2.features.torchrad.engine.TorchRadiomics` at batch 1, 4 and ``--n``;
* a bundle-like subset (the 40 columns below: a few classes on four image types) the same way.

It also prints the largest relative difference between the two backends per image type and class
on these frames. Prints a table; not a timed test. GPU rows are printed as not measured without CUDA.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from usher2.features.radiomics import RadiomicsExtractor
from usher2.features.torchrad.engine import TorchRadiomics
from usher2.io.frames import read_frame, read_mask
from usher2.simulate import SimulationConfig, simulate_cohort

SUBSET = [
    f"radiomics_{image}_{cls}_{feature}"
    for image in ("original", "wavelet-HH", "wavelet-LL", "log-sigma-2-0-mm-3D")
    for cls, feature in (
        ("firstorder", "Mean"),
        ("firstorder", "Entropy"),
        ("glcm", "Idm"),
        ("glcm", "Correlation"),
        ("glrlm", "RunEntropy"),
        ("glszm", "ZoneEntropy"),
        ("glszm", "SizeZoneNonUniformityNormalized"),
        ("gldm", "DependenceEntropy"),
        ("ngtdm", "Busyness"),
        ("firstorder", "Skewness"),
    )
]


def _frames(n: int, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    root = Path(tempfile.mkdtemp(prefix="usher2-bench-radiomics-"))
    man = simulate_cohort(n, 3, root, config=SimulationConfig(image_size=(size, size)), workers=1)
    images, masks = [], []
    for row in man.itertuples():
        frame = read_frame(root / row.image)
        images.append((frame.pixels * 255.0).astype(np.float32))
        masks.append(read_mask(root / row.mask, frame.shape, case=row.case_id).astype(bool))
    return images, masks


def _per_roi(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return 1000.0 * (time.perf_counter() - t0) / n


def _row(label: str, images: list, masks: list, columns: list[str] | None, device: str) -> None:
    n = len(images)
    ref = RadiomicsExtractor(columns=columns)
    py = _per_roi(lambda: [ref.extract(i, m.astype(np.uint8)) for i, m in zip(images, masks, strict=True)], n)
    eng = TorchRadiomics(columns=columns, device=device)
    eng.extract_batch(images[:1], masks[:1])  # warm-up (first torch calls)
    cells = []
    for b in sorted({1, 4, n}):
        cells.append(
            _per_roi(lambda b=b: [eng.extract_batch(images[k : k + b], masks[k : k + b]) for k in range(0, n, b)], n)
        )
    best = min(cells)
    print(f"| {label} | {py:.1f} | " + " | ".join(f"{c:.1f}" for c in cells) + f" | {py / best:.2f}x |")


def _agreement(images: list, masks: list) -> None:
    rows = TorchRadiomics().extract_batch(images, masks)
    worst: dict[str, float] = collections.defaultdict(float)
    for row, (img, m) in zip(rows, zip(images, masks, strict=True), strict=True):
        ref = RadiomicsExtractor().extract(img, m.astype(np.uint8))
        for c, r in ref.items():
            key = "_".join(c.split("_")[1:3])
            worst[key] = max(worst[key], abs(row[c] - r) / max(abs(r), 1e-9))
    print("\n| image type, class | largest relative difference torch vs pyradiomics |\n|---|---|")
    for k, v in sorted(worst.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.1e} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images, masks = _frames(args.n, args.size)
    batches = sorted({1, 4, args.n})
    what = f"{args.n} simulated {args.size}-px frames, {args.threads} thread(s), {args.device}"
    print(f"## Radiomics per ROI, ms ({what})\n")
    print("| set | pyradiomics | " + " | ".join(f"torch batch {b}" for b in batches) + " | speed-up |")
    print("|---|---|" + "---|" * len(batches) + "---|")
    _row("full default (753 columns)", images, masks, None, args.device)
    _row(f"subset ({len(SUBSET)} columns)", images, masks, SUBSET, args.device)
    if not torch.cuda.is_available():
        print("| GPU radiomics, ROIs/s | not measured: no CUDA device |")
    _agreement(images[: min(8, args.n)], masks[: min(8, args.n)])


if __name__ == "__main__":
    main()
