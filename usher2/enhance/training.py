"""Training of the learned enhancers: pix2pix on simulated pairs, CycleGAN on unpaired frames.

One config file drives a run (:class:`EnhancerTrainConfig`, YAML or JSON). The run is seeded,
checkpoints every epoch (atomically) and resumes after a kill, shows a progress bar and the
validation metrics every epoch, stops early when validation stops improving, uses bf16
autocast on CUDA, and runs under ``torchrun`` (DDP) with no code change. The best generator is
exported as fp16 safetensors with its metrics and the config hash in the metadata. With
``track`` the run is also logged to MLflow (:mod:`usher2.tracking`).

Losses (pix2pix): LSGAN adversarial on a conditional PatchGAN ``D(x, G(x))`` plus
``lambda_l1 * |G(x) - y|`` plus ``lambda_ssim * (1 - SSIM(G(x), y))`` (no downloaded
perceptual network). CycleGAN: LSGAN on both domains, cycle consistency (L1) and identity
loss; with ``mask_conditioned`` the B-domain discriminator also sees the lesion mask, so a
lesion can be neither invented nor erased without the discriminator noticing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from usher2.enhance.networks import GeneratorConfig, PatchDiscriminator, UNetGenerator, ssim_loss
from usher2.io.atomic import atomic_write_text
from usher2.io.errors import InputError
from usher2.tracking import Tracker, track_run
from usher2.training import dist_info, load_config_file, save_checkpoint

__all__ = [
    "DataConfig",
    "EnhancerTrainConfig",
    "TrainResult",
    "load_train_config",
    "simulated_pairs",
    "train_enhancer",
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
    """

    source: str = "simulated"
    n_train: int = 600
    n_val: int = 64
    train_seed: int = 1000
    val_seed: int = 2000
    image_size: int = 256
    root: str | None = None
    target_devices: tuple[str, ...] = ()

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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """SHA-256 of the settings a checkpoint must share to be resumed.

        Leaves out where files go (``out``, ``export``), the ``device``, and when to stop
        (``epochs``, ``patience``), so a finished run can be extended. The full config is stored
        with the exported weights.
        """
        skip = ("out", "export", "device", "epochs", "patience")
        d = {k: v for k, v in self.to_dict().items() if k not in skip}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def load_train_config(path: str | Path, **overrides: Any) -> EnhancerTrainConfig:
    """Read an :class:`EnhancerTrainConfig` from YAML or JSON; unknown keys are errors."""
    return load_config_file(
        path,
        EnhancerTrainConfig,
        nested={"generator": GeneratorConfig, "data": DataConfig},
        tuples={"data": ("target_devices",)},
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
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise InputError(path, "a readable PNG", "a file OpenCV cannot decode")
    return img.astype(np.float32) / 255.0


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
    """Full-frame PSNR / SSIM against the clean target, and lesion-vs-ring gCNR, on the val pairs."""
    from usher2.evaluate.image_quality import gcnr, psnr, region_ring, ssim

    generator.eval()
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "gcnr": []}
    with torch.inference_mode():
        for i in range(0, val["x"].shape[0], 16):
            pred = generator(val["x"][i : i + 16].to(device)).float().cpu().numpy()
            for j, p in enumerate(pred):
                y = val["y"][i + j, 0].numpy()
                m = val["mask"][i + j, 0].numpy() > 0.5
                scores["psnr"].append(psnr(p[0], y, data_range=1.0))
                scores["ssim"].append(ssim(p[0], y, data_range=1.0))
                scores["gcnr"].append(gcnr(p[0], m, region_ring(m)))
    generator.train()
    return {k: float(np.mean(v)) for k, v in scores.items()}


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
    rank = dist_info()[1]
    with track_run(
        track if rank == 0 else None,
        experiment="usher2-enhancer",
        run_name=Path(config.out).name,
        params=config.to_dict(),
        tags={"usher2.command": command or "", "usher2.out": config.out, "config_sha256": config.digest()},
    ) as tracker:
        return _train(config, tracker, log=log, progress=progress, command=command)


def _log_epoch(tracker: Tracker, epoch: int, metrics: dict[str, float], losses: dict[str, float] | None) -> None:
    val = {f"val_{k}": v for k, v in metrics.items() if k != "epoch"}
    tracker.log_metrics({**val, **(losses or {})}, step=epoch)


def _train(
    config: EnhancerTrainConfig,
    tracker: Tracker,
    *,
    log: Callable[[str], None],
    progress: Callable[[int, int], None] | None,
    command: str | None,
) -> TrainResult:
    from usher2.enhance.gan import save_generator

    world, rank, local_rank = dist_info()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device(config.device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"))
    use_amp = config.amp and device.type == "cuda"
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)

    data = _load_data(config, out, log)
    nets = _build(config, device)
    opt_g = torch.optim.Adam(nets["g_params"], lr=config.lr, betas=(config.beta1, 0.999))
    opt_d = torch.optim.Adam(nets["d_params"], lr=config.lr, betas=(config.beta1, 0.999))
    crop_gen = torch.Generator().manual_seed(config.seed * 1000 + rank)

    ckpt_path = out / "checkpoint.pt"
    start_epoch, best, best_epoch, history, wall_before = 0, -np.inf, -1, [], 0.0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        if state["digest"] != config.digest():
            raise InputError(
                ckpt_path,
                f"a checkpoint of this config (digest {config.digest()[:12]})",
                f"one of another config (digest {state['digest'][:12]})",
                fix="use a new --out folder or delete the old run",
            )
        for k, module in nets["modules"].items():
            module.load_state_dict(state["modules"][k])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        crop_gen.set_state(state["crop_rng"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best, best_epoch = state["epoch"] + 1, state["best"], state["best_epoch"]
        history, wall_before = state["history"], state["wall_seconds"]
        log(f"resumed from {ckpt_path} at epoch {start_epoch}")
        tracker.set_tags({"resumed_at_epoch": start_epoch})
        for past in history:  # so that this run's curves start at epoch 0 (losses were not checkpointed)
            _log_epoch(tracker, int(past["epoch"]), past, None)

    models = nets["modules"]
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        models = {k: DDP(m, device_ids=[device.index] if device.type == "cuda" else None) for k, m in models.items()}

    step_fn = _pix2pix_step if config.model == "pix2pix" else _cyclegan_step
    total = config.epochs * config.steps_per_epoch
    t0 = time.perf_counter()
    stale = len(history) - 1 - best_epoch if best_epoch >= 0 else 0
    for epoch in range(start_epoch, config.epochs):
        if stale >= config.patience:
            log(f"early stop: no validation gain in {config.patience} epochs (best epoch {best_epoch})")
            break
        loss_sum = torch.zeros(2, device=device)  # summed on the device: no sync per step
        for step in range(config.steps_per_epoch):
            batch = data["sample"](crop_gen)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss_sum += step_fn(models, batch, opt_g, opt_d, config)
            if progress is not None and rank == 0:
                progress(epoch * config.steps_per_epoch + step + 1, total)
        if rank == 0:
            metrics = _validate(nets["modules"]["g"], data["val"], device)
            metrics["epoch"] = float(epoch)
            history.append(metrics)
            score = metrics["psnr"] + 10.0 * metrics["ssim"]  # 0.1 SSIM counts as much as 1 dB
            improved = score > best
            if improved:
                best, best_epoch, stale = score, epoch, 0
                save_generator(nets["modules"]["g"], out / "best_generator.safetensors")
            else:
                stale += 1
            log(
                f"epoch {epoch:3d}  val PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.3f}  "
                f"lesion gCNR {metrics['gcnr']:.3f}{'  *best' if improved else ''}"
            )
            loss_g, loss_d = (loss_sum / config.steps_per_epoch).tolist()
            _log_epoch(tracker, epoch, metrics, {"train_loss_g": loss_g, "train_loss_d": loss_d})
            save_checkpoint(
                ckpt_path,
                {
                    "digest": config.digest(),
                    "modules": {k: m.state_dict() for k, m in nets["modules"].items()},
                    "opt_g": opt_g.state_dict(),
                    "opt_d": opt_d.state_dict(),
                    "crop_rng": crop_gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "epoch": epoch,
                    "best": best,
                    "best_epoch": best_epoch,
                    "history": history,
                    "wall_seconds": wall_before + time.perf_counter() - t0,
                },
            )
        if world > 1:
            torch.distributed.barrier()

    wall = wall_before + time.perf_counter() - t0
    steps = len(history) * config.steps_per_epoch
    best_metrics = {k: v for k, v in history[best_epoch].items() if k != "epoch"} if history else {}
    export = Path(config.export) if config.export else out / f"enhancer_{config.model}.safetensors"
    if rank == 0:
        from usher2.enhance.gan import load_generator

        generator, _ = load_generator(out / "best_generator.safetensors")
        meta = {
            "model": config.model,
            "train_config": json.dumps(config.to_dict(), sort_keys=True),
            "train_config_sha256": config.digest(),
            "best_epoch": str(best_epoch),
            "val_metrics": json.dumps(best_metrics),
            "steps": str(steps),
            "wall_seconds": f"{wall:.1f}",
            "torch": torch.__version__,
            "command": command or "",
        }
        save_generator(generator, export, metadata=meta)
        atomic_write_text(
            out / "history.json",
            json.dumps({"history": history, "best_epoch": best_epoch, "wall_seconds": wall}, indent=2),
        )
        card = write_model_card(export)
        log(f"best epoch {best_epoch}: {best_metrics}; exported {export}")
        tracker.log_metrics(
            {
                **{f"best_val_{k}": v for k, v in best_metrics.items()},
                "best_epoch": best_epoch,
                "steps": steps,
                "wall_seconds": wall,
            }
        )
        tracker.set_tags({"weights": str(export)})
        tracker.log_dict(config.to_dict(), "config.json")
        tracker.log_artifact(card)
        tracker.log_artifact(out / "history.json")
    return TrainResult(best_epoch, best_metrics, history, export, wall, steps)


def _load_data(config: EnhancerTrainConfig, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    d = config.data
    log(f"preparing data in {out / 'data'}")
    val = simulated_pairs(out / "data" / "val", d.n_val, d.val_seed, d.image_size)
    if config.model == "pix2pix":
        if d.source != "simulated":
            raise ValueError("pix2pix needs paired frames: set data.source to 'simulated'")
        train = simulated_pairs(out / "data" / "train", d.n_train, d.train_seed, d.image_size)
        return {"val": val, "sample": lambda gen: _random_crops(train, config.crop, config.batch_size, gen)}
    dom_a, dom_b = _unpaired_domains(config, out)

    def sample(gen: torch.Generator) -> dict[str, torch.Tensor]:
        a = _random_crops(dom_a, config.crop, config.batch_size, gen)
        b = _random_crops(dom_b, config.crop, config.batch_size, gen)
        return {"a": a["x"], "a_mask": a["mask"], "b": b["x"], "b_mask": b["mask"]}

    return {"val": val, "sample": sample}


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
    from safetensors import safe_open

    weights = Path(weights)
    with safe_open(str(weights), framework="pt") as f:
        meta = dict(f.metadata() or {})
    cfg = json.loads(meta["train_config"])
    val = json.loads(meta.get("val_metrics", "{}"))
    data = cfg["data"]
    if cfg["model"] == "pix2pix" or data["source"] == "simulated":
        source = (
            f"{data['n_train']} simulated patients (usher2.simulate, cohort seed {data['train_seed']}, "
            f"{data['image_size']} x {data['image_size']} px): degraded rendering -> clean rendering"
        )
    else:
        source = (
            f"BUS-BRA official folds 2-5 ({data['root']}); domain A = other devices, "
            f"domain B = {', '.join(data['target_devices'])}"
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
        f"full {data['image_size']} x {data['image_size']} frames against their clean renderings.",
        f"- **Command:** `{meta.get('command') or 'usher2 train enhancer --config CONFIG'}` "
        f"(config SHA-256 `{meta['train_config_sha256'][:16]}`; shipped configs are in `train/configs/`).",
        f"- **Steps:** {meta['steps']} ({cfg['batch_size']} crops of {cfg['crop']} px per step), "
        f"best epoch {meta['best_epoch']}, wall time {float(meta['wall_seconds']) / 60:.1f} min, "
        f"torch {meta['torch']}.",
        f"- **Validation (best epoch):** PSNR {val.get('psnr', float('nan')):.2f} dB, "
        f"SSIM {val.get('ssim', float('nan')):.3f}, lesion gCNR {val.get('gcnr', float('nan')):.3f}.",
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
