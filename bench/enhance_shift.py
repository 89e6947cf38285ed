"""Enhancers off their training distribution (issue 23): shifted simulated scanners and BUS-BRA.

Usage:
    python bench/enhance_shift.py [--n 40] [--n-busbra 100] [--enhancer NAME_OR_WEIGHTS ...]
                                  [--json PATH] [--cache runs/shifted_set] [--sets shifted fixed randomised]
                                  [--dice]

Rows: ``input`` (no enhancement), each classical filter with the parameters frozen in
``usher2/enhance/tuned_classical.json`` (tuned on the training distribution by
``bench/tune_classical.py``, never on these frames), the shipped ``pix2pix``, and every
``--enhancer`` (a registered name, built with its defaults, or a ``.safetensors`` generator file,
e.g. a newly trained one, labelled by its file name).

Simulated sets (256 x 256, one frame per patient, rendered once into ``--cache`` and reused):

* ``shifted``: cohort seed 2300, the two scanners of ``usher2.simulate.shifted.SHIFTED_SETTINGS``
  alternating (low-frequency and high-frequency plane-wave-like beams, compounding off, noise and
  dynamic range outside ``TRAINING_RANGES``). No network is trained on them.
* ``fixed`` (reference): cohort seed 3000 with the default degraded setting, the one the shipped
  pix2pix trained on (its training patients are seed 1000, validation 2000).
* ``randomised`` (reference): cohort seed 3001, eight settings of
  ``randomised_configs(8, seed=3001)`` cycled: inside the training ranges, new patients.

Columns: lesion gCNR (lesion vs the ring 8-20 px outside it, cut to the tissue below the skin;
256 fixed bins over [0, 1]) and fidelity r (Pearson r between the output and the true
echogenicity in dB below the skin line), each the mean with a 95% patient-bootstrap CI
(1000 resamples); for the shifted set also r per scanner; PSNR (dB) and SSIM against the clean
rendering of the same scatterers (means; on the ``fixed`` set these are the in-distribution pairs
the learned enhancers must keep their lead on); CPU ms per frame. With ``--dice``, also the Dice
of the shipped segmenter (``weights/segmenter_unet.safetensors``) on the enhanced frame, against the
true lesion mask: the downstream cost or gain of each enhancer.

BUS-BRA (no truth): the first ``--n-busbra`` frames, evenly spaced by case id, of official fold 5
(patient-grouped, so the CI resamples patients): lesion gCNR with the given masks (ring cut to the
scan area) and speckle SNR (mean / std of the output in a homogeneous background patch: the
flattest 21 x 21 window of mid-to-bright, unclipped tissue more than 20 px from the lesion and the
scan-area edge, chosen once on the input frame by ``usher2.evaluate.image_quality.homogeneous_patch``
and used for every method). Speckle SNR rises with any smoothing, so read it beside gCNR. ``--dice``
adds the shipped segmenter's Dice against the given masks; that segmenter's final fit saw every
BUS-BRA fold (fold 5 included), so this Dice compares enhancers but is not a held-out score.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from usher2.enhance import ENHANCERS, Enhancer, create_enhancer
from usher2.enhance.classical import tuned_classical_params
from usher2.enhance.gan import GANEnhancer
from usher2.evaluate.image_quality import fidelity_r, homogeneous_patch, lesion_gcnr, psnr, speckle_snr, ssim
from usher2.evaluate.segmentation import bootstrap_ci
from usher2.io.atomic import atomic_write_text
from usher2.io.hashing import file_sha256
from usher2.simulate import SimulationConfig
from usher2.simulate.randomise import randomised_configs
from usher2.simulate.shifted import SHIFTED_SEED, SHIFTED_SETTINGS, EvalFrame, evaluation_set, shifted_configs

ROOT = Path(__file__).resolve().parents[1]
BUS_BRA = ROOT.parent / "shared" / "data" / "bus-bra"
SETS = ("shifted", "fixed", "randomised")


def sim_set(which: str, n: int, cache: Path | None) -> tuple[list[EvalFrame], str, list[str]]:
    """The frames of one simulated set, a one-line description, and the names of its settings."""
    if which == "shifted":
        frames = evaluation_set(n, SHIFTED_SEED, shifted_configs(), cache=cache, name="shifted")
        return frames, f"shifted scanners, cohort seed {SHIFTED_SEED}", list(SHIFTED_SETTINGS)
    if which == "fixed":
        frames = evaluation_set(n, 3000, [SimulationConfig()], cache=cache, name="fixed")
        return frames, "in-distribution: the fixed degraded setting pix2pix trained on, cohort seed 3000", ["fixed"]
    if which == "randomised":
        configs = randomised_configs(8, 3001)
        frames = evaluation_set(n, 3001, configs, cache=cache, name="randomised")
        return frames, "in-range: randomised_configs(8, seed=3001) inside TRAINING_RANGES, cohort seed 3001", []
    raise ValueError(f"unknown set {which!r}; available: {', '.join(SETS)}")


def methods(extra: list[str], device: str) -> dict[str, tuple[Enhancer, dict[str, Any]]]:
    """``{row name: (enhancer, provenance)}``: input, tuned classical filters, pix2pix, then ``extra``."""
    out: dict[str, tuple[Enhancer, dict[str, Any]]] = {"input": (create_enhancer("none"), {"name": "none"})}
    for name, kwargs in tuned_classical_params().items():
        e = create_enhancer(name, **kwargs)
        out[name] = (e, e.settings())
    for spec in ["pix2pix", *extra]:
        if spec in ENHANCERS:
            kwargs = {"device": device} if spec in ("pix2pix", "cyclegan") else {}
            e, label = create_enhancer(spec, **kwargs), spec
        elif spec.endswith(".safetensors") or Path(spec).is_file():
            e, label = GANEnhancer(weights=spec, device=device), Path(spec).stem
        else:
            raise SystemExit(
                f"--enhancer {spec!r}: not a registered enhancer ({', '.join(ENHANCERS.names())}) "
                "nor a .safetensors generator file"
            )
        base, k = label, 2
        while label in out:  # e.g. --enhancer median: the filter with its defaults, beside the tuned row
            label, k = f"{base}-{k}", k + 1
        info = e.settings()
        if isinstance(e, GANEnhancer):
            info["weights_sha256"] = file_sha256(e.weights)
        out[label] = (e, info)
    return out


def _apply(e: Enhancer, img: np.ndarray) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    y = e(img[None, None])[0, 0]
    return y, time.perf_counter() - t


def _ci(values: list[float], groups: list[str], n_boot: int) -> dict[str, float]:
    mean, lo, hi = bootstrap_ci(np.asarray(values), n_boot=n_boot, seed=0, groups=groups)
    return {"mean": mean, "ci_low": lo, "ci_high": hi}


def _cell(s: dict[str, float]) -> str:
    return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def _dice_fn(enabled: bool) -> Any:
    """``dice(enhanced (H, W), true mask) -> float`` with the shipped segmenter, or None."""
    if not enabled:
        return None
    from usher2.evaluate.segmentation import dice
    from usher2.segment import create_segmenter

    seg = create_segmenter("unet", device="cpu")
    return lambda y, m: float(dice(seg.predict_mask(y[None, None].astype(np.float32))[0, 0], m))


def bench_sim(
    which: str,
    n: int,
    cache: Path | None,
    rows: dict[str, tuple[Enhancer, dict[str, Any]]],
    n_boot: int,
    dice_fn: Any = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    frames, title, setting_names = sim_set(which, n, cache)
    print(f"\n{which}: {title} (n={len(frames)} frames, rendered or read in {time.perf_counter() - t0:.0f} s)")
    per_setting = 1 < len(setting_names) <= 3
    head = f"{'method':<16}{'lesion gCNR [95% CI]':>26}{'fidelity r [95% CI]':>26}"
    if per_setting:
        head += "".join(f"{'r ' + s:>18}" for s in setting_names)
    head += f"{'PSNR':>8}{'SSIM':>7}" + (f"{'Dice [95% CI]':>24}" if dice_fn else "")
    print(head + f"{'ms/frame':>10}")
    groups = [f.patient_id for f in frames]
    out: dict[str, Any] = {"description": title, "n": len(frames), "methods": {}}
    for label, (e, _) in rows.items():
        g, r, ps, ss, ds, secs = [], [], [], [], [], 0.0
        for f in frames:
            y, dt = _apply(e, f.image.astype(np.float32) / 255.0)
            secs += dt
            below = f.below_skin
            g.append(lesion_gcnr(y, f.mask, within=below))
            r.append(fidelity_r(y, f.truth_db, below_skin=below))
            clean = f.clean.astype(np.float32) / 255.0
            ps.append(psnr(y, clean, data_range=1.0))
            ss.append(ssim(y, clean, data_range=1.0))
            if dice_fn is not None:
                ds.append(dice_fn(y, f.mask))
        res: dict[str, Any] = {
            "gcnr": _ci(g, groups, n_boot),
            "fidelity_r": _ci(r, groups, n_boot),
            "psnr": float(np.mean(ps)),
            "ssim": float(np.mean(ss)),
            "ms_per_frame": 1000.0 * secs / len(frames),
            "per_frame": {"case_id": [f.case_id for f in frames], "gcnr": g, "fidelity_r": r, "psnr": ps, "ssim": ss},
        }
        if dice_fn is not None:
            res["dice"] = _ci(ds, groups, n_boot)
            res["per_frame"]["dice"] = ds
        line = f"{label:<16}{_cell(res['gcnr']):>26}{_cell(res['fidelity_r']):>26}"
        if per_setting:
            res["fidelity_r_by_setting"] = {
                s: float(np.mean([v for v, f in zip(r, frames, strict=True) if f.setting == k]))
                for k, s in enumerate(setting_names)
            }
            line += "".join(f"{res['fidelity_r_by_setting'][s]:>18.3f}" for s in setting_names)
        line += f"{res['psnr']:>8.2f}{res['ssim']:>7.3f}" + (f"{_cell(res['dice']):>24}" if dice_fn else "")
        print(line + f"{res['ms_per_frame']:>10.1f}")
        out["methods"][label] = res
    return out


def bench_bus_bra(
    root: Path,
    n: int,
    cache: Path,
    rows: dict[str, tuple[Enhancer, dict[str, Any]]],
    n_boot: int,
    dice_fn: Any = None,
) -> dict[str, Any] | None:
    if not root.is_dir():
        print(f"\nBUS-BRA: skipped ({root} is absent)")
        return None
    from usher2.io.frames import read_image, read_mask
    from usher2.io.importers import import_bus_bra
    from usher2.io.overlay import find_scan_area

    manifest = import_bus_bra(root, cache / "bus_bra_manifest.csv")
    fold5 = manifest[manifest["fold"] == 5].sort_values("case_id").reset_index(drop=True)
    pick = fold5.iloc[np.unique(np.linspace(0, len(fold5) - 1, min(n, len(fold5))).round().astype(int))]
    frames, masks, scans, patches = [], [], [], []
    for row in pick.itertuples(index=False):
        img = read_image(row.image_path).pixels
        m = read_mask(row.mask_path, img.shape, case=row.case_id)
        scan = find_scan_area(img)
        frames.append(img)
        masks.append(m)
        scans.append(scan)
        patches.append(homogeneous_patch(img, exclude=m | ~scan, margin=20, size=21))
    groups = [str(p) for p in pick["patient_id"]]
    print(
        f"\nBUS-BRA official fold 5: {len(frames)} frames of {pick['patient_id'].nunique()} patients "
        "(evenly spaced by case id; native size; no truth)"
    )
    dice_head = f"{'Dice [95% CI]':>24}" if dice_fn else ""
    print(f"{'method':<16}{'lesion gCNR [95% CI]':>26}{'speckle SNR [95% CI]':>26}{dice_head}{'ms/frame':>10}")
    out: dict[str, Any] = {"fold": 5, "n": len(frames), "case_id": list(pick["case_id"]), "methods": {}}
    for label, (e, _) in rows.items():
        g, s, ds, secs = [], [], [], 0.0
        for img, m, scan, patch in zip(frames, masks, scans, patches, strict=True):
            y, dt = _apply(e, img)
            secs += dt
            g.append(lesion_gcnr(y, m, within=scan))
            s.append(speckle_snr(y, patch))
            if dice_fn is not None:
                ds.append(dice_fn(y, m))
        res = {
            "gcnr": _ci(g, groups, n_boot),
            "speckle_snr": _ci(s, groups, n_boot),
            "ms_per_frame": 1000.0 * secs / len(frames),
        }
        if dice_fn is not None:
            res["dice"] = _ci(ds, groups, n_boot)
        dice_cell = f"{_cell(res['dice']):>24}" if dice_fn else ""
        print(
            f"{label:<16}{_cell(res['gcnr']):>26}{_cell(res['speckle_snr']):>26}{dice_cell}{res['ms_per_frame']:>10.1f}"
        )
        out["methods"][label] = res
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40, help="frames per simulated set (default 40)")
    ap.add_argument("--n-busbra", type=int, default=100, help="BUS-BRA fold-5 frames (default 100; 0 skips)")
    ap.add_argument(
        "--enhancer",
        action="append",
        default=[],
        metavar="NAME_OR_WEIGHTS",
        help="extra row: a registered enhancer or a .safetensors generator (repeatable)",
    )
    ap.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS), help="simulated sets to run")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "shifted_set", help="folder of the rendered sets")
    ap.add_argument("--busbra", type=Path, default=BUS_BRA, help="the BUS-BRA folder")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    ap.add_argument("--device", default="cpu", help="device of the learned enhancers (default cpu)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here (atomically)")
    ap.add_argument("--dice", action="store_true", help="add the shipped segmenter's Dice on the enhanced frames")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    t0 = time.perf_counter()
    rows = methods(args.enhancer, args.device)
    print("rows: " + "; ".join(f"{k} {v[1]}" for k, v in rows.items()))
    results: dict[str, Any] = {
        "command": ("python bench/enhance_shift.py " + shlex.join(sys.argv[1:] if argv is None else argv)).strip(),
        "methods": {k: v[1] for k, v in rows.items()},
        "shifted_settings": {k: dataclasses.asdict(s) for k, s in SHIFTED_SETTINGS.items()},
        "sets": {},
    }
    dice_fn = _dice_fn(args.dice)
    for which in args.sets:
        results["sets"][which] = bench_sim(which, args.n, args.cache, rows, args.n_boot, dice_fn)
    if args.n_busbra > 0:
        results["bus_bra"] = bench_bus_bra(args.busbra, args.n_busbra, args.cache, rows, args.n_boot, dice_fn)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\ntotal {results['seconds']:.0f} s")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(results, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
