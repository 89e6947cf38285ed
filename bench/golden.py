"""Issue 24: golden outputs of every door from pixels to probability, recorded before a restructuring.

Usage:
    python bench/golden.py record --work runs/golden-before
    python bench/golden.py record --work runs/golden-after
    python bench/golden.py compare runs/golden-after --against runs/golden-before

``record`` runs the public commands (the installed ``usher2`` CLI, so their arguments are checked
too) on small fixed inputs and keeps their outputs under ``WORK/golden/``:

* ``demo/``: ``usher2 demo --n-train 40 --n-test 20 --workers 1``: the AUC table (``auc.csv``),
  ``predictions.csv`` and every bundle's ``oof.csv``;
* ``score_dir/frames.csv``: ``usher2 score`` of 8 held-out frames into a folder (DLR bundle);
* ``score_csv.csv``: ``usher2 score`` of the same frames into a CSV (the cohort path);
* ``service.json``: ``POST /v1/score`` of the same 8 frames (FastAPI's test client, the DLR bundle);
* ``mri/auc.csv``: ``usher2 mri reproduce breast-mpmri --quick``.

``record --reuse-demo OLD/demo`` skips the demo and scores with OLD's bundle: when a change alters
the fit on purpose, the scoring doors are still compared on equal bundles.

``compare`` matches each table by its key columns and reports, per file, whether it is identical,
equal within the float tolerance (``--rtol`` 1e-6 relative, ``--atol`` 1e-9 absolute: float32
feature paths whose arithmetic order changed), or different (with the largest difference).
Columns that measure time or name a path of the run are left out and listed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_FRAMES = 8
KEYS = ("case_id", "frame_id", "input", "frame", "model", "split", "fold", "study")
SKIP = (
    "seconds",
    "time",
    "elapsed",
    "_ms",
    "path",
    "file",
    "overlay",
    "sheet",
    "report",
    "created",
    "version",
    "png",
    "request_id",
)


def _usher2(*args: str) -> None:
    exe = Path(sys.executable).with_name("usher2")
    t0 = time.perf_counter()
    subprocess.run([str(exe), *args], check=True, stdout=subprocess.DEVNULL)
    print(f"  usher2 {' '.join(args)}  ({time.perf_counter() - t0:.0f} s)")


def record(work: Path, reuse_demo: Path | None = None) -> None:
    gold = work / "golden"
    if gold.exists():
        shutil.rmtree(gold)
    (gold / "demo" / "oof").mkdir(parents=True)
    demo = work / "demo"
    if reuse_demo is None:
        _usher2("demo", "--out", str(demo), "--n-train", "40", "--n-test", "20", "--workers", "1")
    else:  # the scoring doors on another run's demo bundle: a change of the fit does not hide a scoring change
        if demo.exists():
            shutil.rmtree(demo)
        shutil.copytree(reuse_demo, demo)
        print(f"  demo reused from {reuse_demo}")
    run = demo / "run"
    for name in ("auc.csv", "predictions.csv"):
        shutil.copy(run / name, gold / "demo" / name)
    for b in sorted((run / "bundles").iterdir()):
        shutil.copy(b / "oof.csv", gold / "demo" / "oof" / f"{b.name}.csv")

    manifest = pd.read_csv(demo / "test" / "manifest.csv").head(N_FRAMES)
    small = demo / "test" / "golden_frames.csv"
    manifest.to_csv(small, index=False)
    bundle = run / "bundles" / "dlr"
    _usher2("score", str(small), "--bundle", str(bundle), "--out", str(work / "score_dir"), "--no-overlays")
    shutil.copy(work / "score_dir" / "frames.csv", gold / "score_dir_frames.csv")
    _usher2("score", str(small), "--bundle", str(bundle), "--out", str(gold / "score_csv.csv"))

    from fastapi.testclient import TestClient

    from usher2.service.app import create_app

    rows = []
    with TestClient(create_app(bundle, token="", cam=None)) as client:
        for case in manifest.to_dict("records"):
            png = (demo / "test" / case["image"]).read_bytes()
            r = client.post("/v1/score", files={"file": ("f.png", png, "image/png")})
            r.raise_for_status()
            j = r.json()
            flat = {k: v for k, v in j.items() if not isinstance(v, dict | list)}
            rows.append({"case_id": case["case_id"], **flat})
    pd.DataFrame(rows).to_csv(gold / "service.csv", index=False)

    _usher2("mri", "reproduce", "breast-mpmri", "--quick", "--out", str(work / "mri"))
    (gold / "mri").mkdir()
    shutil.copy(work / "mri" / "auc.csv", gold / "mri" / "auc.csv")
    print(f"recorded -> {gold}")


def _compare(a: pd.DataFrame, b: pd.DataFrame, rtol: float, atol: float) -> tuple[str, str]:
    skipped = [c for c in a.columns if any(s in c.lower() for s in SKIP)]
    keys = [k for k in KEYS if k in a.columns and k in b.columns]
    cols = [c for c in a.columns if c not in skipped]
    if set(cols) - set(b.columns) or set(b.columns) - set(a.columns) - set(skipped):
        return "columns differ", f"only in new: {sorted(set(cols) - set(b.columns))}; only in ref: " + str(
            sorted(set(b.columns) - set(a.columns) - set(skipped))
        )
    if len(a) != len(b):
        return "rows differ", f"{len(a)} vs {len(b)} rows"
    if keys:
        a, b = a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
    worst, exact = 0.0, True
    for c in cols:
        x, y = a[c], b[c]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            xv, yv = x.to_numpy(float), y.to_numpy(float)
            same_nan = np.isnan(xv) == np.isnan(yv)
            ok = same_nan & (np.isnan(xv) | np.isclose(xv, yv, rtol=rtol, atol=atol))
            if not ok.all():
                d = np.nanmax(np.abs(xv - yv))
                return "different", f"column {c}: {int((~ok).sum())} values, largest difference {d:.3g}"
            exact &= bool(np.array_equal(xv, yv, equal_nan=True))
            finite = ~np.isnan(xv) & ~np.isnan(yv)
            if finite.any():
                worst = max(worst, float(np.max(np.abs(xv[finite] - yv[finite]))))
        elif not x.astype(str).equals(y.astype(str)):
            return "different", f"column {c}: text differs"
    note = f"skipped {skipped}" if skipped else ""
    return ("identical" if exact else f"within tolerance (largest {worst:.3g})"), note


def compare(new: Path, ref: Path, rtol: float, atol: float) -> int:
    new_gold, ref_gold = new / "golden", ref / "golden"
    files = sorted(p.relative_to(ref_gold) for p in ref_gold.rglob("*.csv"))
    bad = 0
    print("| output | result | note |")
    print("|---|---|---|")
    for rel in files:
        if not (new_gold / rel).is_file():
            print(f"| {rel} | missing | |")
            bad += 1
            continue
        result, note = _compare(pd.read_csv(new_gold / rel), pd.read_csv(ref_gold / rel), rtol, atol)
        bad += not (result == "identical" or result.startswith("within"))
        print(f"| {rel} | {result} | {note} |")
    print(json.dumps({"outputs": len(files), "not_equal": bad}))
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument(
        "--reuse-demo",
        type=Path,
        default=None,
        help="Score with this earlier record's demo folder (WORK/demo) instead of running the demo.",
    )
    c = sub.add_parser("compare")
    c.add_argument("new", type=Path)
    c.add_argument("--against", type=Path, required=True)
    c.add_argument("--rtol", type=float, default=1e-6)
    c.add_argument("--atol", type=float, default=1e-9)
    a = ap.parse_args()
    if a.cmd == "record":
        record(a.work, a.reuse_demo)
    else:
        raise SystemExit(compare(a.new, a.against, a.rtol, a.atol))


if __name__ == "__main__":
    main()
