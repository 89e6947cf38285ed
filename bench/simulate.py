"""Benchmark the cohort simulator: frames per second, PNG writing included.

Usage:
    python bench/simulate.py --n 100 --workers 2 --size 256
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from usher2.simulate import SimulationConfig, simulate_cohort


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="patients (one frame each)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="process counts to time")
    ap.add_argument("--size", type=int, default=256, help="square image size (pixels) over 40 x 40 mm")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    config = SimulationConfig(image_size=(args.size, args.size), fov_mm=(40.0, 40.0))
    print(f"{'n':>6} {'workers':>7} {'size':>5} {'seconds':>8} {'cases/s':>8}")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            df = simulate_cohort(args.n, args.seed, Path(tmp), config=config, workers=workers)
            dt = time.perf_counter() - t0
        print(f"{len(df):>6} {workers:>7} {args.size:>5} {dt:>8.2f} {len(df) / dt:>8.1f}")


if __name__ == "__main__":
    main()
