"""Training of the learned enhancers: pix2pix on simulated pairs, CycleGAN on unpaired frames.

One config file drives a run (:class:`EnhancerTrainConfig`, YAML or JSON). The run is seeded,
checkpoints every epoch (atomically) and resumes after a kill, shows a progress bar and the
validation metrics every epoch, stops early when validation stops improving, uses bf16
autocast on CUDA, and runs under ``torchrun`` (DDP) with no code change. The best generator is
exported as fp16 safetensors with its metrics and the config hash in the metadata. With
``track`` the run is also logged to MLflow (:mod:`usher2.tracking`).

Losses (pix2pix): LSGAN adversarial on a conditional PatchGAN ``D(x, G(x))`` plus
``lambda_l1 * |G(x) - y|`` plus ``lambda_ssim * (1 - SSIM(G(x), y))`` (no downloaded
perceptual network), plus, with ``lambda_selfsup > 0``, a Neighbor2Neighbor self-supervised
term on real frames (:func:`neighbor2neighbor_loss`).

Data (issue 23): ``data.settings = N > 0`` renders the training inputs with
``randomised_configs(N, train_seed)`` (a family of PSFs, noise, clutter, dynamic ranges, gains and
TGC errors; patient ``i`` uses setting ``i % N``) instead of the one default degraded setting, and
``data.target`` picks what the generator learns to output: the ``clean`` rendering, the true
``echogenicity`` map shown like the clean frame (:func:`~usher2.simulate.shifted.echogenicity_display`),
or their ``blend`` (:func:`training_target`). ``init`` warm-starts the generator from weights.

CycleGAN: LSGAN on both domains, cycle consistency (L1) and identity loss; with
``mask_conditioned`` the B-domain discriminator also sees the lesion mask, so a
lesion can be neither invented nor erased without the discriminator noticing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import usher2.training as scaffold
from usher2.enhance.networks import GeneratorConfig, PatchDiscriminator, UNetGenerator, ssim_loss
from usher2.io.atomic import atomic_write_text
from usher2.io.errors import InputError
from usher2.tracking import Tracker

__all__ = [
    "TARGETS",
    "DataConfig",
    "EnhancerTrainConfig",
    "TrainResult",
    "load_train_config",
    "neighbor2neighbor_loss",
    "neighbour_subsample",
    "simulated_pairs",
    "train_enhancer",
    "training_target",
    "truth_pairs",
    "write_model_card",
]


@dataclass(frozen=True)
class DataConfig:
    """Where training frames come from.

    Attributes:
        source: ``"simulated"``: paired degraded -> clean renderings from ``usher2.simulate``
            (pix2pix; also CycleGAN's B domain when ``unpaired_b`` is ``"simulated-clean"``).
            ``"bus-bra"``: BUS-BRA frames (CycleGAN); needs ``root``.
        n_train: Simulated training patients.
        n_val: Simulated validation patients (their seed is never used for training).
        train_seed: Cohort seed of the training pairs.
        val_seed: Cohort seed of the validation pairs.
        image_size: Simulated frame side in pixels.
        root: BUS-BRA folder for ``source="bus-bra"``.
        target_devices: CycleGAN B domain: BUS-BRA frames from these devices (the best quality);
            every other device is the A (degraded) domain.
        settings: 0: every training input is rendered with the default degraded setting (the
            original recipe). ``N >= 1``: ``randomised_configs(N, train_seed)``, patient ``i`` with
            setting ``i % N``; validation then cycles ``randomised_configs(min(N, 8), val_seed)``.
        target: ``"clean"`` (the high-quality rendering), ``"echogenicity"`` (the true
            reflectivity in the clean frame's display scale) or ``"blend"``.
        blend: Weight of the echogenicity map in the ``"blend"`` target (in (0, 1)).
        cache: Folder that keeps the rendered frames of the new data path (settings > 0 or a
            target other than clean), shared between runs; default ``<out>/data``. Frames are
            keyed by seed and every setting, so runs that share it never mix data.
        real_root: BUS-BRA folder whose official folds ``real_folds`` feed the self-supervised
            term (``lambda_selfsup > 0``).
        real_folds: BUS-BRA folds used as real frames (default 2-4: fold 1 is
            ``bench/enhance.py``'s and fold 5 ``bench/enhance_shift.py``'s evaluation fold).
    """

    source: str = "simulated"
    n_train: int = 600
    n_val: int = 64
    train_seed: int = 1000
    val_seed: int = 2000
    image_size: int = 256
    root: str | None = None
    target_devices: tuple[str, ...] = ()
    settings: int = 0
    target: str = "clean"
    blend: float = 0.5
    cache: str | None = None
    real_root: str | None = None
    real_folds: tuple[int, ...] = (2, 3, 4)

    def __post_init__(self) -> None:
        if self.source not in ("simulated", "bus-bra"):
            raise ValueError(f"data.source must be 'simulated' or 'bus-bra', got {self.source!r}")
        if self.train_seed == self.val_seed:
            raise ValueError(f"data.val_seed must differ from data.train_seed (both {self.train_seed})")
        for name in ("n_train", "n_val", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.source == "bus-bra" and not self.root:
            raise ValueError("data.root must name the BUS-BRA folder when data.source is 'bus-bra'")
        if self.target not in TARGETS:
            raise ValueError(f"data.target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if not 0.0 < self.blend < 1.0:
            raise ValueError(f"data.blend must be in (0, 1), got {self.blend}")
        if self.settings < 0:
            raise ValueError(f"data.settings must be >= 0 (0 = the default degraded setting), got {self.settings}")
        if not self.real_folds or not set(self.real_folds) <= {1, 2, 3, 4, 5}:
            raise ValueError(f"data.real_folds must be BUS-BRA folds 1-5, got {self.real_folds}")

    @property
    def with_truth(self) -> bool:
        """Whether the run renders frames with their reflectivity (the issue-23 data path)."""
        return self.settings > 0 or self.target != "clean"


TARGETS = ("clean", "echogenicity", "blend")

#: Fields added after weights were shipped, left out of :meth:`EnhancerTrainConfig.digest` while they
#: hold their default, so checkpoints of older configs still resume.
_NEW_DEFAULTS: dict[str, Any] = {"init": None, "lambda_selfsup": 0.0}
_NEW_DATA_DEFAULTS: dict[str, Any] = {
    "settings": 0,
    "target": "clean",
    "blend": 0.5,
    "cache": None,
    "real_root": None,
    "real_folds": (2, 3, 4),
}


@dataclass(frozen=True)
class EnhancerTrainConfig:
    """One enhancer training run; every field is saved with the checkpoint and the weights."""

    model: str = "pix2pix"
    out: str = "runs/enhancer-pix2pix"
    export: str | None = None
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    disc_channels: int = 32
    disc_layers: int = 3
    mask_conditioned: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    crop: int = 128
    batch_size: int = 8
    epochs: int = 30
    steps_per_epoch: int = 100
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_adv: float = 1.0
    lambda_l1: float = 100.0
    lambda_ssim: float = 10.0
    lambda_cycle: float = 10.0
    lambda_identity: float = 5.0
    patience: int = 6
    seed: int = 0
    amp: bool = True
    device: str | None = None
    init: str | None = None
    lambda_selfsup: float = 0.0

    def __post_init__(self) -> None:
        if self.model not in ("pix2pix", "cyclegan"):
            raise ValueError(f"model must be 'pix2pix' or 'cyclegan', got {self.model!r}")
        m = self.generator.multiple
        if self.crop < m or self.crop % m:
            raise ValueError(f"crop must be a multiple of {m} (2**generator.depth), got {self.crop}")
        if self.crop > self.data.image_size:
            raise ValueError(f"crop {self.crop} is larger than data.image_size {self.data.image_size}")
        for name in ("batch_size", "epochs", "steps_per_epoch", "patience", "disc_channels", "disc_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.lambda_selfsup < 0:
            raise ValueError(f"lambda_selfsup must be >= 0, got {self.lambda_selfsup}")
        if self.lambda_selfsup > 0 and (self.model != "pix2pix" or not self.data.real_root):
            raise ValueError(
                "lambda_selfsup > 0 needs model 'pix2pix' and data.real_root (the BUS-BRA folder), "
                f"got model {self.model!r}, data.real_root {self.data.real_root!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """SHA-256 of the settings a checkpoint must share to be resumed.

        Leaves out where files go (``out``, ``export``, ``data.cache``), the ``device``, and when to
        stop (``epochs``, ``patience``), so a finished run can be extended; fields added later are
        left out while they hold their default, so older checkpoints keep their digest. The full
        config is stored with the exported weights.
        """
        skip = ("out", "export", "device", "epochs", "patience")
        d = {k: v for k, v in self.to_dict().items() if k not in skip}
        for k, v in _NEW_DEFAULTS.items():
            if d[k] == v:
                del d[k]
        data = d["data"]
        del data["cache"]
        for k, v in _NEW_DATA_DEFAULTS.items():
            if k in data and (tuple(data[k]) if isinstance(data[k], list | tuple) else data[k]) == v:
                del data[k]
        return scaffold.config_sha256(d)


def load_train_config(path: str | Path, **overrides: Any) -> EnhancerTrainConfig:
    """Read an :class:`EnhancerTrainConfig` from YAML or JSON; unknown keys are errors."""
    return scaffold.load_config_file(
        path,
        EnhancerTrainConfig,
        nested={"generator": GeneratorConfig, "data": DataConfig},
        tuples={"data": ("target_devices", "real_folds")},
        what="enhancer training",
        **overrides,
    )


@dataclass(frozen=True)
class TrainResult:
    """What a run produced."""

    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]]
    weights: Path
    wall_seconds: float
    steps: int


# ----------------------------------------------------------------------------------- data
def _read_grey(path: Path) -> np.ndarray:
    return scaffold.read_grey(path, "a readable PNG").astype(np.float32) / 255.0


def simulated_pairs(out: Path, n: int, seed: int, size: int = 256) -> dict[str, torch.Tensor]:
    """Degraded ``x`` / clean ``y`` / ``mask`` float tensors ``(N, 1, size, size)`` of a simulated cohort.

    The cohort is written to (or resumed from) ``out``, so a second call reads it from disk.
    """
    from usher2.simulate import SimulationConfig, simulate_cohort

    manifest = simulate_cohort(n, seed, out, config=SimulationConfig(image_size=(size, size)))
    arrays: dict[str, list[np.ndarray]] = {"x": [], "y": [], "mask": []}
    for _, row in manifest.iterrows():
        arrays["x"].append(_read_grey(out / row["image"]))
        arrays["y"].append(_read_grey(out / row["clean"]))
        arrays["mask"].append((_read_grey(out / row["mask"]) > 0.5).astype(np.float32))
    return {k: torch.from_numpy(np.stack(v)[:, None]) for k, v in arrays.items()}


def training_target(clean: np.ndarray, reflectivity: np.ndarray, kind: str, blend: float = 0.5) -> np.ndarray:
    """What the generator learns to output for one frame, float32 in [0, 1].

    Args:
        clean: ``(H, W)`` clean rendering in [0, 1].
        reflectivity: ``(H, W)`` true reflectivity map of the same frame (gland = 1).
        kind: ``"clean"``: the clean rendering (keeps its speckle). ``"echogenicity"``: the
            reflectivity in the clean frame's display (:func:`~usher2.simulate.shifted.echogenicity_display`,
            60 dB; no speckle). ``"blend"``: ``(1 - blend) * clean + blend * echogenicity``.
        blend: Weight of the echogenicity map in the blend.

    Example:
        >>> c = np.full((2, 2), 0.5, np.float32); r = np.ones((2, 2), np.float32)
        >>> float(training_target(c, r, "blend", 0.25)[0, 0])  # 0.75 * 0.5 + 0.25 * 5/6
        0.5833333134651184
    """
    from usher2.simulate.shifted import echogenicity_display

    if kind not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {kind!r}")
    if clean.shape != reflectivity.shape:
        raise ValueError(f"clean and reflectivity shapes differ: {clean.shape} vs {reflectivity.shape}")
    clean = np.asarray(clean, np.float32)
    if kind == "clean":
        return clean
    echo = echogenicity_display(reflectivity, 60.0)
    if kind == "echogenicity":
        return echo
    return ((1.0 - blend) * clean + blend * echo).astype(np.float32)


def truth_pairs(
    cache: Path | None, n: int, seed: int, configs: list[Any], *, target: str = "clean", blend: float = 0.5, name: str
) -> dict[str, torch.Tensor]:
    """Input ``x`` / target ``y`` / ``clean`` / ``mask`` / ``truth_db`` / ``below`` tensors ``(N, 1, H, W)``.

    Frame ``i`` is patient ``i`` of cohort ``seed`` rendered with ``configs[i % len(configs)]``
    (:func:`~usher2.simulate.shifted.evaluation_set`, cached in ``cache``); ``y`` is
    :func:`training_target` of ``target``. ``truth_db`` and ``below`` (the tissue below the skin)
    let validation score fidelity like ``bench/enhance_shift.py``.
    """
    from usher2.simulate.shifted import evaluation_set

    frames = evaluation_set(n, seed, configs, cache=cache, name=name)
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in ("x", "y", "clean", "mask", "truth_db", "below")}
    for f in frames:
        clean = f.clean.astype(np.float32) / 255.0
        arrays["x"].append(f.image.astype(np.float32) / 255.0)
        arrays["y"].append(training_target(clean, f.reflectivity, target, blend))
        arrays["clean"].append(clean)
        arrays["mask"].append(f.mask.astype(np.float32))
        arrays["truth_db"].append(f.truth_db)
        arrays["below"].append(f.below_skin.astype(np.float32))
    return {k: torch.from_numpy(np.stack(v)[:, None]) for k, v in arrays.items()}


def neighbour_subsample(x: torch.Tensor, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbor2Neighbor's random neighbour sub-sampler (Huang et al., CVPR 2021).

    Each 2 x 2 cell of ``x`` ``(B, C, H, W)`` gives one pixel to each of two half-size images:
    two different, adjacent (4-neighbour) pixels of the cell, drawn independently per cell.

    Returns:
        ``(g1, g2)``, each ``(B, C, H // 2, W // 2)``.

    Example:
        >>> g1, g2 = neighbour_subsample(torch.arange(16.0).reshape(1, 1, 4, 4), torch.Generator().manual_seed(0))
        >>> g1.shape, bool((g1 != g2).all())
        (torch.Size([1, 1, 2, 2]), True)
    """
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"neighbour_subsample needs even H and W, got {(h, w)}")
    cells = F.pixel_unshuffle(x, 2).reshape(b, c, 4, h // 2, w // 2)  # cell order: (0,0) (0,1) (1,0) (1,1)
    # The 8 ordered pairs of 4-neighbours inside a 2 x 2 cell.
    pairs = torch.tensor([[0, 1], [1, 0], [0, 2], [2, 0], [1, 3], [3, 1], [2, 3], [3, 2]], device=x.device)
    pick = pairs[torch.randint(0, 8, (b, 1, h // 2, w // 2), generator=gen).to(x.device)]  # (B, 1, h, w, 2)
    g1 = torch.gather(cells, 2, pick[..., 0].unsqueeze(2).expand(b, c, 1, h // 2, w // 2)).squeeze(2)
    g2 = torch.gather(cells, 2, pick[..., 1].unsqueeze(2).expand(b, c, 1, h // 2, w // 2)).squeeze(2)
    return g1, g2


def neighbor2neighbor_loss(
    generator: torch.nn.Module, x: torch.Tensor, gen: torch.Generator | None = None, gamma: float = 1.0
) -> torch.Tensor:
    """Self-supervised denoising loss on noisy frames alone (Neighbor2Neighbor).

    ``|G(g1) - g2|^2 + gamma * |G(g1) - g2 - (g1(G(x)) - g2(G(x)))|^2`` (means), with ``g1, g2``
    from :func:`neighbour_subsample` and ``G(x)`` not back-propagated. It needs noise that is
    independent between neighbouring pixels; ultrasound speckle is correlated over the resolution
    cell, so on frames whose speckle grain spans several pixels it mostly teaches the identity.
    """
    with torch.no_grad():
        full = generator(x)
    # One draw for both: the regulariser needs the same cells of the input and of G(x).
    s1, s2 = neighbour_subsample(torch.cat([x, full], 1), gen)
    g1, g2, f1, f2 = s1[:, :1], s2[:, :1], s1[:, 1:], s2[:, 1:]
    out = generator(g1)
    return F.mse_loss(out, g2) + gamma * F.mse_loss(out - g2, f1 - f2)


def _random_crops(
    tensors: dict[str, torch.Tensor], crop: int, batch: int, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """The same random crop (and horizontal flip) of each named tensor; depth is never flipped."""
    n, _, h, w = next(iter(tensors.values())).shape
    idx = torch.randint(0, n, (batch,), generator=gen)
    r = torch.randint(0, h - crop + 1, (batch,), generator=gen)
    c = torch.randint(0, w - crop + 1, (batch,), generator=gen)
    flip = torch.rand(batch, generator=gen) < 0.5
    out = {}
    for k, t in tensors.items():
        parts = []
        for i in range(batch):
            p = t[idx[i], :, r[i] : r[i] + crop, c[i] : c[i] + crop]
            parts.append(p.flip(-1) if flip[i] else p)
        out[k] = torch.stack(parts)
    return out


# ----------------------------------------------------------------------------------- loop
def _lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))


def _validate(generator: torch.nn.Module, val: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """Full-frame PSNR / SSIM against the clean rendering, and lesion-vs-ring gCNR, on the val pairs.

    Val sets with truth (the issue-23 data path) add ``fidelity_r`` (Pearson r with the true
    echogenicity in dB below the skin, as ``bench/enhance_shift.py``) and, when the target is not
    the clean rendering, ``psnr_target`` / ``ssim_target`` against the training target.
    """
    from usher2.evaluate.image_quality import fidelity_r, gcnr, psnr, region_ring, ssim

    generator.eval()
    truth = "truth_db" in val
    other = truth and not torch.equal(val["y"], val["clean"])
    clean = val["clean"] if truth else val["y"]
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "gcnr": []}
    if truth:
        scores["fidelity_r"] = []
    if other:
        scores |= {"psnr_target": [], "ssim_target": []}
    with torch.inference_mode():
        for i in range(0, val["x"].shape[0], 16):
            pred = generator(val["x"][i : i + 16].to(device)).float().cpu().numpy()
            for j, p in enumerate(pred):
                y = clean[i + j, 0].numpy()
                m = val["mask"][i + j, 0].numpy() > 0.5
                scores["psnr"].append(psnr(p[0], y, data_range=1.0))
                scores["ssim"].append(ssim(p[0], y, data_range=1.0))
                scores["gcnr"].append(gcnr(p[0], m, region_ring(m)))
                if truth:
                    below = val["below"][i + j, 0].numpy() > 0.5
                    scores["fidelity_r"].append(fidelity_r(p[0], val["truth_db"][i + j, 0].numpy(), below_skin=below))
                if other:
                    t = val["y"][i + j, 0].numpy()
                    scores["psnr_target"].append(psnr(p[0], t, data_range=1.0))
                    scores["ssim_target"].append(ssim(p[0], t, data_range=1.0))
    generator.train()
    return {k: float(np.mean(v)) for k, v in scores.items()}


def _score(metrics: dict[str, float]) -> float:
    """Model selection: PSNR + 10 SSIM against the training target (0.1 SSIM counts as much as 1 dB)."""
    if "psnr_target" in metrics:
        return metrics["psnr_target"] + 10.0 * metrics["ssim_target"]
    return metrics["psnr"] + 10.0 * metrics["ssim"]


def train_enhancer(
    config: EnhancerTrainConfig,
    *,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
    command: str | None = None,
    track: str | None = None,
) -> TrainResult:
    """Train (or resume) one enhancer run and export its best generator.

    Args:
        config: The run.
        log: Receives one line per epoch (validation metrics) and per event.
        progress: ``progress(step, total_steps)`` after every optimisation step.
        command: The command line that started the run, recorded in the weights and model card.
        track: MLflow tracking URI (e.g. ``"file:./mlruns"``); None: no tracking. Rank 0 logs
            one run in the ``usher2-enhancer`` experiment: the config as parameters, per epoch
            (``step`` = epoch) ``val_psnr``, ``val_ssim``, ``val_gcnr`` and rank 0's mean
            ``train_loss_g`` / ``train_loss_d``, the best epoch's ``best_val_*``, and the config,
            model card and history as artefacts. A resumed run re-logs the checkpoint's epochs
            (validation metrics only). See :mod:`usher2.tracking`.

    Returns:
        The best epoch, its validation metrics, the per-epoch history and the exported file.
    """
    rank = scaffold.dist_info()[1]
    tags = {"usher2.command": command or "", "usher2.out": config.out, "config_sha256": config.digest()}
    with scaffold.tracked_run(track if rank == 0 else None, "usher2-enhancer", config, tags) as tracker:
        return _train(config, tracker, log=log, progress=progress, command=command)


def _log_epoch(tracker: Tracker, epoch: int, metrics: dict[str, float], losses: dict[str, float] | None) -> None:
    val = {f"val_{k}": v for k, v in metrics.items() if k != "epoch"}
    tracker.log_metrics({**val, **(losses or {})}, step=epoch)


@dataclass
class _State:
    """A run's networks, optimisers and crop generator, and where its epochs stand (what a checkpoint holds)."""

    nets: dict[str, Any]
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    crop_gen: torch.Generator
    start_epoch: int = 0
    best: float = -np.inf
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    wall_before: float = 0.0

    @property
    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}


def _train(
    config: EnhancerTrainConfig,
    tracker: Tracker,
    *,
    log: Callable[[str], None],
    progress: Callable[[int, int], None] | None,
    command: str | None,
) -> TrainResult:
    world, rank, local_rank = scaffold.init_distributed()
    device = scaffold.pick_device(config.device, local_rank)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)

    data = _load_data(config, out, log)
    state = _setup(config, device, rank, log)
    _resume(config, state, out / "checkpoint.pt", device, tracker, log)
    clock = _fit_epochs(config, state, data, device, tracker, world=world, rank=rank, log=log, progress=progress)

    wall = clock()
    history, best_epoch = state.history, state.best_epoch
    steps = len(history) * config.steps_per_epoch
    best_metrics = {k: v for k, v in history[best_epoch].items() if k != "epoch"} if history else {}
    export = Path(config.export) if config.export else out / f"enhancer_{config.model}.safetensors"
    result = TrainResult(best_epoch, best_metrics, history, export, wall, steps)
    if rank == 0:
        _export(config, result, out, tracker, log=log, command=command)
    return result


def _setup(config: EnhancerTrainConfig, device: torch.device, rank: int, log: Callable[[str], None]) -> _State:
    """The networks (warm-started with ``init``), their optimisers and this rank's crop generator."""
    nets = _build(config, device)
    if config.init:
        from usher2.enhance.gan import load_generator

        init, _ = load_generator(config.init)
        if init.config != config.generator:
            raise InputError(
                Path(config.init), f"a generator of the run's architecture {config.generator}", f"{init.config}"
            )
        nets["modules"]["g"].load_state_dict(init.state_dict())
        log(f"generator initialised from {config.init}")
    opt_g = torch.optim.Adam(nets["g_params"], lr=config.lr, betas=(config.beta1, 0.999))
    opt_d = torch.optim.Adam(nets["d_params"], lr=config.lr, betas=(config.beta1, 0.999))
    crop_gen = torch.Generator().manual_seed(config.seed * 1000 + rank)
    return _State(nets, opt_g, opt_d, crop_gen)


def _resume(
    config: EnhancerTrainConfig,
    state: _State,
    ckpt_path: Path,
    device: torch.device,
    tracker: Tracker,
    log: Callable[[str], None],
) -> None:
    """Continue from the checkpoint, if there is one: networks, optimisers, random streams and history."""
    saved = scaffold.load_checkpoint(ckpt_path, device, config.digest())
    if saved is None:
        return
    scaffold.restore_states(saved["modules"], state.nets["modules"])
    scaffold.restore_states(saved, state.optimisers)
    state.crop_gen.set_state(saved["crop_rng"])
    torch.set_rng_state(saved["torch_rng"])
    state.start_epoch, state.best, state.best_epoch = saved["epoch"] + 1, saved["best"], saved["best_epoch"]
    state.history, state.wall_before = saved["history"], saved["wall_seconds"]
    log(f"resumed from {ckpt_path} at epoch {state.start_epoch}")
    tracker.set_tags({"resumed_at_epoch": state.start_epoch})
    for past in state.history:  # so that this run's curves start at epoch 0 (losses were not checkpointed)
        _log_epoch(tracker, int(past["epoch"]), past, None)


def _fit_epochs(
    config: EnhancerTrainConfig,
    state: _State,
    data: dict[str, Any],
    device: torch.device,
    tracker: Tracker,
    *,
    world: int,
    rank: int,
    log: Callable[[str], None],
    progress: Callable[[int, int], None] | None,
) -> scaffold.WallClock:
    """The epochs left (until early stopping); rank 0 validates and checkpoints each. Returns the run's clock."""
    use_amp = config.amp and device.type == "cuda"
    models = {k: scaffold.wrap_ddp(m, device, world) for k, m in state.nets["modules"].items()}
    step_fn = _pix2pix_step if config.model == "pix2pix" else _cyclegan_step
    total = config.epochs * config.steps_per_epoch
    clock = scaffold.WallClock(state.wall_before)
    stale = len(state.history) - 1 - state.best_epoch if state.best_epoch >= 0 else 0
    for epoch in scaffold.epoch_range(state.start_epoch, config.epochs, world):
        if stale >= config.patience:
            log(f"early stop: no validation gain in {config.patience} epochs (best epoch {state.best_epoch})")
            break
        loss_sum = torch.zeros(2, device=device)  # summed on the device: no sync per step
        for _ in scaffold.step_range(epoch, config.steps_per_epoch, total, progress, rank):
            batch = data["sample"](state.crop_gen)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss_sum += step_fn(models, batch, state.opt_g, state.opt_d, config)
        if rank == 0:
            stale = 0 if _end_epoch(config, state, data["val"], device, epoch, log) else stale + 1
            loss_g, loss_d = (loss_sum / config.steps_per_epoch).tolist()
            _log_epoch(tracker, epoch, state.history[-1], {"train_loss_g": loss_g, "train_loss_d": loss_d})
            _save_checkpoint(config, state, epoch, clock)
    return clock


def _end_epoch(
    config: EnhancerTrainConfig,
    state: _State,
    val: dict[str, torch.Tensor],
    device: torch.device,
    epoch: int,
    log: Callable[[str], None],
) -> bool:
    """Validate the generator, keep it when it is the best so far and log the epoch; returns whether it improved."""
    from usher2.enhance.gan import save_generator

    generator = state.nets["modules"]["g"]
    metrics = _validate(generator, val, device)
    metrics["epoch"] = float(epoch)
    state.history.append(metrics)
    score = _score(metrics)
    improved = score > state.best
    if improved:
        state.best, state.best_epoch = score, epoch
        save_generator(generator, Path(config.out) / "best_generator.safetensors")
    extra = "".join(f"  {k} {metrics[k]:.3f}" for k in ("fidelity_r", "psnr_target", "ssim_target") if k in metrics)
    log(
        f"epoch {epoch:3d}  val PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.3f}  "
        f"lesion gCNR {metrics['gcnr']:.3f}{extra}{'  *best' if improved else ''}"
    )
    return improved


def _save_checkpoint(config: EnhancerTrainConfig, state: _State, epoch: int, clock: scaffold.WallClock) -> None:
    scaffold.save_checkpoint(
        Path(config.out) / "checkpoint.pt",
        {
            "digest": config.digest(),
            "modules": scaffold.state_dicts(state.nets["modules"]),
            **scaffold.state_dicts(state.optimisers),
            "crop_rng": state.crop_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": epoch,
            "best": state.best,
            "best_epoch": state.best_epoch,
            "history": state.history,
            "wall_seconds": clock(),
        },
    )


def _export(
    config: EnhancerTrainConfig,
    result: TrainResult,
    out: Path,
    tracker: Tracker,
    *,
    log: Callable[[str], None],
    command: str | None,
) -> None:
    """Export the best generator with its provenance, write the history and the model card, track the outcome."""
    from usher2.enhance.gan import load_generator, save_generator

    generator, _ = load_generator(out / "best_generator.safetensors")
    meta = {
        "model": config.model,
        **scaffold.config_metadata(config),
        "best_epoch": str(result.best_epoch),
        "val_metrics": json.dumps(result.best_metrics),
        "steps": str(result.steps),
        "wall_seconds": f"{result.wall_seconds:.1f}",
        **scaffold.provenance(command),
    }
    save_generator(generator, result.weights, metadata=meta)
    history = {"history": result.history, "best_epoch": result.best_epoch, "wall_seconds": result.wall_seconds}
    atomic_write_text(out / "history.json", json.dumps(history, indent=2))
    card = write_model_card(result.weights)
    log(f"best epoch {result.best_epoch}: {result.best_metrics}; exported {result.weights}")
    metrics = {
        **{f"best_val_{k}": v for k, v in result.best_metrics.items()},
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "wall_seconds": result.wall_seconds,
    }
    scaffold.log_outcome(tracker, config, metrics, weights=result.weights, artifacts=(card, out / "history.json"))


def _load_data(config: EnhancerTrainConfig, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    d = config.data
    if d.with_truth:
        return _load_truth_data(config, out, log)
    log(f"preparing data in {out / 'data'}")
    val = simulated_pairs(out / "data" / "val", d.n_val, d.val_seed, d.image_size)
    if config.model == "pix2pix":
        if d.source != "simulated":
            raise ValueError("pix2pix needs paired frames: set data.source to 'simulated'")
        train = simulated_pairs(out / "data" / "train", d.n_train, d.train_seed, d.image_size)
        return {"val": val, "sample": _paired_sampler(config, train, out)}
    dom_a, dom_b = _unpaired_domains(config, out)

    def sample(gen: torch.Generator) -> dict[str, torch.Tensor]:
        a = _random_crops(dom_a, config.crop, config.batch_size, gen)
        b = _random_crops(dom_b, config.crop, config.batch_size, gen)
        return {"a": a["x"], "a_mask": a["mask"], "b": b["x"], "b_mask": b["mask"]}

    return {"val": val, "sample": sample}


def _paired_sampler(
    config: EnhancerTrainConfig, train: dict[str, torch.Tensor], out: Path
) -> Callable[[torch.Generator], dict[str, torch.Tensor]]:
    """Crops of the training pairs, plus crops of real frames (key ``real``) for the self-supervised term."""
    pairs = {k: train[k] for k in ("x", "y")}
    if config.lambda_selfsup <= 0:
        return lambda gen: _random_crops(pairs, config.crop, config.batch_size, gen)
    d = config.data
    assert d.real_root is not None
    real = bus_bra_frames(d.real_root, d.real_folds, d.image_size, out / "data")

    def sample(gen: torch.Generator) -> dict[str, torch.Tensor]:
        batch = _random_crops(pairs, config.crop, config.batch_size, gen)
        batch["real"] = _random_crops({"x": real}, config.crop, config.batch_size, gen)["x"]
        return batch

    return sample


def bus_bra_frames(root: str | Path, folds: tuple[int, ...], size: int, work: Path) -> torch.Tensor:
    """BUS-BRA frames of the official ``folds``, resized to ``size`` x ``size``: ``(N, 1, size, size)`` in [0, 1]."""
    import cv2

    from usher2.io.importers import import_bus_bra

    manifest = import_bus_bra(root, Path(work) / "bus-bra.csv")
    rows = manifest[manifest["fold"].isin(folds)]
    if rows.empty:
        raise ValueError(f"no BUS-BRA frames in folds {folds} under {root}")
    xs = [cv2.resize(_read_grey(Path(p)), (size, size), interpolation=cv2.INTER_AREA) for p in rows["image_path"]]
    return torch.from_numpy(np.stack(xs)[:, None])


def _load_truth_data(config: EnhancerTrainConfig, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """The issue-23 data path: frames with their reflectivity, randomised settings, any target."""
    from usher2.simulate import SimulationConfig
    from usher2.simulate.randomise import randomised_configs

    d = config.data
    if config.model != "pix2pix" or d.source != "simulated":
        raise ValueError(
            "data.settings > 0 or data.target other than 'clean' needs model 'pix2pix' and data.source "
            f"'simulated', got model {config.model!r}, data.source {d.source!r}"
        )
    cache = Path(d.cache) if d.cache else out / "data"
    size = d.image_size
    if d.settings:
        train_cfg = randomised_configs(d.settings, d.train_seed, size)
        val_cfg = randomised_configs(min(d.settings, 8), d.val_seed, size)
    else:
        train_cfg = val_cfg = [SimulationConfig(image_size=(size, size))]
    log(f"preparing data in {cache}: {d.n_train} training frames over {len(train_cfg)} setting(s), target {d.target}")
    kw = {"target": d.target, "blend": d.blend}
    val = truth_pairs(cache, d.n_val, d.val_seed, val_cfg, name="val", **kw)
    train = truth_pairs(cache, d.n_train, d.train_seed, train_cfg, name="train", **kw)
    return {"val": val, "sample": _paired_sampler(config, train, out)}


def _unpaired_domains(
    config: EnhancerTrainConfig, out: Path
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """CycleGAN domains: A = degraded frames, B = high-quality frames (each with lesion masks)."""
    d = config.data
    if d.source == "simulated":
        pairs = simulated_pairs(out / "data" / "train", d.n_train, d.train_seed, d.image_size)
        half = pairs["x"].shape[0] // 2  # disjoint halves: no pair is ever seen together
        return (
            {"x": pairs["x"][:half], "mask": pairs["mask"][:half]},
            {"x": pairs["y"][half:], "mask": pairs["mask"][half:]},
        )
    import cv2
    import pandas as pd

    from usher2.io.importers import import_bus_bra

    manifest = import_bus_bra(d.root, out / "data" / "bus-bra.csv")
    if not d.target_devices:
        raise ValueError("data.target_devices must list the BUS-BRA devices of the high-quality domain")
    unknown = sorted(set(d.target_devices) - set(manifest["device"]))
    if unknown:
        raise ValueError(
            f"data.target_devices {unknown} are not BUS-BRA devices; known: {sorted(set(manifest['device']))}"
        )
    size = d.image_size

    def load(rows: pd.DataFrame) -> dict[str, torch.Tensor]:
        xs, ms = [], []
        for _, row in rows.iterrows():
            img = _read_grey(Path(row["image_path"]))
            mask = _read_grey(Path(row["mask_path"]))
            xs.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))
            ms.append((cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST) > 0.5).astype(np.float32))
        return {"x": torch.from_numpy(np.stack(xs)[:, None]), "mask": torch.from_numpy(np.stack(ms)[:, None])}

    # Only the official training folds: fold 1 is held out for evaluation, by patient.
    train = manifest[manifest["fold"] != 1]
    is_b = train["device"].isin(d.target_devices)
    return load(train[~is_b]), load(train[is_b])


def _build(config: EnhancerTrainConfig, device: torch.device) -> dict[str, Any]:
    if config.model == "pix2pix":
        g = UNetGenerator(config.generator).to(device)
        d = PatchDiscriminator(in_channels=2, base_channels=config.disc_channels, n_layers=config.disc_layers).to(
            device
        )
        modules = {"g": g, "d": d}
        return {"modules": modules, "g_params": list(g.parameters()), "d_params": list(d.parameters())}
    extra = 1 if config.mask_conditioned else 0
    g, f = UNetGenerator(config.generator).to(device), UNetGenerator(config.generator).to(device)
    kw = {"base_channels": config.disc_channels, "n_layers": config.disc_layers}
    d_a = PatchDiscriminator(in_channels=1 + extra, **kw).to(device)
    d_b = PatchDiscriminator(in_channels=1 + extra, **kw).to(device)
    modules = {"g": g, "f": f, "d_a": d_a, "d_b": d_b}
    return {
        "modules": modules,
        "g_params": list(g.parameters()) + list(f.parameters()),
        "d_params": list(d_a.parameters()) + list(d_b.parameters()),
    }


def _pix2pix_step(models, batch, opt_g, opt_d, config: EnhancerTrainConfig) -> torch.Tensor:
    """One discriminator and one generator update; returns ``[loss_g, loss_d]`` (detached, fp32)."""
    g, d = models["g"], models["d"]
    x, y = batch["x"], batch["y"]
    fake = g(x)
    opt_d.zero_grad(set_to_none=True)
    loss_d = 0.5 * (_lsgan(d(torch.cat([x, y], 1)), True) + _lsgan(d(torch.cat([x, fake.detach()], 1)), False))
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    loss_g = (
        config.lambda_adv * _lsgan(d(torch.cat([x, fake], 1)), True)
        + config.lambda_l1 * F.l1_loss(fake, y)
        + config.lambda_ssim * ssim_loss(fake.float(), y.float())
    )
    if config.lambda_selfsup > 0:
        loss_g = loss_g + config.lambda_selfsup * neighbor2neighbor_loss(g, batch["real"])
    loss_g.backward()
    opt_g.step()
    return torch.stack([loss_g.detach().float(), loss_d.detach().float()])


def _cyclegan_step(models, batch, opt_g, opt_d, config: EnhancerTrainConfig) -> torch.Tensor:
    """One update of both discriminators and both generators; returns ``[loss_g, loss_d]``."""
    g, f, d_a, d_b = models["g"], models["f"], models["d_a"], models["d_b"]
    a, b = batch["a"], batch["b"]

    def cond(img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.cat([img, mask], 1) if config.mask_conditioned else img

    fake_b, fake_a = g(a), f(b)
    opt_d.zero_grad(set_to_none=True)
    loss_d = 0.5 * (
        _lsgan(d_b(cond(b, batch["b_mask"])), True)
        + _lsgan(d_b(cond(fake_b.detach(), batch["a_mask"])), False)
        + _lsgan(d_a(cond(a, batch["a_mask"])), True)
        + _lsgan(d_a(cond(fake_a.detach(), batch["b_mask"])), False)
    )
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    loss_g = (
        config.lambda_adv
        * (_lsgan(d_b(cond(fake_b, batch["a_mask"])), True) + _lsgan(d_a(cond(fake_a, batch["b_mask"])), True))
        + config.lambda_cycle * (F.l1_loss(f(fake_b), a) + F.l1_loss(g(fake_a), b))
        + config.lambda_identity * (F.l1_loss(g(b), b) + F.l1_loss(f(a), a))
    )
    loss_g.backward()
    opt_g.step()
    return torch.stack([loss_g.detach().float(), loss_d.detach().float()])


def write_model_card(weights: str | Path, *, extra: str = "") -> Path:
    """Write ``<weights>.md`` from the metadata that :func:`train_enhancer` stores in the weights.

    The card gives the training data, the command that reproduces the file, steps, wall time and
    the validation metrics; ``extra`` is appended (e.g. benchmark tables measured afterwards).
    """
    weights = Path(weights)
    meta = scaffold.read_weights_metadata(weights)
    cfg = json.loads(meta["train_config"])
    val = json.loads(meta.get("val_metrics", "{}"))
    data = cfg["data"]
    settings = int(data.get("settings", 0))
    source = _card_source(cfg)
    val_sets = (
        f"`randomised_configs({min(settings, 8)}, {data['val_seed']})` cycled"
        if settings
        else "the default degraded setting"
    )
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    g = cfg["generator"]
    lines = [
        f"# {weights.name}",
        "",
        f"- **Model:** {cfg['model']} generator, U-Net {g['base_channels']} base channels, depth {g['depth']}, "
        "fp16 safetensors (architecture in the file's metadata).",
        f"- **Training data:** {source}.",
        f"- **Validation data:** {data['n_val']} held-out simulated patients (cohort seed {data['val_seed']}), "
        f"full {data['image_size']} x {data['image_size']} frames ({val_sets}) against their clean renderings.",
        f"- **Command:** `{meta.get('command') or 'usher2 train enhancer --config CONFIG'}` "
        f"(config SHA-256 `{meta['train_config_sha256'][:16]}`; shipped configs are in `train/configs/`).",
        f"- **Steps:** {meta['steps']} ({cfg['batch_size']} crops of {cfg['crop']} px per step), "
        f"best epoch {meta['best_epoch']}, wall time {float(meta['wall_seconds']) / 60:.1f} min, "
        f"torch {meta['torch']}.",
        f"- **Validation (best epoch):** PSNR {val.get('psnr', float('nan')):.2f} dB, "
        f"SSIM {val.get('ssim', float('nan')):.3f}, lesion gCNR {val.get('gcnr', float('nan')):.3f}"
        + (f", fidelity r {val['fidelity_r']:.3f}" if "fidelity_r" in val else "")
        + (
            f"; against the training target PSNR {val['psnr_target']:.2f} dB, SSIM {val['ssim_target']:.3f}"
            if "psnr_target" in val
            else ""
        )
        + ".",
        f"- **File SHA-256:** `{sha}`.",
        "",
        "## Training config",
        "",
        "```json",
        json.dumps(cfg, indent=2, sort_keys=True),
        "```",
    ]
    if extra:
        lines += ["", extra.rstrip()]
    card = weights.with_suffix(".md")
    atomic_write_text(card, "\n".join(lines) + "\n")
    return card


def _card_source(cfg: dict[str, Any]) -> str:
    """The model card's training-data sentence: frames, settings and target, plus warm start and extra terms."""
    data = cfg["data"]
    settings, target = int(data.get("settings", 0)), data.get("target", "clean")
    target_text = {
        "clean": "clean rendering",
        "echogenicity": "true echogenicity map (reflectivity in dB, shown like the clean frame: 60 dB, "
        "white 10 dB above gland)",
        "blend": f"blend {1 - float(data.get('blend', 0.5)):.2f} x clean rendering + "
        f"{float(data.get('blend', 0.5)):.2f} x true echogenicity map (60 dB display)",
    }[target]
    if settings:
        source = (
            f"{data['n_train']} simulated patients (cohort seed {data['train_seed']}, {data['image_size']} x "
            f"{data['image_size']} px), inputs rendered with {settings} degraded settings drawn from "
            f"usher2.simulate.randomise.TRAINING_RANGES (`randomised_configs({settings}, {data['train_seed']})`: "
            "centre frequency, bandwidth, beam width, focus, depth of field, compounding, noise, clutter, "
            f"dynamic range, gain and TGC errors; patient i uses setting i mod {settings}) -> {target_text}"
        )
    elif cfg["model"] == "pix2pix" or data["source"] == "simulated":
        source = (
            f"{data['n_train']} simulated patients (usher2.simulate, cohort seed {data['train_seed']}, "
            f"{data['image_size']} x {data['image_size']} px): degraded rendering -> {target_text}"
        )
    else:
        source = (
            f"BUS-BRA official folds 2-5 ({data['root']}); domain A = other devices, "
            f"domain B = {', '.join(data['target_devices'])}"
        )
    if float(cfg.get("lambda_selfsup", 0.0)) > 0:
        source += (
            f"; plus a Neighbor2Neighbor self-supervised term (weight {cfg['lambda_selfsup']}) on BUS-BRA "
            f"official folds {', '.join(map(str, data.get('real_folds', ())))} ({data.get('real_root')})"
        )
    if cfg.get("init"):
        source += f"; generator warm-started from `{cfg['init']}`"
    return source
