"""Benchmark feature extraction: radiomics and deep ROIs/s, 1 -> 2 worker scaling, peak memory.

Usage:
    python bench/extract.py [--sections radiomics deep scaling memory] [--memory-cases 2000]
                            [--scaling-cases 64] [--backbones usresnet10t resnet101 ...]

Sections:
1. radiomics: ROIs/s on one core (SimpleITK limited to 1 thread) for a 256 x 256 simulated
   frame with a ~7,500-pixel elliptical ROI: Original only, and Original + Wavelet + LoG (the
   default parameters). Targets: >= 30 and >= 7 ROIs/s per core.
2. deep: ROIs/s per backbone through DeepExtractor (crop + normalise + forward), on the CPU with
   all threads at batch 32, and on the GPU (bf16 autocast, batch 256) when one is present.
   Study backbones are randomly initialised here (speed does not depend on the weights).
   Target: resnet101 >= 3,000 ROIs/s on an H100-class GPU.
3. scaling: ``extract_cohort`` through a warm local Dask cluster of 1 and then 2 single-thread
   workers on the same simulated cohort (default parameters, shipped backbone); efficiency =
   (rate with 2) / (2 x rate with 1). Target >= 0.85.
4. memory: peak resident memory (this process; extraction in-process) of a ``--memory-cases``
   case extraction with the default parameters and backbone. Target < 4 GB for 2,000 cases.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _timing import seconds_per_call

from usher2.features.deep import DEFAULT_BACKBONE, STUDY_BACKBONES, DeepExtractor, RandomInitWarning
from usher2.features.extract import ExtractConfig, extract_cohort
from usher2.features.radiomics import RadiomicsExtractor


def _frame_and_roi(size: int = 256, area: int = 7500) -> tuple[np.ndarray, np.ndarray]:
    from usher2.simulate import SimulationConfig, simulate_cohort

    with tempfile.TemporaryDirectory() as d:
        df = simulate_cohort(1, 123, d, config=SimulationConfig(image_size=(size, size)), workers=1)
        import cv2

        img = cv2.imread(str(Path(d) / df["image"].iloc[0]), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    b = np.sqrt(area / (np.pi * 1.5))  # ellipse with semi-axes 1.5b x b
    mask = ((xx - size / 2) / (1.5 * b)) ** 2 + ((yy - size / 2) / b) ** 2 <= 1
    return img, mask


def bench_radiomics(reps: int) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    img, mask = _frame_and_roi()
    print(f"\n## 1. Radiomics, one core, 256x256 frame, ROI {int(mask.sum())} px\n")
    print("| image types | features | ms/ROI | ROIs/s per core | target |")
    print("|---|---|---|---|---|")
    for label, params, target in (
        ("Original", {"imageType": {"Original": {}}, "setting": {"binWidth": 8}}, 30),
        ("Original + Wavelet + LoG (default)", None, 7),
    ):
        ex = RadiomicsExtractor(params)
        n = len(ex.extract(img, mask))
        s = seconds_per_call(lambda m, ex=ex: ex.extract(img, m), mask, reps)
        ok = "met" if 1 / s >= target else "NOT met"
        print(f"| {label} | {n} | {1000 * s:.1f} | {1 / s:.1f} | >= {target} ({ok}) |")


def bench_deep(backbones: list[str], reps: int) -> None:
    img, mask = _frame_and_roi()
    pixels = img / 255.0
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"\n## 2. Deep features, ROIs/s (CPU: {torch.get_num_threads()} threads, batch 32; GPU: bf16, batch 256)\n")
    print("| backbone | features | " + " | ".join(f"{d} ROIs/s" for d in devices) + " |")
    print("|---|---|" + "---|" * len(devices))
    for name in backbones:
        spec = name if name == DEFAULT_BACKBONE else f"{name}=random"
        cells = []
        width = 0
        for device in devices:
            batch = 32 if device == "cpu" else 256
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RandomInitWarning)
                ex = DeepExtractor(spec, device=device, batch_size=batch)
            width = ex.num_features
            px, ms = [pixels] * batch, [mask] * batch

            def run(_: object, ex: DeepExtractor = ex, px: list = px, ms: list = ms) -> None:
                ex.features(px, ms)
                if ex.device.type == "cuda":
                    torch.cuda.synchronize()

            s = seconds_per_call(run, None, reps)
            cells.append(f"{batch / s:,.0f}")
        print(f"| {name} | {width} | " + " | ".join(cells) + " |")
    if not torch.cuda.is_available():
        print("\nNo GPU here: the resnet101 >= 3,000 ROIs/s target was not measured.")


def _cohort(n: int, root: Path) -> Path:
    from usher2.simulate import SimulationConfig, simulate_cohort

    simulate_cohort(n, 77, root, config=SimulationConfig(image_size=(256, 256)))
    return root / "manifest.csv"


def bench_scaling(n: int) -> None:
    from distributed import Client, LocalCluster

    from usher2.features.cohort import manifest_cases
    from usher2.features.extract import extract_chunk

    cfg = ExtractConfig(chunk_size=8)
    print(f"\n## 3. Scaling, {n} simulated 256x256 cases, default parameters + {DEFAULT_BACKBONE}\n")
    print("| workers | seconds | cases/s | efficiency |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        manifest = _cohort(n, Path(d) / "cohort")
        warm = _cohort(4, Path(d) / "warm")
        warm_cases, _ = manifest_cases(warm)
        rates = {}
        for workers in (1, 2):
            with (
                LocalCluster(
                    n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, silence_logs=50
                ) as cluster,
                Client(cluster) as client,
            ):
                addr = cluster.scheduler_address
                client.run(extract_chunk, cfg, warm_cases)  # load the models in every worker first
                extract_cohort(warm, Path(d) / f"warm{workers}.parquet", cfg)  # and in this (driver) process
                t = time.perf_counter()
                extract_cohort(manifest, Path(d) / f"scale{workers}.parquet", cfg, scheduler=addr)
                s = time.perf_counter() - t
            rates[workers] = n / s
            eff = "" if workers == 1 else f"{rates[2] / (2 * rates[1]):.2f} (target >= 0.85)"
            print(f"| {workers} | {s:.1f} | {rates[workers]:.2f} | {eff} |")


def bench_memory(n: int) -> None:
    print(f"\n## 4. Peak memory, {n}-case in-process extraction, default parameters + {DEFAULT_BACKBONE}\n")
    with tempfile.TemporaryDirectory() as d:
        manifest = _cohort(n, Path(d) / "cohort")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        t = time.perf_counter()
        res = extract_cohort(manifest, Path(d) / "mem.parquet", ExtractConfig())
        s = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    ok = "met" if peak < 4 else "NOT met"
    print("| cases | rows | features | seconds | peak RSS before | peak RSS | target |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {n} | {len(res.table)} | {res.table.shape[1] - 5} | {s:.0f} | {before:.2f} GB | {peak:.2f} GB | "
        f"< 4 GB ({ok}) |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", nargs="+", default=["radiomics", "deep", "scaling", "memory"])
    ap.add_argument("--backbones", nargs="+", default=[DEFAULT_BACKBONE, *STUDY_BACKBONES])
    ap.add_argument("--scaling-cases", type=int, default=128)
    ap.add_argument("--memory-cases", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    print(f"# usher2 feature extraction bench (torch {torch.__version__}, {torch.get_num_threads()} CPU threads)")
    if "radiomics" in args.sections:
        bench_radiomics(args.reps)
    if "deep" in args.sections:
        bench_deep(args.backbones, args.reps)
    if "scaling" in args.sections:
        bench_scaling(args.scaling_cases)
    if "memory" in args.sections:
        bench_memory(args.memory_cases)


if __name__ == "__main__":
    main()
