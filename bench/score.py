"""Benchmark end-to-end scoring: usher2's FrameScorer against the reference stack a researcher would assemble.

Usage:
    python bench/score.py [--bundle DIR] [--work runs/bench-fusion] [--out runs/bench-score] [--threads 2]
                          [--frames 64] [--latency-frames 32] [--reference-frames 12] [--heatmap]
                          [--resnet101-auc] [--quick]

Sections:
1. bundle: ``--bundle``, or (default) a ``dlr`` logistic-regression bundle fitted with ``usher2 fit``'s
   nested CV on the cached bench tables of ``bench/fusion.py`` (``--work``: 600 simulated 256-px training
   cases, default radiomics Original + Wavelet + LoG on the lesion, the peritumoral and posterior
   regions, the BI-RADS lexicon descriptors and the shipped usresnet10t backbone, pix2pix-enhanced;
   1,474 columns). Without those tables a smaller cohort (160 + 64 cases) is simulated and extracted
   into ``--out`` first. The bundle is cached in ``--out``. Printed: the columns the model can read
   (:func:`usher2.fusion.needed.needed_columns`) against all it lists.
2. our stack (``FrameScorer``: pix2pix enhancer -> U-Net segmenter -> the needed radiomics + deep
   features -> the bundle's model; heat maps off unless ``--heatmap``) on the first ``--frames`` test
   frames: frames/s at batch 1, 8 and 32, batch-1 latency (median and p95 over ``--latency-frames``
   single-frame calls) and the per-stage time per frame; then the features stage alone, the full
   extraction (every column, what ``usher2 score`` computes) against the needed columns.
3. reference stack, frame by frame on the same frames: the pix2pix U-Net-256 generator
   (``UnetGenerator(1, 1, 8, ngf=64)``, batch norm, as in pytorch-CycleGAN-and-pix2pix),
   ``smp.Unet("resnet34", encoder_weights=None)``, pyradiomics Original + Wavelet + LoG with usher2's
   default parameters on the ROI, timm ``resnet101`` (``pretrained=False, num_classes=0``) on the ROI
   crop at 224 px, and a scikit-learn logistic regression on the concatenated row. The networks have
   random weights (nothing is downloaded; speed does not depend on the weights), so their outputs are
   timed but not used: the radiomics and the crop read the input frame and its ground-truth mask, an
   ROI of realistic size and texture. The logistic regression is fitted on noise of the row's width
   (prediction time only).
4. ratio: our best throughput (of batch 1, 8 and 32) over the reference's, against the target >= 10x.
5. AUC on the held-out test table (same cached features, given masks): the bundle against the
   reference model, ``StandardScaler`` + ``LogisticRegression`` (C by 5-fold CV) on the lesion's
   Original + Wavelet + LoG radiomics + deep features, no selection, fitted on the same training
   cases. The reference's deep features are the cached usresnet10t ones: a random-weight resnet101
   gives features without learnt meaning, and an ImageNet one cannot be downloaded here, so the
   reference gets usher2's trained backbone, which can only help it. ``--resnet101-auc`` adds a
   reference with random-weight resnet101 ROI features instead (computed on 1,000 crops, minutes).
6. cine: ``--cine-frames`` test frames written as one 256 x 256 MP4 and scored by ``usher2 score``'s
   folder path (:func:`usher2.score.folder.score_to_dir`, heat maps, overlays and report off): frames/s
   against >= 25.
7. GPU (CUDA only): our stack at batch 1, 32 and 256 and its batch-1 latency, against >= 1,000
   frames/s and <= 10 ms; without CUDA the targets are printed as not measured.

Section 2 runs the scorer with each radiomics backend (``torch``, the default, and ``pyradiomics``,
the reference) on the same frames, side by side, with the batch-1 latency against <= 40 ms and the
model step against <= 1 ms per frame.

CPU rows use ``--threads`` torch and SimpleITK threads (2 by default: "CPU with 2 cores").
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from usher2.features.extract import ExtractConfig, frame_features
from usher2.fusion.bundle import load_bundle
from usher2.fusion.needed import find_needed
from usher2.score.engine import FrameScorer

LESION_TYPES = re.compile(r"^radiomics_(original|wavelet-[LH]+|log-sigma-[\d-]+-mm-3D)_")


# ----------------------------------------------------------------------------- reference networks
class UnetSkipConnectionBlock(nn.Module):
    """pix2pix's U-Net block: downsample, the submodule, upsample, skip connection (batch norm, no bias)."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=False)
        downrelu, downnorm = nn.LeakyReLU(0.2, True), nn.BatchNorm2d(inner_nc)
        uprelu, upnorm = nn.ReLU(True), nn.BatchNorm2d(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=False)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=False)
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            model += [nn.Dropout(0.5)] if use_dropout else []
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """The pix2pix generator (``netG="unet_256"`` for ``num_downs=8``): a 256-px frame down to 1 x 1 and back."""

    def __init__(self, input_nc: int, output_nc: int, num_downs: int, ngf: int = 64, use_dropout: bool = True):
        super().__init__()
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ReferenceStack:
    """The reference pipeline, one frame at a time (see the module docstring, section 3)."""

    def __init__(self, device: str) -> None:
        import segmentation_models_pytorch as smp
        import timm
        from radiomics import featureextractor
        from sklearn.linear_model import LogisticRegression

        from usher2.features.radiomics import DEFAULT_PARAMS

        self.device = torch.device(device)
        torch.manual_seed(0)
        self.generator = UnetGenerator(1, 1, 8, ngf=64).eval().to(self.device)
        self.segmenter = smp.Unet("resnet34", encoder_weights=None, classes=1).eval().to(self.device)
        self.backbone = timm.create_model("resnet101", pretrained=False, num_classes=0).eval().to(self.device)
        self.radiomics = featureextractor.RadiomicsFeatureExtractor(DEFAULT_PARAMS)
        self.mean = torch.tensor([0.485, 0.456, 0.406], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225], device=self.device).view(1, 3, 1, 1)
        self.lr: Any = None
        self._fit_lr = LogisticRegression

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def score(self, pixels: np.ndarray, mask: np.ndarray) -> tuple[float, dict[str, float]]:
        """P(class 1) and the seconds per stage for one ``(H, W)`` frame in [0, 1] and its mask."""
        import SimpleITK as sitk

        from usher2.features.deep import roi_crop

        t: dict[str, float] = {}
        t0 = time.perf_counter()
        x = torch.from_numpy(cv2.resize(pixels, (256, 256))).to(self.device)[None, None]
        with torch.inference_mode():
            enhanced = (self.generator(x * 2 - 1) + 1) / 2
            self._sync()
            t1 = time.perf_counter()
            logits = self.segmenter(enhanced.expand(-1, 3, -1, -1))
            (logits.sigmoid() > 0.5).cpu()  # the mask a researcher would threshold
            t2 = time.perf_counter()
        image = sitk.GetImageFromArray(pixels.astype(np.float32) * 255)
        label = sitk.GetImageFromArray(mask.astype(np.uint8))
        result = self.radiomics.execute(image, label)
        row = [float(v) for k, v in result.items() if not k.startswith("diagnostics_")]
        t3 = time.perf_counter()
        crop = torch.from_numpy(roi_crop(pixels, mask, (224, 224))).to(self.device)[None, None]
        with torch.inference_mode():
            deep = self.backbone((crop.expand(-1, 3, -1, -1) - self.mean) / self.std).float().cpu().numpy()[0]
        t4 = time.perf_counter()
        features = np.r_[row, deep][None]
        if self.lr is None:  # prediction time only: fitted once on noise of the row's width
            rng = np.random.default_rng(0)
            self.lr = self._fit_lr(max_iter=200).fit(rng.normal(size=(64, features.shape[1])), np.arange(64) % 2)
        p = float(self.lr.predict_proba(features)[0, 1])
        t5 = time.perf_counter()
        t.update(enhance=t1 - t0, segment=t2 - t1, radiomics=t3 - t2, deep=t4 - t3, model=t5 - t4, total=t5 - t0)
        return p, t


# ----------------------------------------------------------------------------- data and bundle
def _threads(n: int) -> None:
    import SimpleITK as sitk

    torch.set_num_threads(n)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)


def _tables(work: Path, out: Path) -> tuple[Path, Path, Path, Path]:
    """(train table, train manifest, test table, test cohort folder): the cached bench tables, or a small new cohort."""
    if (work / "train.parquet").is_file() and (work / "test.parquet").is_file():
        return work / "train.parquet", work / "train" / "manifest.csv", work / "test.parquet", work / "test"
    from usher2.features.extract import extract_cohort
    from usher2.simulate import SimulationConfig, simulate_cohort

    print(f"  no cached tables in {work}: simulating and extracting 160 + 64 cases into {out} (a few minutes)")
    for name, n, seed in (("train", 160, 7100), ("test", 64, 7200)):
        simulate_cohort(n, seed, out / name, config=SimulationConfig())
        extract_cohort(
            out / name / "manifest.csv", out / f"{name}.parquet", ExtractConfig(enhancer="pix2pix"), workers=2
        )
    return out / "train.parquet", out / "train" / "manifest.csv", out / "test.parquet", out / "test"


def _bundle(train: Path, manifest: Path, out: Path, quick: bool) -> Path:
    from usher2.features.extract import read_feature_table
    from usher2.fusion.fit import fit_cohort
    from usher2.io.hashing import file_sha256
    from usher2.io.manifest import read_manifest

    path = out / "bundle-dlr"
    sha = file_sha256(train)
    if (path / "config.json").is_file():
        cfg = json.loads((path / "config.json").read_text())
        if cfg.get("training_data", {}).get("features_sha256") == sha:
            return path
    table, prov = read_feature_table(train)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_cohort(
            table,
            read_manifest(manifest, check_files=False),
            path,
            family="dlr",
            classifier="lr",
            outer_folds=3 if quick else 5,
            provenance={k: v for k, v in prov.items() if k != "inputs"},
            training_data={"features_sha256": sha},
            overwrite=True,
        )
    print(f"  fitted {path} ({time.perf_counter() - t:.0f} s)")
    return path


def _frames(cohort: Path, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    man = pd.read_csv(cohort / "manifest.csv").head(n)
    read = [(cv2.imread(str(cohort / r["image"]), cv2.IMREAD_GRAYSCALE), r.get("mask")) for _, r in man.iterrows()]
    pixels = [img.astype(np.float32) / 255 for img, _ in read]
    masks = [cv2.imread(str(cohort / m), cv2.IMREAD_GRAYSCALE) > 0 for _, m in read]
    return pixels, masks


def _pin_networks(device: str) -> None:
    """Build the enhancer and segmenter on ``device`` in usher2's per-process model cache.

    ``FrameScorer(device=...)`` places the backbones; the enhancer and segmenter come from
    ``usher2.features.models``' process cache, which picks CUDA whenever it exists. The CPU rows
    on a GPU host need them on the CPU, so the bench fills that cache first.
    """
    from usher2.enhance import create_enhancer
    from usher2.features import models
    from usher2.segment import create_segmenter

    models._MODELS.pop(("enhancer", "pix2pix"), None)
    models._MODELS.pop(("segmenter", "unet"), None)
    models._MODELS[("enhancer", "pix2pix")] = create_enhancer("pix2pix", device=device)
    models._MODELS[("segmenter", "unet")] = create_segmenter("unet", device=device)


# ----------------------------------------------------------------------------- sections
def _stages(results: list[Any]) -> dict[str, float]:
    keys = ("enhance", "segment", "features", "model", "heatmap")
    return {k: 1000 * float(np.mean([r.seconds.get(k, 0.0) for r in results])) for k in keys}


def bench_ours(scorer: FrameScorer, frames: list[np.ndarray], args: argparse.Namespace, sizes: tuple[int, ...]) -> dict:
    heat = bool(args.heatmap)
    scorer.score(frames[:2], heatmaps=heat)  # warm-up: models built, caches filled
    out: dict[str, Any] = {"fps": {}, "stages": {}}
    for bs in sizes:
        t = time.perf_counter()
        results = []
        for k in range(0, len(frames), bs):
            results += scorer.score(frames[k : k + bs], heatmaps=heat)
        s = time.perf_counter() - t
        out["fps"][bs] = len(frames) / s
        out["stages"][bs] = _stages(results)
        out["scored"] = sum(r.probability is not None for r in results)
    lat = []
    for f in frames[: args.latency_frames]:
        t = time.perf_counter()
        scorer.score_frame(f, heatmaps=heat)
        lat.append(time.perf_counter() - t)
    out["latency"] = (1000 * statistics.median(lat), 1000 * float(np.percentile(lat, 95)))
    return out


def _stage_cells(st: dict[str, float]) -> str:
    return " | ".join(f"{st[k]:.1f}" for k in ("enhance", "segment", "features", "model"))


def print_ours(label: str, res: dict, sizes: tuple[int, ...], heatmap: bool) -> None:
    print(f"| {label} | batch | frames/s | ms/frame | enhance | segment | features | model |")
    print("|---|---|---|---|---|---|---|---|")
    for bs in sizes:
        fps = res["fps"][bs]
        print(f"| {label} | {bs} | {fps:.2f} | {1000 / fps:.1f} | {_stage_cells(res['stages'][bs])} |")
    med, p95 = res["latency"]
    print(f"\nBatch-1 latency ({label}): median {med:.1f} ms, p95 {p95:.1f} ms; heat maps {'on' if heatmap else 'off'}")


def print_targets(runs: dict[str, dict]) -> None:
    """The batch-1 latency and model-step targets, per backend."""
    print("| backend | batch-1 latency p50 (target <= 40 ms) | model step ms/frame, batch 1 (target <= 1 ms) |")
    print("|---|---|---|")
    for name, res in runs.items():
        med, model = res["latency"][0], res["stages"][1]["model"]
        ok = ("met" if med <= 40 else "NOT met", "met" if model <= 1 else "NOT met")
        print(f"| {name} | {med:.1f} ms ({ok[0]}) | {model:.2f} ms ({ok[1]}) |")


def bench_cine(bundle: Path, frames: list[np.ndarray], out: Path, n: int) -> None:
    """Section 6: ``n`` frames as one 256 x 256 MP4, scored by the folder path (heat maps off)."""
    from usher2.score.folder import score_to_dir

    cine = out / "cine.mp4"
    writer = cv2.VideoWriter(str(cine), cv2.VideoWriter_fourcc(*"mp4v"), 25, (256, 256), isColor=False)
    for k in range(n):
        f = cv2.resize(frames[k % len(frames)], (256, 256), interpolation=cv2.INTER_AREA)
        writer.write(np.uint8(np.clip(f, 0, 1) * 255 + 0.5))
    writer.release()
    score_to_dir(cine, bundle, out / "cine-warm", cam=None, overlays=False, report=False, device="cpu", max_frames=4)
    t = time.perf_counter()
    res = score_to_dir(cine, bundle, out / "cine-run", cam=None, overlays=False, report=False, device="cpu")
    fps = len(res.frames) / (time.perf_counter() - t)
    print(f"\n## 6. Cine: {len(res.frames)} frames of 256 x 256 (MP4), usher2 score's folder path, heat maps off\n")
    print("| frames/s | target |\n|---|---|")
    print(f"| {fps:.1f} | >= 25 ({'met' if fps >= 25 else 'NOT met'}) |")


def bench_features(scorer: FrameScorer, frames: list[np.ndarray], n: int) -> tuple[float, float]:
    """ms/frame of the features stage: every column (what usher2 score extracts) vs the needed ones."""
    from dataclasses import replace

    from usher2.score.engine import bundle_extract_config

    rs = [r for r in scorer.score(frames[:n], heatmaps=False) if r.mask is not None]
    items = [(r.pixels, r.mask, None) for r in rs]
    full_cfg = replace(bundle_extract_config(scorer.bundle.config, "predicted"), device=scorer.config.device)
    columns = [c for c in scorer.needed.columns if c not in set(scorer.clinical)]
    frame_features(full_cfg, items[:1])
    t = time.perf_counter()
    frame_features(full_cfg, items)
    full = (time.perf_counter() - t) / len(items)
    t = time.perf_counter()
    frame_features(scorer.config, items, columns)
    sub = (time.perf_counter() - t) / len(items)
    return 1000 * full, 1000 * sub


def bench_reference(frames: list[np.ndarray], masks: list[np.ndarray], device: str) -> dict[str, float]:
    ref = ReferenceStack(device)
    ref.score(frames[0], masks[0])  # warm-up
    times = [ref.score(f, m)[1] for f, m in zip(frames, masks, strict=True)]
    return {k: 1000 * float(np.mean([t[k] for t in times])) for k in times[0]}


def _resnet101_features(cohort: Path, cache: Path) -> pd.DataFrame:
    """Random-weight resnet101 features of every ROI crop of a cohort (given masks), cached."""
    if cache.is_file():
        return pd.read_parquet(cache)
    import timm

    from usher2.features.deep import roi_crop

    torch.manual_seed(0)
    net = timm.create_model("resnet101", pretrained=False, num_classes=0).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    man = pd.read_csv(cohort / "manifest.csv")
    rows = []
    for k in range(0, len(man), 32):
        part = man.iloc[k : k + 32]
        crops = []
        for _, r in part.iterrows():
            img = cv2.imread(str(cohort / r["image"]), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
            crops.append(roi_crop(img, cv2.imread(str(cohort / r["mask"]), cv2.IMREAD_GRAYSCALE) > 0, (224, 224)))
        x = torch.from_numpy(np.stack(crops))[:, None].expand(-1, 3, -1, -1)
        with torch.inference_mode():
            rows.append(net((x - mean) / std).numpy())
    df = pd.DataFrame(np.concatenate(rows), columns=[f"deep_resnet101_{i}" for i in range(2048)])
    df.insert(0, "case_id", man["case_id"].astype(str).to_numpy())
    df.to_parquet(cache)
    return df


def bench_auc(bundle_path: Path, train: Path, test: Path, manifest: Path, test_cohort: Path, args: argparse.Namespace):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from usher2.evaluate.roc import delong_test, roc_auc_ci

    b = load_bundle(bundle_path)
    tr, te = pd.read_parquet(train).set_index("case_id"), pd.read_parquet(test).set_index("case_id")
    m_tr = pd.read_csv(manifest).set_index("case_id").loc[tr.index]
    m_te = pd.read_csv(test_cohort / "manifest.csv").set_index("case_id").loc[te.index]
    missing = [c for c in b.columns if c not in te.columns and c not in m_te.columns]
    if missing:
        print(f"\n## 5. AUC: skipped, the test table lacks {len(missing)} of the bundle's columns ({missing[:2]})")
        return
    X_te = te.join(m_te[[c for c in b.config.clinical if c not in te.columns]])
    y_tr, y_te = m_tr["label"].to_numpy(int), m_te["label"].to_numpy(int)
    ours = b.predict_proba(X_te)
    rad = [c for c in tr.columns if LESION_TYPES.match(c)]
    cached = sorted({c.rsplit("_", 1)[0] for c in tr.columns if c.startswith("deep_")})
    refs = {f"radiomics + {', '.join(d[5:] for d in cached)} (cached)": rad + [c for c in tr if c.startswith("deep_")]}
    if args.resnet101_auc:
        out = Path(args.out)
        r_tr = _resnet101_features(train.parent / "train", out / "resnet101_train.parquet").set_index("case_id")
        r_te = _resnet101_features(test_cohort, out / "resnet101_test.parquet").set_index("case_id")
        tr, te = tr.join(r_tr), te.join(r_te)
        refs["radiomics + resnet101 (random weights)"] = rad + list(r_tr.columns)
    print(f"\n## 5. Held-out AUC (test n={len(y_te)}, {int(y_te.sum())} positive; cached features, given masks)\n")
    print("| model | columns read | test AUC (95% CI) | DeLong vs ours: difference (95% CI), p |")
    print("|---|---|---|---|")
    r = roc_auc_ci(y_te, ours)
    n_ours = len(find_needed(b.model, b.columns).columns)
    ci = f"{r.auc:.3f} ({r.ci_low:.3f}-{r.ci_high:.3f})"
    print(f"| ours: {bundle_path.name} ({b.config.family}) | {n_ours} | {ci} | |")
    for name, cols in refs.items():
        grid = GridSearchCV(
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
            {"logisticregression__C": [1e-4, 1e-3, 1e-2, 1e-1]},
            cv=StratifiedKFold(5, shuffle=True, random_state=0),
            scoring="roc_auc",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = grid.fit(tr[cols].to_numpy(), y_tr).predict_proba(te[cols].to_numpy())[:, 1]
        rr, d = roc_auc_ci(y_te, p), delong_test(y_te, ours, p)
        print(
            f"| reference LR: {name}, C={grid.best_params_['logisticregression__C']:g} | {len(cols)} | "
            f"{rr.auc:.3f} ({rr.ci_low:.3f}-{rr.ci_high:.3f}) | {d.difference:+.3f} ({d.ci_low:+.3f} to "
            f"{d.ci_high:+.3f}), p={d.p:.3f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=None, help="a bundle folder (default: fit a dlr bundle on --work's tables)")
    ap.add_argument("--work", default="runs/bench-fusion", help="bench/fusion.py's cached tables and cohorts")
    ap.add_argument("--out", default="runs/bench-score")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--latency-frames", type=int, default=32)
    ap.add_argument("--reference-frames", type=int, default=12)
    ap.add_argument("--heatmap", action="store_true", help="time Grad-CAM heat maps too")
    ap.add_argument("--resnet101-auc", action="store_true", help="also fit the reference on resnet101 features")
    ap.add_argument("--quick", action="store_true", help="32 frames, 8 latency calls, 3 reference frames")
    ap.add_argument("--cine-frames", type=int, default=64, help="frames of the section-7 cine (0: skip)")
    args = ap.parse_args()
    if args.quick:
        args.frames, args.latency_frames, args.reference_frames = 32, 8, 3
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _threads(args.threads)
    warnings.simplefilter("ignore")
    import os

    print(f"# usher2 scoring bench (torch {torch.__version__}; CPU rows: {args.threads} threads of {os.cpu_count()})")
    train, manifest, test, test_cohort = _tables(Path(args.work), out)
    bundle = Path(args.bundle) if args.bundle else _bundle(train, manifest, out, args.quick)
    frames, masks = _frames(test_cohort, args.frames)
    _pin_networks("cpu")
    scorer = FrameScorer(bundle, cam="gradcam" if args.heatmap else None, device="cpu")
    needed = scorer.needed.columns
    types = sorted({c.split("_")[1] for c in needed if c.startswith("radiomics_")})
    print(f"\n## 1. Bundle {bundle} ({scorer.bundle.config.family}, {scorer.bundle.config.classifier})\n")
    print(f"The model can read {len(needed)} of the {len(scorer.bundle.columns)} columns it lists")
    print(f"(radiomics image types/regions: {', '.join(types) or 'none'}; backbones: {scorer.groups['backbones']})")
    if scorer.needed.notes:
        print(f"Notes: {scorer.needed.notes}")

    sizes = (1, 8, 32)
    h, w = frames[0].shape
    print(f"\n## 2. Our stack, CPU, {args.threads} threads, {len(frames)} simulated {h}x{w} test frames\n")
    backends = {
        "torch": scorer,
        "pyradiomics": FrameScorer(bundle, cam=scorer.cam, device="cpu", radiomics_backend="pyradiomics"),
    }
    runs = {}
    for name, sc in backends.items():
        runs[name] = bench_ours(sc, frames, args, sizes)
        print_ours(f"CPU, {name}", runs[name], sizes, args.heatmap)
        print()
    ours = runs["torch"]
    print(f"({ours['scored']} of {len(frames)} frames scored; the rest had no lesion found)")
    print_targets(runs)
    full_ms, sub_ms = bench_features(scorer, frames, min(16, len(frames)))
    print("\n| features stage (torch backend) | ms/frame |\n|---|---|")
    print(f"| every column ({len(scorer.bundle.columns)}, what usher2 extract computes) | {full_ms:.1f} |")
    print(f"| needed columns only ({len(needed)}) | {sub_ms:.1f} ({full_ms / sub_ms:.1f}x faster) |")

    print(f"\n## 3. Reference stack, CPU, {args.threads} threads, frame by frame, {args.reference_frames} frames\n")
    ref = bench_reference(frames[: args.reference_frames], masks[: args.reference_frames], "cpu")
    print("| stage | ms/frame |\n|---|---|")
    for k in ("enhance", "segment", "radiomics", "deep", "model", "total"):
        print(f"| {k} | {ref[k]:.1f} |")
    ref_fps = 1000 / ref["total"]
    print(f"\nReference: {ref_fps:.2f} frames/s (its batch-1 latency is the same, {ref['total']:.0f} ms)")

    best = max(ours["fps"].values())
    ratio = best / ref_fps
    print("\n## 4. Ratio (CPU)\n")
    print("| ours frames/s (best batch) | reference frames/s | ratio | target |\n|---|---|---|---|")
    print(f"| {best:.2f} | {ref_fps:.2f} | {ratio:.1f}x | >= 10x ({'met' if ratio >= 10 else 'NOT met'}) |")

    if args.bundle is None or Path(args.bundle).resolve() == (out / "bundle-dlr").resolve():
        bench_auc(bundle, train, test, manifest, test_cohort, args)
    else:
        print("\n## 5. AUC: skipped for a --bundle (its training and test tables are unknown to the bench)")

    if args.cine_frames:
        import shutil

        for d in ("cine-warm", "cine-run"):
            shutil.rmtree(out / d, ignore_errors=True)
        bench_cine(bundle, frames, out, args.cine_frames)

    print("\n## 7. GPU\n")
    if not torch.cuda.is_available():
        print("| target | value |\n|---|---|")
        print("| >= 1,000 frames/s end-to-end | not measured: no GPU |")
        print("| <= 10 ms batch-1 latency | not measured: no GPU |")
        return
    _pin_networks("cuda")
    gpu = FrameScorer(bundle, cam="gradcam" if args.heatmap else None, device="cuda")
    gsizes = (1, 32, 256)
    many = (frames * (256 // len(frames) + 1))[:256]
    gres = bench_ours(gpu, many, args, gsizes)
    print_ours("GPU", gres, gsizes, args.heatmap)
    fps, (med, _) = max(gres["fps"].values()), gres["latency"]
    print("\n| target | value |\n|---|---|")
    print(f"| >= 1,000 frames/s end-to-end | {fps:.0f} ({'met' if fps >= 1000 else 'NOT met'}) |")
    print(f"| <= 10 ms batch-1 latency | {med:.1f} ms median ({'met' if med <= 10 else 'NOT met'}) |")
    gref = bench_reference(frames[: args.reference_frames], masks[: args.reference_frames], "cuda")
    print(f"\nReference on the GPU, frame by frame: {1000 / gref['total']:.2f} frames/s ({gref['total']:.0f} ms/frame)")


if __name__ == "__main__":
    main()
