"""Overlays in BUS-BRA: how many frames carry burned-in text, calipers and UI graphics.

Run: ``python notebooks/bus_bra_overlays.py --root ../shared/data/bus-bra --out DIR``.
Writes ``DIR/bus_bra_overlays.csv`` (one row per frame) and ``DIR/bus_bra_overlays.png`` (contact
sheet: frame | overlay mask in red | inpainted), and prints the counts.

Images: BUS-BRA, Gómez-Flores, Gregorio-Calas, Pereira, "BUS-BRA: A breast ultrasound dataset for
assessing computer-aided diagnosis systems", Medical Physics 2024 (free use, cite the article).
The committed ``notebooks/bus_bra_overlays.png`` is a downsampled sheet made by this script.
"""

# %%
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from usher2.io.atomic import atomic_path
from usher2.io.overlay import detect_overlays, inpaint_overlays

# Frames shown on the sheet: one per scanner style (GE Logiq 7/5, GE with logo, Toshiba, U-Systems).
EXAMPLES = ["bus_0001-l", "bus_0151-l", "bus_0440-r", "bus_0676-s", "bus_0906-r", "bus_1040-l"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("../shared/data/bus-bra"), help="BUS-BRA folder")
    p.add_argument("--out", type=Path, required=True, help="folder for the CSV and the contact sheet")
    p.add_argument("--sheet-height", type=int, default=150, help="row height of the sheet in px")
    return p.parse_args(argv)


def read(path: Path) -> np.ndarray:
    im = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if im is None:
        raise FileNotFoundError(f"cannot read {path} as an image")
    return im.astype(np.float32) / 255.0


# %% Detect on every frame
def run(root: Path) -> pd.DataFrame:
    images = sorted((root / "Images").glob("bus_*.png"))
    if not images:
        raise FileNotFoundError(f"no bus_*.png under {root / 'Images'}")
    rows = []
    t0 = time.perf_counter()
    for path in images:
        r = detect_overlays(read(path))
        rows.append(
            {
                "ID": path.stem,
                "has_overlay": r.has_overlay,
                "n_text": r.n_text,
                "n_calipers": r.n_calipers,
                "n_graphics": r.n_graphics,
                "overlay_fraction": round(r.fraction, 6),
            }
        )
    seconds = time.perf_counter() - t0
    print(f"{len(images)} frames in {seconds:.1f} s ({1000 * seconds / len(images):.1f} ms/frame, read incl.)")
    return pd.DataFrame(rows)


# %% Summary
def summarise(df: pd.DataFrame) -> None:
    n = len(df)
    for name, flag in [
        ("any overlay", df.has_overlay),
        ("text", df.n_text > 0),
        ("calipers", df.n_calipers > 0),
        ("graphics", df.n_graphics > 0),
    ]:
        k = int(flag.sum())
        print(f"frames with {name:<12} {k:5d} / {n} ({100 * k / n:5.1f}%)")
    f = df.overlay_fraction[df.has_overlay]
    print(
        "overlay pixel fraction in flagged frames: "
        f"median {100 * f.median():.2f}%, mean {100 * f.mean():.2f}%, p95 {100 * f.quantile(0.95):.2f}%, "
        f"max {100 * f.max():.2f}%"
    )


# %% Contact sheet: frame | mask in red | inpainted
def contact_sheet(root: Path, cases: list[str], height: int) -> np.ndarray:
    rows = []
    for case in cases:
        px = read(root / "Images" / f"{case}.png")
        r = detect_overlays(px)
        grey = (px * 255).astype(np.uint8)
        red = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
        red[r.mask] = (0, 0, 255)
        filled = (inpaint_overlays(px, r.mask) * 255).astype(np.uint8)
        row = np.hstack([cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), red, cv2.cvtColor(filled, cv2.COLOR_GRAY2BGR)])
        scale = height / row.shape[0]
        row = cv2.resize(row, (round(row.shape[1] * scale), height), interpolation=cv2.INTER_AREA)
        label = f"{case}  text {r.n_text}  calipers {r.n_calipers}  graphics {r.n_graphics}"
        cv2.putText(row, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1, cv2.LINE_AA)
        rows.append(row)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows]
    # Two columns of three keep the sheet roughly square.
    half = (len(rows) + 1) // 2
    left, right = np.vstack(rows[:half]), np.vstack(rows[half:])
    right = np.pad(right, ((0, left.shape[0] - right.shape[0]), (0, 0), (0, 0)))
    return np.hstack([left, np.zeros((left.shape[0], 6, 3), np.uint8), right])


# %%
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    df = run(args.root)
    summarise(df)
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "bus_bra_overlays.csv") as tmp:
        df.to_csv(tmp, index=False)
    sheet = contact_sheet(args.root, EXAMPLES, args.sheet_height)
    with atomic_path(args.out / "bus_bra_overlays.png") as tmp:
        if not cv2.imwrite(str(tmp), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise OSError(f"could not write {tmp}")
    print(f"wrote {args.out / 'bus_bra_overlays.csv'} and {args.out / 'bus_bra_overlays.png'}")


if __name__ == "__main__":
    main()
