"""Tune the classical speckle filters on the training distribution and freeze the winners.

Usage:
    python bench/tune_classical.py [--settings 4] [--patients 3] [--seed 1000]
                                   [--out usher2/enhance/tuned_classical.json]

A user with the simulator would tune a filter on simulated frames like the ones a network trains
on, so that is what this does: ``--settings`` degraded rendering settings drawn by
``usher2.simulate.randomise.randomised_configs(settings, seed)`` (the TRAINING_RANGES family), each
rendering ``--patients`` patients of cohort ``seed`` (1000 is the enhancer's training cohort; the
evaluation sets use other seeds). Frame ``i`` is patient ``i`` with setting ``i % settings``.

Objective: mean fidelity r, the Pearson correlation between the filtered frame and the true
echogenicity map in dB below the skin line (``usher2.evaluate.image_quality.fidelity_r``). It is the
quantity the evaluation reports, and it measures recovery of the tissue echogenicity; PSNR against
the clean rendering would instead reward reproducing the clean scanner's own speckle, which no
filter can predict, and so favours under-smoothing. Lesion gCNR (ring 8-20 px, fixed bins) is
printed beside it for information and breaks exact ties.

Prints one row per grid point (the winner of each filter marked ``*``) and writes the grid, the
objective, the seeds, every score and the winners to ``--out`` (atomically).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from usher2.enhance import create_enhancer
from usher2.enhance.classical import TUNED_CLASSICAL_FILE, TUNED_FORMAT
from usher2.evaluate.image_quality import fidelity_r, lesion_gcnr
from usher2.io.atomic import atomic_write_text
from usher2.simulate.randomise import randomised_configs
from usher2.simulate.shifted import EvalFrame, evaluation_set

#: Small grids around the textbook defaults; every point is run on every tuning frame.
GRID: dict[str, dict[str, list[Any]]] = {
    "median": {"size": [3, 5, 7, 9, 11, 15]},
    "bilateral": {"sigma_color": [0.05, 0.1, 0.2, 0.4], "sigma_space": [2.0, 3.0, 5.0, 8.0]},
    "nlm": {"h_factor": [2.0, 4.0, 8.0, 16.0, 32.0], "patch_size": [5, 7], "patch_distance": [2, 4, 6, 10]},
    "srad": {"iterations": [10, 20, 40, 80, 160, 320], "time_step": [0.25, 1.0]},
    "lee": {"size": [3, 5, 7, 9, 11, 15, 21]},
}

OBJECTIVE = "mean fidelity_r (Pearson r vs the true echogenicity in dB, below the skin line) over the tuning frames"


def _points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def score(name: str, params: dict[str, Any], frames: list[EvalFrame]) -> dict[str, float]:
    """Mean fidelity r, mean lesion gCNR and ms per frame of one filter setting on ``frames``."""
    e = create_enhancer(name, **params)
    r, g = [], []
    t = time.perf_counter()
    outs = [e((f.image.astype(np.float32) / 255.0)[None, None])[0, 0] for f in frames]
    ms = (time.perf_counter() - t) * 1000.0 / len(frames)
    for f, y in zip(frames, outs, strict=True):
        r.append(fidelity_r(y, f.truth_db, below_skin=f.below_skin))
        g.append(lesion_gcnr(y, f.mask, within=f.below_skin))
    return {"fidelity_r": float(np.mean(r)), "gcnr": float(np.mean(g)), "ms_per_frame": ms}


def _fmt(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", type=int, default=4, help="randomised rendering settings (default 4)")
    ap.add_argument("--patients", type=int, default=3, help="patients per setting (default 3)")
    ap.add_argument("--seed", type=int, default=1000, help="cohort and settings seed (default 1000, training)")
    ap.add_argument("--out", type=Path, default=TUNED_CLASSICAL_FILE, help="JSON to write")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)

    t0 = time.perf_counter()
    configs = randomised_configs(args.settings, args.seed)
    frames = evaluation_set(args.settings * args.patients, args.seed, configs)
    base = score("none", {}, frames)
    print(
        f"tuning set: {len(frames)} frames = {args.settings} settings from randomised_configs({args.settings}, "
        f"seed={args.seed}) x {args.patients} patients of cohort seed {args.seed} (256 x 256)"
    )
    print(f"objective: {OBJECTIVE}\n")
    print(f"{'filter':<10}{'parameters':<48}{'r':>8}{'gCNR':>8}{'ms/frame':>10}")
    print(f"{'input':<10}{'':<48}{base['fidelity_r']:>8.4f}{base['gcnr']:>8.4f}{'':>10}")
    scores: dict[str, list[dict[str, Any]]] = {}
    tuned: dict[str, dict[str, Any]] = {}
    for name, grid in GRID.items():
        rows = [{"params": p, **score(name, p, frames)} for p in _points(grid)]
        best = max(range(len(rows)), key=lambda i: (rows[i]["fidelity_r"], rows[i]["gcnr"]))
        for i, row in enumerate(rows):
            mark = "*" if i == best else " "
            print(
                f"{name:<10}{_fmt(row['params']):<48}{row['fidelity_r']:>8.4f}{row['gcnr']:>8.4f}"
                f"{row['ms_per_frame']:>10.1f} {mark}"
            )
        scores[name] = rows
        tuned[name] = rows[best]["params"]
        edge = [k for k, v in tuned[name].items() if len(grid[k]) > 2 and v in (grid[k][0], grid[k][-1])]
        if edge:
            print(f"   note: {name} winner at the edge of the grid for {', '.join(edge)}")
        print()

    command = "python bench/tune_classical.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    doc = {
        "format": TUNED_FORMAT,
        "objective": OBJECTIVE,
        "tie_break": "mean lesion gCNR (ring 8-20 px, 256 fixed bins over [0, 1])",
        "tuning_set": {
            "configs": f"usher2.simulate.randomise.randomised_configs({args.settings}, seed={args.seed})",
            "cohort_seed": args.seed,
            "settings": args.settings,
            "patients_per_setting": args.patients,
            "n_frames": len(frames),
            "frames": "patient i of simulate_labels(n, seed) rendered with config i % settings, 256 x 256",
            "degraded_settings": [c.to_dict()["degraded"] for c in configs],
        },
        "grid": GRID,
        "input": base,
        "scores": scores,
        "tuned": tuned,
        "command": command.strip(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    print("tuned: " + "; ".join(f"{n} ({_fmt(p)})" for n, p in tuned.items()))
    print(f"wrote {args.out} in {doc['seconds']:.0f} s")
    return doc


if __name__ == "__main__":
    main()
