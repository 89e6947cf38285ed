"""The ``strength`` knob as a measured trade-off: fidelity and lesion gCNR against radiomics texture stability.

Usage:
    python bench/enhance_strength.py [--enhancer pix2pix|WEIGHTS] [--n 24] [--sets shifted fixed]
                                     [--strengths 0 0.25 0.5 0.75 1] [--out docs/enhancer_strength.png]

Every enhancer returns ``x + strength * (enhanced(x) - x)`` (:class:`usher2.enhance.base.Enhancer`).
For each strength, on ``--n`` simulated frames of each set (the sets of ``bench/enhance_shift.py``:
``shifted`` = the two shifted scanners alternating, cohort seed 2300; ``fixed`` = the default
degraded setting, seed 3000):

* **fidelity r** and **lesion gCNR**, defined as in ``bench/enhance_shift.py`` (means);
* **texture repeatability**: the same anatomy is acquired twice (the scene of patient ``i`` with
  two independent draws of scatterers, electronic noise, gain and TGC error; realisation A is the
  frame of ``bench/enhance_shift.py``), both are enhanced, and 7 pyradiomics texture features of the
  true lesion mask (``original`` image, GLCM Contrast, Correlation, JointEntropy, Idm; GLRLM
  ShortRunEmphasis, RunLengthNonUniformityNormalized, GrayLevelNonUniformityNormalized; 0-255 grey
  levels, bin width 8, pixel spacing in mm) are extracted from each. ICC(2,1) (two-way random,
  absolute agreement, single measurement) across the lesions, per feature: how well a feature
  separates lesions relative to its change under a new speckle draw. Radiomics studies keep
  features with ICC >= 0.9; the plot shows the median over the 7 features and the range;
* **departure from the input**: the median over features and frames of
  ``|f(output) - f(input)| / (|f(input)| + eps)``: how far an enhancer moves the texture features
  from the raw frame's, which is what a model fitted on raw-frame radiomics would see.

Writes the PNG and a JSON of every number next to it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

from usher2.enhance import ENHANCERS, create_enhancer
from usher2.enhance.gan import GANEnhancer
from usher2.evaluate.agreement import icc_columns
from usher2.evaluate.image_quality import fidelity_r, lesion_gcnr
from usher2.features.radiomics import RadiomicsExtractor
from usher2.io.atomic import atomic_write_text
from usher2.simulate import SimulationConfig
from usher2.simulate import render as render_module
from usher2.simulate.anatomy import LesionTraits
from usher2.simulate.labels import simulate_labels
from usher2.simulate.shifted import SHIFTED_SEED, evaluation_set, shifted_configs

ROOT = Path(__file__).resolve().parents[1]
FEATURES = [
    "radiomics_original_glcm_Contrast",
    "radiomics_original_glcm_Correlation",
    "radiomics_original_glcm_JointEntropy",
    "radiomics_original_glcm_Idm",
    "radiomics_original_glrlm_ShortRunEmphasis",
    "radiomics_original_glrlm_RunLengthNonUniformityNormalized",
    "radiomics_original_glrlm_GrayLevelNonUniformityNormalized",
]
SETS = {
    "shifted": (SHIFTED_SEED, shifted_configs),
    "fixed": (3000, lambda: [SimulationConfig()]),
}


def second_realisation(i: int, seed: int, configs: list[SimulationConfig]) -> np.ndarray:
    """Frame ``i`` of the set re-acquired: same scene, new scatterers, noise, gain and TGC draws.

    ``render_frame`` draws the scene and then the acoustics from one generator; the scene builder is
    wrapped so that, once the scene is made, the generator continues from an independent seed.
    """
    traits = LesionTraits.from_row(simulate_labels(i + 1, seed).iloc[i].to_dict())
    original = render_module.make_scene

    def scene_then_reseed(*args: Any, **kwargs: Any) -> Any:
        scene = original(*args, **kwargs)
        rng = args[4]
        rng.bit_generator.state = np.random.PCG64(np.random.SeedSequence([seed, i, 9001])).state
        return scene

    with mock.patch.object(render_module, "make_scene", scene_then_reseed):
        frame = render_module.render_frame(traits, seed, i, 0, configs[i % len(configs)])
    return frame.image


def _features(extractor: RadiomicsExtractor, img: np.ndarray, mask: np.ndarray, spacing: float) -> np.ndarray:
    row = extractor.extract(np.round(img * 255.0), mask.astype(np.uint8), (spacing, spacing))
    return np.array([row[c] for c in FEATURES])


def measure(enhancer_spec: str, which: str, n: int, strengths: list[float], cache: Path) -> dict[str, Any]:
    seed, make_configs = SETS[which]
    configs = make_configs()
    frames = evaluation_set(n, seed, configs, cache=cache, name=which)
    repeat = [second_realisation(i, seed, configs).astype(np.float32) / 255.0 for i in range(n)]
    extractor = RadiomicsExtractor(columns=FEATURES)
    inputs = [f.image.astype(np.float32) / 255.0 for f in frames]
    f_input = np.stack([_features(extractor, x, f.mask, f.spacing_mm) for x, f in zip(inputs, frames, strict=True)])
    out: dict[str, Any] = {"n": n, "seed": seed, "strengths": strengths, "rows": []}
    for s in strengths:
        e = _enhancer(enhancer_spec, s)
        fid, g, fa, fb = [], [], [], []
        for x, xb, f in zip(inputs, repeat, frames, strict=True):
            y = e(x[None, None])[0, 0]
            yb = e(xb[None, None])[0, 0]
            below = f.below_skin
            fid.append(fidelity_r(y, f.truth_db, below_skin=below))
            g.append(lesion_gcnr(y, f.mask, within=below))
            fa.append(_features(extractor, y, f.mask, f.spacing_mm))
            fb.append(_features(extractor, yb, f.mask, f.spacing_mm))
        a, b = np.stack(fa), np.stack(fb)
        iccs, _ = icc_columns(np.stack([a, b], axis=1), "ICC(2,1)")
        departure = np.abs(a - f_input) / (np.abs(f_input) + 1e-6)
        row = {
            "strength": s,
            "fidelity_r": float(np.mean(fid)),
            "gcnr": float(np.mean(g)),
            "icc": dict(zip(FEATURES, map(float, iccs), strict=True)),
            "icc_median": float(np.nanmedian(iccs)),
            "icc_min": float(np.nanmin(iccs)),
            "icc_max": float(np.nanmax(iccs)),
            "departure_median": float(np.median(departure)),
        }
        out["rows"].append(row)
        print(
            f"{which:<8} strength {s:.2f}  fidelity r {row['fidelity_r']:.3f}  gCNR {row['gcnr']:.3f}  "
            f"ICC median {row['icc_median']:.3f} [{row['icc_min']:.3f}, {row['icc_max']:.3f}]  "
            f"departure {row['departure_median']:.3f}",
            flush=True,
        )
    return out


def _enhancer(spec: str, strength: float) -> Any:
    if spec in ENHANCERS:
        kw = {"device": "cpu"} if spec in ("pix2pix", "cyclegan") else {}
        return create_enhancer(spec, strength=strength, **kw)
    return GANEnhancer(weights=spec, device="cpu", strength=strength)


def plot(results: dict[str, Any], path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for (which, res), style in zip(results.items(), ("-o", "--s"), strict=False):
        s = [r["strength"] for r in res["rows"]]
        axes[0].plot(s, [r["fidelity_r"] for r in res["rows"]], style, color="C0", label=f"fidelity r ({which})")
        axes[0].plot(s, [r["gcnr"] for r in res["rows"]], style, color="C1", label=f"lesion gCNR ({which})")
        med = [r["icc_median"] for r in res["rows"]]
        axes[1].plot(s, med, style, color="C2", label=f"{which} (median, range)")
        axes[1].fill_between(
            s, [r["icc_min"] for r in res["rows"]], [r["icc_max"] for r in res["rows"]], color="C2", alpha=0.12
        )
        axes[2].plot(s, [r["departure_median"] for r in res["rows"]], style, color="C3", label=which)
    axes[1].axhline(0.9, color="grey", lw=0.8, ls=":")
    axes[0].set(xlabel="strength", ylabel="mean over frames", title="image quality")
    axes[1].set(xlabel="strength", ylabel="ICC(2,1)", title="texture repeatability (2 speckle draws)")
    axes[2].set(xlabel="strength", ylabel="median relative change", title="texture departure from the input")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"strength trade-off of {label}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--enhancer", default="pix2pix", help="registered enhancer or .safetensors generator")
    ap.add_argument("--n", type=int, default=24, help="frames per set (default 24)")
    ap.add_argument("--sets", nargs="+", choices=sorted(SETS), default=["shifted", "fixed"])
    ap.add_argument("--strengths", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "shifted_set")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "enhancer_strength.png")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = {w: measure(args.enhancer, w, args.n, args.strengths, args.cache) for w in args.sets}
    label = args.enhancer if args.enhancer in ENHANCERS else Path(args.enhancer).name
    plot(results, args.out, label)
    record = {
        "command": "python bench/enhance_strength.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "enhancer": args.enhancer,
        "features": FEATURES,
        "sets": results,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')} in {record['seconds']:.0f} s")
    return record


if __name__ == "__main__":
    main()
