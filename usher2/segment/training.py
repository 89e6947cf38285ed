"""Training of the lesion segmenter, after nnU-Net's defaults, with patient-grouped cross-validation.

One config file drives a run (:class:`SegmenterTrainConfig`, YAML or JSON):

* **Recipe.** Dice + binary cross-entropy; SGD with Nesterov momentum 0.99 and poly learning-rate
  decay (``lr * (1 - step / steps) ** 0.9``), as nnU-Net; albumentations augmentation (rotation,
  scaling, Gaussian noise, blur, brightness/contrast, gamma, horizontal flip, low-resolution
  simulation); foreground oversampling (a share of the crops is centred on a lesion pixel).
  Vertical flips are left out on purpose: depth runs top to bottom in every ultrasound frame.
* **Data.** BUS-BRA with its official patient-grouped 5-fold partition (``data.folds`` picks the
  training folds; never an image-level split), simulated cohorts, and optionally the enhancer's
  output as input (``data.enhancer``; the segmenter then records it and applies it at inference).
* **Cross-validation.** With ``cv_folds``, the same recipe is first trained once per held-out
  fold; the held-out frames are segmented at their own size and scored (Dice, IoU, HD95,
  ASSD), with and without keeping the largest component. The final network is then trained on
  every training fold, and keeps the largest component only when that raised the mean
  cross-validated Dice. No epoch or threshold is picked on a held-out fold: the last epoch is used.
* **Runs.** Seeded (augmentation is reseeded per step from the seed, so a resumed run equals an
  uninterrupted one), checkpoints every epoch atomically and resumes after a kill, shows a
  progress bar, bf16 autocast on CUDA, and runs under ``torchrun`` (DDP) with no code change.
  The network is exported as fp16 safetensors with its config, post-processing, cross-validated
  metrics and the config hash in the metadata, plus a model card.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

import usher2.training as scaffold
from usher2.io.atomic import atomic_write_bytes, atomic_write_text
from usher2.io.errors import InputError
from usher2.segment.networks import SegmenterConfig, build_network, normalise_frames
from usher2.segment.unet import resize_to_working, save_network

__all__ = [
    "AUGMENTATIONS",
    "SegmenterDataConfig",
    "SegmenterTrainConfig",
    "SegmenterTrainResult",
    "load_segmenter_config",
    "train_segmenter",
    "write_segmenter_card",
]


#: Training augmentations: the nnU-Net-like recipe, the full scanner/site randomisation, or the
#: basic recipe plus milder scanner-appearance randomisation (:mod:`usher2.simulate.domain`).
AUGMENTATIONS = ("basic", "domain", "scanner")


@dataclass(frozen=True)
class SegmenterDataConfig:
    """Where training frames come from.

    Attributes:
        bus_bra: The BUS-BRA folder, or ``None`` for none.
        folds: BUS-BRA training folds of the official patient-grouped partition (1..5).
        simulated: Simulated patients added to training (0 for none).
        simulated_seed: Their cohort seed.
        simulated_size: Simulated frame side in pixels.
        val_simulated: Held-out simulated patients scored after training (0 for none).
        val_simulated_seed: Their cohort seed (must differ from ``simulated_seed``).
        enhancer: An enhancer name applied to every frame first (``None``: raw frames).
        simulated_settings: Randomised image-formation settings the simulated training patients
            are split over (:func:`usher2.simulate.randomise.randomised_configs`: centre frequency,
            aperture, compounding, noise, dynamic range, gain and TGC errors); ``0`` renders them
            all with the simulator's one degraded setting.
    """

    bus_bra: str | None = None
    folds: tuple[int, ...] = (1, 2, 3, 4, 5)
    simulated: int = 0
    simulated_seed: int = 4000
    simulated_size: int = 256
    val_simulated: int = 0
    val_simulated_seed: int = 5000
    enhancer: str | None = None
    simulated_settings: int = 0

    def __post_init__(self) -> None:
        if self.simulated_settings < 0 or (self.simulated and self.simulated_settings > self.simulated):
            raise ValueError(
                f"data.simulated_settings must be in [0, data.simulated={self.simulated}], "
                f"got {self.simulated_settings}"
            )
        object.__setattr__(self, "folds", tuple(int(f) for f in self.folds))
        if any(f not in (1, 2, 3, 4, 5) for f in self.folds) or len(set(self.folds)) != len(self.folds):
            raise ValueError(f"data.folds must be distinct BUS-BRA folds among 1..5, got {list(self.folds)}")
        if self.bus_bra is None and self.simulated < 1:
            raise ValueError("no training data: set data.bus_bra, data.simulated > 0, or both")
        if self.simulated < 0 or self.val_simulated < 0:
            raise ValueError("data.simulated and data.val_simulated must be >= 0")
        if self.val_simulated and self.val_simulated_seed == self.simulated_seed:
            raise ValueError(f"data.val_simulated_seed must differ from data.simulated_seed ({self.simulated_seed})")


@dataclass(frozen=True)
class SegmenterTrainConfig:
    """One segmenter training run; every field is saved with the checkpoints and the weights.

    Attributes:
        out: Run folder (checkpoints, cross-validation folds, history).
        export: Where the final weights go (default ``<out>/segmenter_<arch>.safetensors``).
        network: Architecture, encoder and working resolution.
        data: Training data.
        cv_folds: BUS-BRA folds to cross-validate over before the final fit (empty: none).
        crop: Training crop side (``0``: the whole ``network.input_size`` square).
        batch_size: Crops per step (per process under DDP).
        epochs: Epochs of ``steps_per_epoch`` steps.
        steps_per_epoch: Steps per epoch; ``0`` means one pass over the training frames.
        lr: Initial learning rate (poly decay to 0).
        momentum: SGD Nesterov momentum.
        weight_decay: SGD weight decay.
        foreground_oversampling: Share of crops centred on a lesion pixel (nnU-Net: 0.33).
        negative_sampling: Share of each batch that is lesion-free, so that the network learns to
            return an empty mask (every BUS-BRA and simulated frame holds a lesion): crops of the
            training frames away from the lesion (:func:`background_crop`) and, for one in eight,
            a blank frame (a constant level plus noise).
        seed: Seeds initialisation, sampling and augmentation.
        amp: bf16 autocast on CUDA.
        device: ``"cpu"``, ``"cuda"``…; default CUDA when available.
        augmentation: ``"basic"`` (the nnU-Net-like recipe), ``"domain"`` (scanner and site
            randomisation, :func:`usher2.simulate.domain.domain_randomisation`) or ``"scanner"``
            (basic plus milder appearance randomisation, :func:`~usher2.simulate.domain.scanner_randomisation`).
        heldout_devices: BUS-BRA scanners held out for a leave-device-out validation (substrings of
            the ``device`` column, case-insensitive, e.g. ``["toshiba", "u-systems"]``): one extra
            network is trained on every other BUS-BRA frame of ``data.folds`` (plus the simulated
            frames) and scored on these scanners' frames, per scanner, with patient-cluster
            bootstrap CIs. It is saved as ``<out>/heldout_devices/segmenter.safetensors``.
        final_fit: Train and export the final network (``False``: validation runs only).
        tta: Score the validations with horizontal-flip test-time augmentation too (recorded;
            the exported network's users choose it at inference).
    """

    out: str = "runs/segmenter-unet"
    export: str | None = None
    network: SegmenterConfig = field(default_factory=SegmenterConfig)
    data: SegmenterDataConfig = field(default_factory=lambda: SegmenterDataConfig(bus_bra="../shared/data/bus-bra"))
    cv_folds: tuple[int, ...] = ()
    crop: int = 0
    batch_size: int = 16
    epochs: int = 50
    steps_per_epoch: int = 0
    lr: float = 0.01
    momentum: float = 0.99
    weight_decay: float = 3e-5
    foreground_oversampling: float = 0.33
    negative_sampling: float = 0.0
    seed: int = 0
    amp: bool = True
    device: str | None = None
    augmentation: str = "basic"
    heldout_devices: tuple[str, ...] = ()
    final_fit: bool = True
    tta: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "cv_folds", tuple(int(f) for f in self.cv_folds))
        object.__setattr__(self, "heldout_devices", tuple(str(d) for d in self.heldout_devices))
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {self.augmentation!r}")
        if self.heldout_devices and self.data.bus_bra is None:
            raise ValueError("heldout_devices needs data.bus_bra (the scanners are BUS-BRA's)")
        if not self.final_fit and not (self.cv_folds or self.heldout_devices):
            raise ValueError("final_fit: false with no cv_folds and no heldout_devices would train nothing")
        if self.cv_folds and self.data.bus_bra is None:
            raise ValueError("cv_folds needs data.bus_bra (cross-validation uses the BUS-BRA partition)")
        if any(f not in (1, 2, 3, 4, 5) for f in self.cv_folds):
            raise ValueError(f"cv_folds must be BUS-BRA folds among 1..5, got {list(self.cv_folds)}")
        size = self.network.input_size
        if self.crop and (self.crop % 32 or not 32 <= self.crop <= size):
            raise ValueError(f"crop must be 0 or a multiple of 32 in [32, network.input_size={size}], got {self.crop}")
        for name in ("batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps_per_epoch < 0:
            raise ValueError(f"steps_per_epoch must be >= 0, got {self.steps_per_epoch}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.foreground_oversampling <= 1.0:
            raise ValueError(f"foreground_oversampling must be in [0, 1], got {self.foreground_oversampling}")
        if not 0.0 <= self.negative_sampling < 1.0:
            raise ValueError(f"negative_sampling must be in [0, 1), got {self.negative_sampling}")

    @property
    def crop_size(self) -> int:
        return self.crop or self.network.input_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """SHA-256 of the settings a checkpoint must share to be resumed (not ``out``/``export``/``device``)."""
        d = {k: v for k, v in self.to_dict().items() if k not in ("out", "export", "device", "final_fit", "tta")}
        return scaffold.config_sha256(d)


def load_segmenter_config(path: str | Path, **overrides: Any) -> SegmenterTrainConfig:
    """Read a :class:`SegmenterTrainConfig` from YAML or JSON; unknown keys and bad values are named errors."""
    return scaffold.load_config_file(
        path,
        SegmenterTrainConfig,
        nested={"network": SegmenterConfig, "data": SegmenterDataConfig},
        tuples={"network": ("decoder_channels",), "data": ("folds",)},
        what="segmenter training",
        **overrides,
    )


@dataclass(frozen=True)
class SegmenterTrainResult:
    """What a run produced.

    Attributes:
        weights: The exported file.
        cv: Cross-validated summary (empty without ``cv_folds``): mean Dice etc., per fold.
        simulated: Held-out simulated summary (empty without ``data.val_simulated``).
        largest_component: The post-processing chosen.
        wall_seconds: Training wall time, cross-validation included.
        steps: Optimisation steps of the final fit (0 without ``final_fit``).
        heldout_devices: Leave-device-out summary (empty without ``heldout_devices``).
    """

    weights: Path
    cv: dict[str, Any]
    simulated: dict[str, Any]
    largest_component: bool
    wall_seconds: float
    steps: int
    heldout_devices: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- data
def _read_grey(path: Path) -> np.ndarray:
    return scaffold.read_grey(path)


def _to_working(img: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize (longer side ``size``) and zero-pad bottom/right to ``size`` x ``size``; uint8 both."""
    h, w = img.shape
    rh, rw = resize_to_working(h, w, size)
    interp = cv2.INTER_AREA if rh < h else cv2.INTER_LINEAR
    small = cv2.resize(img, (rw, rh), interpolation=interp)
    m = cv2.resize(mask.astype(np.float32), (rw, rh), interpolation=cv2.INTER_AREA if rh < h else cv2.INTER_LINEAR)
    out_i = np.zeros((size, size), np.uint8)
    out_m = np.zeros((size, size), np.uint8)
    out_i[:rh, :rw] = small
    out_m[:rh, :rw] = m >= 0.5
    return out_i, out_m


def background_crop(image: np.ndarray, mask: np.ndarray, *, margin: float = 0.05) -> np.ndarray | None:
    """The largest lesion-free strip of a frame, beside the lesion's bounding box, or None.

    The box is grown by ``margin`` times the frame's shorter side; of the four full-width or
    full-height strips left, right, above and below it, the one with the largest shorter side is
    returned when that side is at least a quarter of the frame's shorter side and 32 pixels.

    Example:
        >>> img = np.arange(100 * 200, dtype=np.uint8).reshape(100, 200); m = np.zeros((100, 200), bool)
        >>> m[40:60, 10:50] = True
        >>> background_crop(img, m).shape
        (100, 145)
    """
    h, w = mask.shape
    if not mask.any():
        return image
    ys, xs = np.nonzero(mask)
    pad = int(margin * min(h, w))
    y0, y1 = max(0, int(ys.min()) - pad), min(h, int(ys.max()) + 1 + pad)
    x0, x1 = max(0, int(xs.min()) - pad), min(w, int(xs.max()) + 1 + pad)
    strips = [image[:, :x0], image[:, x1:], image[:y0, :], image[y1:, :]]
    best = max(strips, key=lambda a: min(a.shape))
    if min(best.shape) < max(32, 0.25 * min(h, w)):
        return None
    return np.ascontiguousarray(best)


@dataclass
class _Frames:
    """Frames at their own size (for scoring) plus their working-size copies (for training)."""

    ids: list[str]
    images: list[np.ndarray]  # uint8 (H, W)
    masks: list[np.ndarray]  # bool (H, W)
    info: pd.DataFrame  # case_id, patient_id, fold, device, source


def _enhanced(images: list[np.ndarray], enhancer: str | None) -> list[np.ndarray]:
    if not enhancer:
        return images
    from usher2.enhance import create_enhancer

    e = create_enhancer(enhancer)
    return [np.rint(e(im[None, None].astype(np.float32) / 255.0)[0, 0] * 255).astype(np.uint8) for im in images]


def _device_match(devices: pd.Series, names: tuple[str, ...]) -> np.ndarray:
    """Rows whose device contains any of ``names`` (case-insensitive)."""
    low = devices.astype(str).str.lower()
    hit = np.zeros(len(devices), bool)
    for name in names:
        hit |= low.str.contains(name.lower(), regex=False).to_numpy()
    return hit


def _bus_bra_frames(
    root: str, folds: tuple[int, ...], out: Path, *, devices: tuple[str, ...] = (), exclude: bool = False
) -> _Frames:
    """BUS-BRA frames of ``folds``; with ``devices``, only those scanners' frames (or all others if ``exclude``)."""
    from usher2.io.importers import import_bus_bra

    df = import_bus_bra(root, out / "bus_bra.csv")
    keep = df["fold"].isin(folds).to_numpy()
    if devices:
        hit = _device_match(df["device"], devices)
        if not hit.any():
            known = ", ".join(sorted(df["device"].astype(str).unique()))
            raise InputError(
                root, f"BUS-BRA frames of the held-out devices {list(devices)}", f"none (devices: {known})"
            )
        keep &= ~hit if exclude else hit
    df = df[keep].reset_index(drop=True)
    images = [_read_grey(Path(p)) for p in df["image_path"]]
    masks = [_read_grey(Path(p)) > 127 for p in df["mask_path"]]
    info = df[["case_id", "patient_id", "fold", "device"]].assign(source="bus-bra")
    return _Frames(list(df["case_id"]), images, masks, info)


def _simulated_frames(n: int, seed: int, size: int, out: Path, *, settings: int = 0) -> _Frames:
    """``n`` simulated patients; with ``settings`` > 0, split over that many randomised scanner settings."""
    from usher2.simulate import SimulationConfig, simulate_cohort

    if settings:
        from usher2.simulate.randomise import randomised_configs

        configs = randomised_configs(settings, seed, size)
        counts = [n // settings + (g < n % settings) for g in range(settings)]
        parts = []
        for g, (cfg, count) in enumerate(zip(configs, counts, strict=True)):
            folder = out / f"simulated_{seed}_rand{g}of{settings}_{count}_{size}"
            df = simulate_cohort(count, seed * 100 + g, folder, config=cfg)
            part = _simulated_part(df, folder)
            part.ids = [f"s{g}_{i}" for i in part.ids]
            part.info["case_id"] = part.ids
            part.info["patient_id"] = [f"s{g}_{p}" for p in part.info["patient_id"]]
            parts.append(part)
        return _concat(parts)
    folder = out / f"simulated_{seed}_{n}_{size}"
    df = simulate_cohort(n, seed, folder, config=SimulationConfig(image_size=(size, size)))
    return _simulated_part(df, folder)


def _simulated_part(df: pd.DataFrame, folder: Path) -> _Frames:
    images = [_read_grey(folder / p) for p in df["image"]]
    masks = [_read_grey(folder / p) > 127 for p in df["mask"]]
    info = pd.DataFrame(
        {"case_id": df["case_id"], "patient_id": df["patient_id"], "fold": 0, "device": "simulated"}
    ).assign(source="simulated")
    return _Frames(list(df["case_id"]), images, masks, info)


def _concat(parts: list[_Frames]) -> _Frames:
    return _Frames(
        [i for p in parts for i in p.ids],
        [i for p in parts for i in p.images],
        [m for p in parts for m in p.masks],
        pd.concat([p.info for p in parts], ignore_index=True),
    )


def _training_frames(
    config: SegmenterTrainConfig, folds: tuple[int, ...], data_dir: Path, *, without_devices: tuple[str, ...] = ()
) -> _Frames:
    d = config.data
    parts = []
    if d.bus_bra and folds:
        parts.append(_bus_bra_frames(d.bus_bra, folds, data_dir, devices=without_devices, exclude=True))
    if d.simulated:
        parts.append(
            _simulated_frames(d.simulated, d.simulated_seed, d.simulated_size, data_dir, settings=d.simulated_settings)
        )
    if not parts:
        raise ValueError("no training frames: every BUS-BRA fold is held out and data.simulated is 0")
    return _concat(parts)


class _Sampler:
    """Seeded augmentation + cropping with foreground oversampling; a step's batch depends only on (seed, step)."""

    def __init__(self, config: SegmenterTrainConfig, frames: _Frames, rank: int) -> None:
        from usher2.simulate.domain import basic_augmentation, domain_randomisation, reseed, scanner_randomisation

        size = config.network.input_size
        pairs = [
            _to_working(i, m, size)
            for i, m in zip(_enhanced(frames.images, config.data.enhancer), frames.masks, strict=True)
        ]
        self.images = np.stack([p[0] for p in pairs])
        self.masks = np.stack([p[1] for p in pairs])
        crops = [background_crop(i, m) for i, m in zip(frames.images, frames.masks, strict=True)]
        crops = _enhanced([c for c in crops if c is not None], config.data.enhancer)
        blank = np.zeros((size, size), np.uint8)
        self.negatives = np.stack([_to_working(c, np.zeros(c.shape, bool), size)[0] for c in crops] or [blank])
        self.config, self.rank = config, rank
        self._reseed = reseed
        if config.augmentation == "domain":
            self.aug = domain_randomisation(size)
        elif config.augmentation == "scanner":
            self.aug = scanner_randomisation()
        else:
            self.aug = basic_augmentation()

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        rng = np.random.default_rng([c.seed, self.rank, step])
        idx = rng.integers(0, len(self.images), c.batch_size)
        crop, size = c.crop_size, c.network.input_size
        first_negative = c.batch_size - round(c.negative_sampling * c.batch_size)
        xs, ys = [], []
        for k, i in enumerate(idx):
            self._reseed(self.aug, int(rng.integers(0, 2**31 - 1)))
            if k >= first_negative:  # a lesion-free sample: an empty mask is the right answer
                if rng.random() < 0.125:
                    level, noise = rng.uniform(0, 255), rng.uniform(0, 40)
                    image = np.clip(level + noise * rng.standard_normal((size, size)), 0, 255).astype(np.uint8)
                else:
                    image = self.negatives[rng.integers(0, len(self.negatives))]
                a = self.aug(image=image, mask=np.zeros((size, size), np.uint8))
            else:
                a = self.aug(image=self.images[i], mask=self.masks[i])
            img, m = a["image"], a["mask"]
            r = c0 = 0
            if crop < size:
                fg = np.argwhere(m > 0)
                if len(fg) and k < round(c.foreground_oversampling * c.batch_size):
                    cy, cx = fg[rng.integers(0, len(fg))]
                    r = int(np.clip(cy - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, size - crop))
                    c0 = int(np.clip(cx - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, size - crop))
                else:
                    r, c0 = (int(v) for v in rng.integers(0, size - crop + 1, 2))
            xs.append(img[r : r + crop, c0 : c0 + crop])
            ys.append(m[r : r + crop, c0 : c0 + crop])
        x = normalise_frames(np.stack(xs).astype(np.float32) / 255.0, c.network.normalise)
        x = torch.from_numpy(np.ascontiguousarray(x)[:, None])
        y = torch.from_numpy(np.stack(ys)[:, None].astype(np.float32))
        return x, y


# ----------------------------------------------------------------------------------- scoring
def _score(
    net: torch.nn.Module,
    config: SegmenterTrainConfig,
    frames: _Frames,
    device: torch.device,
    *,
    probs_dir: Path | None = None,
) -> pd.DataFrame:
    """Segment each frame at its own size and score it, with and without the largest-component step.

    With ``config.tta``, also with flip test-time augmentation (``dice_tta``…). With ``probs_dir``,
    each frame's probability map is saved there as ``<case_id>.png`` (8-bit, probability x 255):
    out-of-fold predicted masks that a fusion model can be fitted on.
    """
    from usher2.evaluate.segmentation import segmentation_metrics
    from usher2.segment.base import postprocess_mask
    from usher2.segment.unet import UNetSegmenter

    seg = UNetSegmenter.from_network(net, config.network, device=str(device), enhancer=config.data.enhancer)
    seg_tta = (
        UNetSegmenter.from_network(net, config.network, device=str(device), enhancer=config.data.enhancer, tta=True)
        if config.tta
        else None
    )
    if probs_dir is not None:
        probs_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (img, truth) in enumerate(zip(frames.images, frames.masks, strict=True)):
        x = img[None, None].astype(np.float32) / 255.0
        prob = seg.predict_proba(x)[0, 0]
        row = dict(frames.info.iloc[k])
        for suffix, lcc in (("", False), ("_lcc", True)):
            m = segmentation_metrics(postprocess_mask(prob > 0.5, largest_component=lcc), truth)
            row.update({f"{key}{suffix}": m[key] for key in ("dice", "iou", "hd95", "assd")})
        if seg_tta is not None:
            p_tta = seg_tta.predict_proba(x)[0, 0]
            row["dice_tta"] = segmentation_metrics(postprocess_mask(p_tta > 0.5), truth)["dice"]
        if probs_dir is not None:
            _, png = cv2.imencode(".png", np.rint(prob * 255).astype(np.uint8))
            atomic_write_bytes(probs_dir / f"{frames.ids[k]}.png", png.tobytes())
        rows.append(row)
    return pd.DataFrame(rows)


def _score_negatives(
    net: torch.nn.Module, config: SegmenterTrainConfig, frames: _Frames, device: torch.device
) -> pd.DataFrame:
    """Segment the lesion-free crop of each held-out frame (where it has one): is it called no-lesion?"""
    from usher2.segment.unet import UNetSegmenter

    seg = UNetSegmenter.from_network(net, config.network, device=str(device), enhancer=config.data.enhancer)
    rows = []
    for k, (img, truth) in enumerate(zip(frames.images, frames.masks, strict=True)):
        crop = background_crop(img, truth)
        if crop is None:
            continue
        [result] = seg.segment(crop[None, None].astype(np.float32) / 255.0)
        row = dict(frames.info.iloc[k])
        row.update({"no_lesion": bool(result.no_lesion), "false_area": result.area_px / crop.size})
        rows.append(row)
    return pd.DataFrame(rows)


def _no_lesion_summary(negatives: pd.DataFrame, scores: pd.DataFrame) -> dict[str, Any]:
    """How often lesion-free crops are called no-lesion, and lesion frames are (wrongly) called so."""
    from usher2.evaluate.segmentation import bootstrap_ci

    if negatives.empty:  # no frame had room for a lesion-free strip
        return {"n_negative_crops": 0}

    spec, lo, hi = bootstrap_ci(
        negatives["no_lesion"].to_numpy(float), groups=negatives["patient_id"].astype(str).to_numpy()
    )
    missed = scores["dice"].to_numpy(float) == 0.0
    return {
        "n_negative_crops": len(negatives),
        "specificity": {"mean": spec, "ci_low": lo, "ci_high": hi},
        "mean_false_area_fraction": float(negatives["false_area"].mean()),
        "lesion_frames_with_empty_or_disjoint_mask": int(missed.sum()),
    }


def _summary(scores: pd.DataFrame, lcc: bool) -> dict[str, Any]:
    from usher2.evaluate.segmentation import bootstrap_ci

    suffix = "_lcc" if lcc else ""
    out: dict[str, Any] = {"n_frames": len(scores), "n_patients": int(scores["patient_id"].nunique())}
    for key in ("dice", "iou", "hd95", "assd"):
        mean, lo, hi = bootstrap_ci(scores[f"{key}{suffix}"].to_numpy(float), groups=scores["patient_id"].to_numpy())
        out[key] = {"mean": mean, "ci_low": lo, "ci_high": hi}
    return out


# ----------------------------------------------------------------------------------- loop
def _fit(
    config: SegmenterTrainConfig,
    frames: _Frames,
    out: Path,
    *,
    log: Callable[[str], None],
    progress: Callable[[int, int], None] | None,
    val: _Frames | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> tuple[torch.nn.Module, float, int]:
    """Train one network on ``frames`` into ``out``; resumes from ``out/checkpoint.pt``. Returns (net, wall, steps)."""
    import segmentation_models_pytorch as smp

    world, rank, local_rank = scaffold.dist_info()
    device = scaffold.pick_device(config.device, local_rank)
    use_amp = config.amp and device.type == "cuda"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    net = build_network(config.network).to(device)
    sampler = _Sampler(config, frames, rank)
    steps_per_epoch = config.steps_per_epoch or max(1, len(sampler) // (config.batch_size * world))
    total = config.epochs * steps_per_epoch
    opt = torch.optim.SGD(
        net.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total) ** 0.9)
    dice_loss = smp.losses.DiceLoss(mode="binary", from_logits=True)
    trainables = {"net": net, "opt": opt, "sched": sched}
    start, history, wall_before = _resume(config, out, trainables, device, log)
    model = scaffold.wrap_ddp(net, device, world)

    clock = scaffold.WallClock(wall_before)
    net.train()
    for epoch in scaffold.epoch_range(start, config.epochs, world):
        losses = []
        for step in scaffold.step_range(epoch, steps_per_epoch, total, progress, rank):
            x, y = sampler.batch(epoch * steps_per_epoch + step)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                z = model(x).float()
                loss = dice_loss(z, y) + F.binary_cross_entropy_with_logits(z, y)
            losses.append(scaffold.optimiser_step(loss, opt, sched, clip=(net, 12.0)))  # nnU-Net clips at 12
        if rank == 0:
            record = _epoch_record(config, net, epoch, losses, val, device)
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            shown = f"  val Dice {record['val_dice']:.4f}" if "val_dice" in record else ""
            log(f"{out.name} epoch {epoch:3d}  loss {record['loss']:.4f}{shown}")
            state = {"digest": config.digest(), **scaffold.state_dicts(trainables), "epoch": epoch, "history": history}
            scaffold.save_checkpoint(out / "checkpoint.pt", {**state, "wall_seconds": clock()})
    net.eval()
    atomic_write_text(out / "history.json", json.dumps(history, indent=2))
    return net, clock(), len(history) * steps_per_epoch


def _resume(
    config: SegmenterTrainConfig,
    out: Path,
    trainables: dict[str, Any],
    device: torch.device,
    log: Callable[[str], None],
) -> tuple[int, list[dict[str, float]], float]:
    """Restore ``out/checkpoint.pt`` when there is one: (first epoch to run, history, wall seconds so far)."""
    state = scaffold.load_checkpoint(out / "checkpoint.pt", device, config.digest())
    if state is None:
        return 0, [], 0.0
    scaffold.restore_states(state, trainables)
    start = state["epoch"] + 1
    log(f"resumed {out} at epoch {start}")
    return start, state["history"], state["wall_seconds"]


def _epoch_record(
    config: SegmenterTrainConfig,
    net: torch.nn.Module,
    epoch: int,
    losses: list[float],
    val: _Frames | None,
    device: torch.device,
) -> dict[str, float]:
    """The epoch's mean loss and, with ``val``, its Dice on those frames."""
    record: dict[str, float] = {"epoch": float(epoch), "loss": float(np.mean(losses))}
    if val is not None:
        net.eval()
        record["val_dice"] = float(_score(net, config, val, device)["dice"].mean())
        net.train()
    return record


def _epoch_logger(tracker: Any, name: str) -> Callable[[dict[str, float]], None]:
    """Log one fit's epoch records to the tracker as ``<name>.loss`` etc., stepped by epoch."""

    def log_epoch(record: dict[str, float]) -> None:
        tracker.log_metrics({f"{name}.{k}": v for k, v in record.items() if k != "epoch"}, step=int(record["epoch"]))

    return log_epoch


@dataclass(frozen=True)
class _Run:
    """What every stage of one segmenter run (folds, held-out devices, final fit) shares."""

    config: SegmenterTrainConfig
    out: Path
    device: torch.device
    rank: int
    log: Callable[[str], None]
    progress: Callable[[int, int], None] | None
    tracker: Any

    @property
    def data_dir(self) -> Path:
        return self.out / "data"

    def fit(self, frames: _Frames, out: Path, name: str) -> tuple[torch.nn.Module, float, int]:
        """:func:`_fit` into ``out``, its epochs tracked as ``<name>.*``."""
        return _fit(
            self.config, frames, out, log=self.log, progress=self.progress, on_epoch=_epoch_logger(self.tracker, name)
        )


def _read_done(run_dir: Path, what: str, log: Callable[[str], None]) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The scores and negatives of a validation fit finished before (``scores.csv`` is written last), or None."""
    scores_path, negatives_path = run_dir / "scores.csv", run_dir / "negatives.csv"
    if not (scores_path.exists() and negatives_path.exists()):
        return None
    scores = pd.read_csv(scores_path, dtype={"patient_id": str})
    negatives = pd.read_csv(negatives_path, dtype={"patient_id": str})
    log(f"{what}: done before, scores read from {scores_path}")
    return scores, negatives


def _score_held_out(
    net: torch.nn.Module, config: SegmenterTrainConfig, held: _Frames, device: torch.device, run_dir: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the held-out frames and their lesion-free crops into ``run_dir``; ``scores.csv`` last marks it done."""
    scores = _score(net, config, held, device, probs_dir=run_dir / "probs")
    negatives = _score_negatives(net, config, held, device)
    negatives.to_csv(run_dir / "negatives.tmp", index=False)
    (run_dir / "negatives.tmp").replace(run_dir / "negatives.csv")
    scores.to_csv(run_dir / "scores.tmp", index=False)  # written last: marks the run done
    (run_dir / "scores.tmp").replace(run_dir / "scores.csv")
    return scores, negatives


def _network_metadata(config: SegmenterTrainConfig, largest: bool) -> dict[str, str]:
    """The metadata every exported network carries: post-processing, enhancer and training config."""
    return {
        "postprocess": json.dumps({"threshold": 0.5, "largest_component": largest}),
        "enhancer": config.data.enhancer or "",
        **scaffold.config_metadata(config),
    }


def _heldout_devices(run: _Run) -> tuple[dict[str, Any], float]:
    """Train without the held-out scanners, score their frames; a finished run (``scores.csv``) is read back."""
    config, d, data_dir = run.config, run.config.data, run.data_dir
    run_dir = run.out / "heldout_devices"
    seconds = 0.0
    done = _read_done(run_dir, "held-out devices", run.log)
    if done is not None:
        scores, negatives = done
    else:
        held = _bus_bra_frames(d.bus_bra, d.folds, data_dir, devices=config.heldout_devices)  # type: ignore[arg-type]
        train = _training_frames(config, d.folds, data_dir, without_devices=config.heldout_devices)
        run.log(
            f"held-out devices {list(config.heldout_devices)}: "
            f"training on {len(train.ids)} frames, testing {len(held.ids)}"
        )
        net, seconds, _ = run.fit(train, run_dir, "heldout")
        if run.rank != 0:
            return {}, seconds
        without = {"trained_without_devices": json.dumps(list(config.heldout_devices))}
        meta = {**_network_metadata(config, False), **without}
        save_network(net, config.network, run_dir / "segmenter.safetensors", metadata=meta)
        scores, negatives = _score_held_out(net, config, held, run.device, run_dir)
    summary = _heldout_summary(config, scores, negatives)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    run.log(
        f"held-out devices: Dice {_fmt(summary, 'dice')} over {summary['n_frames']} frames; "
        + "; ".join(f"{dv}: {_fmt(v, 'dice')}" for dv, v in summary["per_device"].items())
    )
    return summary, seconds


def _heldout_summary(config: SegmenterTrainConfig, scores: pd.DataFrame, negatives: pd.DataFrame) -> dict[str, Any]:
    """Dice etc. over the held-out scanners' frames, per scanner, with patient-cluster bootstrap CIs."""
    summary: dict[str, Any] = {
        "devices": list(config.heldout_devices),
        **_summary(scores, False),
        "per_device": {str(dv): _summary(g, False) for dv, g in scores.groupby("device")},
        "no_lesion": _no_lesion_summary(negatives, scores),
    }
    if "dice_tta" in scores:
        from usher2.evaluate.segmentation import bootstrap_ci

        mean, lo, hi = bootstrap_ci(scores["dice_tta"].to_numpy(float), groups=scores["patient_id"].to_numpy())
        summary["dice_tta"] = {"mean": mean, "ci_low": lo, "ci_high": hi}
    return summary


def train_segmenter(
    config: SegmenterTrainConfig,
    *,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
    command: str | None = None,
    track: str | None = None,
) -> SegmenterTrainResult:
    """Cross-validate (``cv_folds``), then train the final segmenter and export it with a model card.

    Each fold's run and the final run live in their own sub-folder of ``out`` and resume
    independently; a finished fold (``cv_fold<k>/scores.csv``) is not retrained.

    Args:
        config: The run.
        log: Receives one line per epoch and per event.
        progress: ``progress(step, total_steps)`` after every optimisation step of the current fit.
        command: The command line that started the run, recorded in the weights and model card.
        track: An MLflow tracking URI (:mod:`usher2.tracking`): the config as parameters, each fit's
            per-epoch loss (``<fit>.loss``), cross-validated and held-out-device metrics, and the
            model card and config as artefacts. ``None``: no tracking.

    Returns:
        The weights file and the cross-validated and held-out simulated summaries.
    """
    _, rank, _ = scaffold.dist_info()
    tags = {"command": command or "", "config_sha256": config.digest()}
    with scaffold.tracked_run(track if rank == 0 else None, "usher2-segmenter", config, tags) as tracker:
        result = _train_segmenter(config, log=log, progress=progress, command=command, tracker=tracker)
        _track_result(tracker, config, result)
    return result


def _track_result(tracker: Any, config: SegmenterTrainConfig, result: SegmenterTrainResult) -> None:
    """Track the cross-validated, held-out-device and simulated metrics, the config, the card and summaries."""
    metrics: dict[str, float] = {}
    for prefix, summary in (("cv", result.cv), ("heldout", result.heldout_devices), ("simulated", result.simulated)):
        for key in ("dice", "iou", "hd95", "assd", "dice_tta"):
            if key in summary:
                metrics[f"{prefix}.{key}"] = summary[key]["mean"]
                metrics[f"{prefix}.{key}_ci_low"] = summary[key]["ci_low"]
                metrics[f"{prefix}.{key}_ci_high"] = summary[key]["ci_high"]
    for dv, v in result.heldout_devices.get("per_device", {}).items():
        metrics[f"heldout.dice.{dv.split(' @')[0]}"] = v["dice"]["mean"]
    artifacts = [result.weights.with_suffix(".md")] if result.steps else []
    for name in ("cv_summary.json", "heldout_devices/summary.json"):
        if (Path(config.out) / name).exists():
            artifacts.append(Path(config.out) / name)
    scaffold.log_outcome(tracker, config, metrics, artifacts=tuple(artifacts))


def _train_segmenter(
    config: SegmenterTrainConfig,
    *,
    log: Callable[[str], None],
    progress: Callable[[int, int], None] | None,
    command: str | None,
    tracker: Any,
) -> SegmenterTrainResult:
    _, rank, _ = scaffold.init_distributed()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(config, out, scaffold.pick_device(config.device), rank, log, progress, tracker)
    cv, largest, wall = _cross_validate(run) if config.cv_folds else ({}, False, 0.0)
    heldout: dict[str, Any] = {}
    if config.heldout_devices:
        heldout, seconds = _heldout_devices(run)
        wall += seconds
    if not config.final_fit:
        return SegmenterTrainResult(out, cv, {}, largest, wall, 0, heldout)
    net, seconds, steps = run.fit(_training_frames(config, config.data.folds, run.data_dir), out / "final", "final")
    wall += seconds
    simulated: dict[str, Any] = {}
    if config.data.val_simulated and rank == 0:
        simulated = _score_simulated(run, net, largest)
    export = Path(config.export) if config.export else out / f"segmenter_{config.network.arch}.safetensors"
    if rank == 0:
        meta = {
            **_network_metadata(config, largest),
            "cv": json.dumps(cv),
            "simulated": json.dumps(simulated),
            "heldout_devices": json.dumps(heldout),
            "steps": str(steps),
            "wall_seconds": f"{wall:.1f}",
            **scaffold.provenance(command),
        }
        save_network(net, config.network, export, metadata=meta)
        write_segmenter_card(export)
        log(f"exported {export}")
    return SegmenterTrainResult(export, cv, simulated, largest, wall, steps, heldout)


def _cross_validate(run: _Run) -> tuple[dict[str, Any], bool, float]:
    """Train and score one network per held-out fold (a finished fold is read back): (summary, largest, wall)."""
    parts: list[pd.DataFrame] = []
    negative_parts: list[pd.DataFrame] = []
    wall = 0.0
    for k in run.config.cv_folds:
        fold_dir = run.out / f"cv_fold{k}"
        done = _read_done(fold_dir, f"fold {k}", run.log)
        if done is not None:
            parts.append(done[0])
            negative_parts.append(done[1])
            continue
        train_folds = tuple(f for f in run.config.data.folds if f != k)
        held_out = _bus_bra_frames(run.config.data.bus_bra, (k,), run.data_dir)  # type: ignore[arg-type]
        net, seconds, _ = run.fit(_training_frames(run.config, train_folds, run.data_dir), fold_dir, f"fold{k}")
        wall += seconds
        if run.rank == 0:
            scores, negatives = _score_held_out(net, run.config, held_out, run.device, fold_dir)
            plain, lcc = scores["dice"].mean(), scores["dice_lcc"].mean()
            run.log(
                f"fold {k}: held-out Dice {plain:.4f} (largest component only: {lcc:.4f}); "
                f"lesion-free crops called no-lesion: {negatives['no_lesion'].mean():.3f}"
            )
            parts.append(scores)
            negative_parts.append(negatives)
    cv, largest = _cv_summary(run, pd.concat(parts, ignore_index=True), negative_parts)
    return cv, largest, wall


def _cv_summary(run: _Run, scores: pd.DataFrame, negative_parts: list[pd.DataFrame]) -> tuple[dict[str, Any], bool]:
    """Summarise and save the out-of-fold scores; keep the largest component when it raised the mean Dice."""
    largest = bool(scores["dice_lcc"].mean() > scores["dice"].mean())
    col = "dice_lcc" if largest else "dice"
    negatives = pd.concat(negative_parts, ignore_index=True)
    cv = {
        "folds": list(run.config.cv_folds),
        "largest_component": largest,
        "dice_without_lcc": float(scores["dice"].mean()),
        "dice_with_lcc": float(scores["dice_lcc"].mean()),
        **_summary(scores, largest),
        "per_fold": {int(f): float(g[col].mean()) for f, g in scores.groupby("fold")},
        "per_device": {str(d): {"n": len(g), "dice": float(g[col].mean())} for d, g in scores.groupby("device")},
        "no_lesion": _no_lesion_summary(negatives, scores),
    }
    scores.to_csv(run.out / "cv_scores.csv", index=False)
    negatives.to_csv(run.out / "cv_negatives.csv", index=False)
    atomic_write_text(run.out / "cv_summary.json", json.dumps(cv, indent=2))
    return cv, largest


def _score_simulated(run: _Run, net: torch.nn.Module, largest: bool) -> dict[str, Any]:
    """Score the held-out simulated patients (``data.val_simulated``) with the final network."""
    d = run.config.data
    held = _simulated_frames(d.val_simulated, d.val_simulated_seed, d.simulated_size, run.data_dir)
    sim_scores = _score(net, run.config, held, run.device)
    sim_scores.to_csv(run.out / "simulated_scores.csv", index=False)
    return {"seed": d.val_simulated_seed, **_summary(sim_scores, largest)}


def _fmt(s: dict[str, Any], key: str, digits: int = 3) -> str:
    v = s[key]
    return f"{v['mean']:.{digits}f} (95% CI {v['ci_low']:.{digits}f}-{v['ci_high']:.{digits}f})"


_AUGMENTATION_TEXT = {
    "basic": "nnU-Net-like (rotation, scale, flip, noise, blur, brightness/contrast, gamma, low resolution)",
    "domain": "scanner and site randomisation (usher2.simulate.domain: gamma, gain, contrast, dynamic range, TGC "
    "ramps, down/up-sampling, anisotropic PSF blur, speckle noise of random grain, calipers and burned-in text, "
    "acoustic shadows, scan-area masks, JPEG; scale, aspect, rotation ±10°, flips, crops that cut the lesion)",
    "scanner": "nnU-Net-like geometry and intensity plus mild scanner appearance (usher2.simulate.domain."
    "scanner_randomisation: PSF blur, speckle noise, dynamic range, TGC ramps, shadows, calipers and text, JPEG)",
}


def write_segmenter_card(weights: str | Path) -> Path:
    """Write ``<weights>.md`` from the weights' metadata: data, command, cross-validated metrics, wall time."""
    w = Path(weights)
    meta = scaffold.read_weights_metadata(w)
    cfg = json.loads(meta["train_config"])
    cv, sim = json.loads(meta.get("cv") or "{}"), json.loads(meta.get("simulated") or "{}")
    lines = [f"# {w.name}", "", *_card_recipe(meta, cfg, cv)]
    lines += _card_cv(cv)
    lines += _card_heldout(json.loads(meta.get("heldout_devices") or "{}"))
    if sim:
        lines += [
            "",
            f"## Held-out simulated frames (seed {sim['seed']}, never trained on)",
            "",
            f"- Dice {_fmt(sim, 'dice')} over {sim['n_frames']} frames",
        ]
    lines += ["", "## Training config", "", "```json", json.dumps(cfg, indent=2, sort_keys=True), "```", ""]
    card = w.with_suffix(".md")
    atomic_write_text(card, "\n".join(lines))
    return card


def _card_recipe(meta: dict[str, str], cfg: dict[str, Any], cv: dict[str, Any]) -> list[str]:
    """The card's bullets on the model, data, augmentation, command, steps and post-processing."""
    net, data = cfg["network"], cfg["data"]
    post = json.loads(meta["postprocess"])
    sources = []
    if data["bus_bra"]:
        sources.append(f"BUS-BRA folds {', '.join(map(str, data['folds']))} (official patient-grouped partition)")
    if data["simulated"]:
        sources.append(f"{data['simulated']} simulated patients (usher2.simulate, seed {data['simulated_seed']})")
    return [
        f"- **Model:** smp {net['arch']} with a {net['encoder']} encoder (random initialisation), decoder "
        f"{tuple(net['decoder_channels'])}, 1-channel input, working resolution {net['input_size']} px (longer side); "
        "fp16 safetensors with the architecture in the metadata.",
        f"- **Training data:** {'; '.join(sources)}."
        + (f" Inputs enhanced with `{data['enhancer']}` first." if data["enhancer"] else "")
        + (
            f" Simulated patients split over {data['simulated_settings']} randomised scanner settings "
            "(usher2.simulate.randomise)."
            if data.get("simulated_settings")
            else ""
        ),
        f"- **Augmentation:** {_AUGMENTATION_TEXT[cfg.get('augmentation', 'basic')]}; input normalisation "
        f"`{net.get('normalise', 'none')}`.",
        f"- **Command:** `{meta.get('command') or 'usher2 train segmenter --config ...'}` "
        f"(config SHA-256 `{meta['train_config_sha256'][:16]}`).",
        f"- **Steps (final fit):** {meta['steps']}; training time {float(meta['wall_seconds']) / 60:.1f} min "
        f"(every fit: cross-validation folds and the final one; data preparation and scoring excluded), "
        f"torch {meta['torch']}.",
        f"- **Post-processing:** fill holes; largest component only: {post['largest_component']}"
        + (
            f" (cross-validated Dice {cv['dice_with_lcc']:.4f} with vs {cv['dice_without_lcc']:.4f} without)."
            if cv
            else "."
        ),
    ]


def _card_cv(cv: dict[str, Any]) -> list[str]:
    """The card's cross-validation section (none without ``cv_folds``)."""
    if not cv:
        return []
    lines = [
        "",
        f"## {len(cv['folds'])}-fold cross-validation of the same recipe (BUS-BRA, held-out folds)",
        "",
        f"Frames {cv['n_frames']}, patients {cv['n_patients']}; CIs: patient-level bootstrap. Distances in pixels "
        "of the original frame (BUS-BRA gives no pixel spacing).",
        "",
        f"- Dice {_fmt(cv, 'dice')}",
        f"- IoU {_fmt(cv, 'iou')}",
        f"- HD95 {_fmt(cv, 'hd95', 1)} px",
        f"- ASSD {_fmt(cv, 'assd', 1)} px",
        "- Per fold Dice: " + ", ".join(f"{k}: {v:.3f}" for k, v in cv["per_fold"].items()),
        "- Per device Dice: " + "; ".join(f"{d} (n={v['n']}): {v['dice']:.3f}" for d, v in cv["per_device"].items()),
    ]
    if cv.get("no_lesion", {}).get("n_negative_crops"):
        nl = cv["no_lesion"]
        lines += [
            f"- No-lesion frames: of {nl['n_negative_crops']} lesion-free crops of the held-out frames (the "
            f"largest strip beside the lesion), {_fmt(nl, 'specificity')} were returned as no-lesion; mean "
            f"false-positive area {100 * nl['mean_false_area_fraction']:.1f}% of the crop. Lesion frames whose "
            f"mask missed the lesion entirely (Dice 0): {nl['lesion_frames_with_empty_or_disjoint_mask']}.",
        ]
    return lines


def _card_heldout(held: dict[str, Any]) -> list[str]:
    """The card's leave-device-out section (none without ``heldout_devices``)."""
    if not held.get("n_frames"):
        return []
    lines = [
        "",
        f"## Leave-device-out validation (BUS-BRA scanners never trained on: {', '.join(held['devices'])})",
        "",
        "The same recipe trained once more without these scanners' frames (every other BUS-BRA frame plus the "
        "simulated ones) and scored on their frames at their own size; CIs: patient-cluster bootstrap.",
        "",
        f"- Dice {_fmt(held, 'dice')} over {held['n_frames']} frames of {held['n_patients']} patients"
        + (f"; with flip TTA {_fmt(held, 'dice_tta')}" if "dice_tta" in held else ""),
        "- Per device Dice: "
        + "; ".join(f"{d} (n={v['n_frames']}): {_fmt(v, 'dice')}" for d, v in held["per_device"].items()),
        f"- HD95 {_fmt(held, 'hd95', 1)} px",
        "- This Dice is the selection criterion of the recipe (augmentation, working size, TTA): the "
        "alternatives were trained on the same split by `train/configs/ablations/segmenter_lodo_*.yaml` "
        "(README, segmentation section).",
    ]
    nl = held.get("no_lesion", {})
    if nl.get("n_negative_crops"):
        lines.append(
            f"- No-lesion frames: {_fmt(nl, 'specificity')} of {nl['n_negative_crops']} lesion-free crops "
            "of these scanners' frames were returned as no-lesion."
        )
    return lines
