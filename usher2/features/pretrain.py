"""Train usher2's ultrasound deep-feature backbone (``usresnet10t``) and write its model card.

A timm network learns from lesion ROI crops, cut exactly as :class:`~usher2.features.deep.DeepExtractor`
cuts them, with two supervised heads on one shared trunk:

* BUS-BRA pathology (benign 0 / malignant 1) on the training folds of the official
  patient-grouped partition; the held-out folds are never trained on;
* the simulated HER2 label on frames from ``usher2.simulate`` (their own seed, never the seeds
  of the demo or the tests' cohorts).

Only the trunk is exported (the heads are dropped); the extractor reads its pooled pre-logit
features. Metrics reported in the card are the last epoch's, on held-out patients (no model
selection on them). A killed run resumes from its last epoch checkpoint. With ``track`` the run is
also logged to MLflow (:mod:`usher2.tracking`).

Run ``usher2 train backbone --config train/configs/deep_usresnet10t_cpu.yaml``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import usher2.training as scaffold
from usher2.features.deep import roi_crop
from usher2.io.atomic import atomic_write_text
from usher2.io.errors import InputError
from usher2.tracking import Tracker

__all__ = ["BackboneTrainConfig", "load_backbone_config", "train_backbone", "write_backbone_card"]

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class BackboneTrainConfig:
    """One backbone training run (every field is stored in the exported weights)."""

    out: str = "runs/deep-usresnet10t"
    export: str = "weights/deep_usresnet10t.safetensors"
    arch: str = "resnet10t"
    input_size: int = 128
    bus_bra: str | None = "../shared/data/bus-bra"
    train_folds: tuple[int, ...] = (1, 2, 3, 4)
    val_folds: tuple[int, ...] = (5,)
    simulated: int = 600
    simulated_seed: int = 6000
    val_simulated: int = 150
    val_simulated_seed: int = 6100
    simulated_size: int = 256
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.05
    weight_decay: float = 5e-4
    margin: float = 0.1
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        if self.input_size < 32 or self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError("input_size >= 32, epochs >= 1, batch_size >= 2 and lr > 0 are required")
        if set(self.train_folds) & set(self.val_folds):
            raise ValueError(f"train_folds {self.train_folds} and val_folds {self.val_folds} overlap")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        return scaffold.config_sha256(self.to_dict())


def load_backbone_config(path: str | Path, **overrides: Any) -> BackboneTrainConfig:
    """Read a :class:`BackboneTrainConfig` from YAML/JSON (unknown keys are named errors)."""
    cfg = scaffold.load_config_file(path, BackboneTrainConfig, what="backbone training", **overrides)
    return dataclasses.replace(cfg, train_folds=tuple(cfg.train_folds), val_folds=tuple(cfg.val_folds))


# ------------------------------------------------------------------------------ data
@dataclass
class _Set:
    pixels: list[np.ndarray]  # float32 (H, W) in [0, 1]
    masks: list[np.ndarray]  # bool
    labels: np.ndarray  # int64
    task: np.ndarray  # 0 = BUS-BRA pathology, 1 = simulated HER2
    patients: np.ndarray


def _bus_bra(root: str, folds: tuple[int, ...], out: Path) -> _Set:
    from usher2.io.importers import import_bus_bra

    df = import_bus_bra(root, out / "bus_bra.csv")
    df = df[df["fold"].isin(folds)].reset_index(drop=True)
    pixels = [scaffold.read_grey(p).astype(np.float32) / 255.0 for p in df["image_path"]]
    masks = [scaffold.read_grey(p) > 127 for p in df["mask_path"]]
    n = len(df)
    return _Set(pixels, masks, df["label"].to_numpy(np.int64), np.zeros(n, np.int64), df["patient_id"].to_numpy(str))


def _simulated(n: int, seed: int, size: int, out: Path) -> _Set:
    from usher2.simulate import SimulationConfig, simulate_cohort

    folder = out / f"simulated_{seed}_{n}_{size}"
    df = simulate_cohort(n, seed, folder, config=SimulationConfig(image_size=(size, size)))
    pixels = [scaffold.read_grey(folder / p).astype(np.float32) / 255.0 for p in df["image"]]
    masks = [scaffold.read_grey(folder / p) > 127 for p in df["mask"]]
    return _Set(
        pixels, masks, df["label"].to_numpy(np.int64), np.ones(len(df), np.int64), df["patient_id"].to_numpy(str)
    )


def _join(a: _Set | None, b: _Set | None) -> _Set:
    parts = [s for s in (a, b) if s is not None]
    if not parts:
        raise ValueError("no frames: set bus_bra or simulated")
    return _Set(
        [p for s in parts for p in s.pixels],
        [m for s in parts for m in s.masks],
        np.concatenate([s.labels for s in parts]),
        np.concatenate([s.task for s in parts]),
        np.concatenate([s.patients for s in parts]),
    )


def _batch(data: _Set, idx: np.ndarray, cfg: BackboneTrainConfig, rng: np.random.Generator | None) -> torch.Tensor:
    """Crops as the extractor cuts them; with ``rng``: random margin, flip, gamma and contrast."""
    size = (cfg.input_size, cfg.input_size)
    crops = []
    for i in idx:
        margin = cfg.margin if rng is None else float(rng.uniform(0.02, 0.35))
        c = roi_crop(data.pixels[i], data.masks[i], size, margin=margin)
        if rng is not None:
            if rng.random() < 0.5:
                c = c[:, ::-1]
            c = np.clip(c, 0, 1) ** float(np.exp(rng.normal(0, 0.2)))
            c = np.clip((c - 0.5) * rng.uniform(0.8, 1.2) + 0.5 + rng.normal(0, 0.05), 0, 1)
        crops.append(c)
    x = np.stack(crops).astype(np.float32)[:, None].repeat(3, axis=1)
    mean, std = np.asarray(MEAN, np.float32)[None, :, None, None], np.asarray(STD, np.float32)[None, :, None, None]
    return torch.from_numpy(np.ascontiguousarray((x - mean) / std))


class _Net(torch.nn.Module):
    def __init__(self, arch: str) -> None:
        import timm

        super().__init__()
        self.trunk = timm.create_model(arch, pretrained=False, num_classes=0)
        self.heads = torch.nn.Linear(self.trunk.num_features, 4)  # [pathology 0/1, HER2 0/1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.trunk(x))


def _loss(logits: torch.Tensor, labels: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
    two = logits.view(-1, 2, 2)[torch.arange(len(task)), task]  # the sample's own task head
    return torch.nn.functional.cross_entropy(two, labels)


@torch.inference_mode()
def _scores(net: _Net, data: _Set, cfg: BackboneTrainConfig, device: torch.device) -> np.ndarray:
    net.eval()
    out = []
    for i in range(0, len(data.labels), 64):
        idx = np.arange(i, min(i + 64, len(data.labels)))
        logits = net(_batch(data, idx, cfg, None).to(device)).view(-1, 2, 2).float().cpu()
        two = logits[torch.arange(len(idx)), torch.from_numpy(data.task[idx])]
        out.append(torch.softmax(two, 1)[:, 1].numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _auc_ci(y: np.ndarray, s: np.ndarray, groups: np.ndarray, seed: int = 0, n_boot: int = 1000) -> dict[str, float]:
    """AUC with a patient-cluster percentile bootstrap 95% CI."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(len(uniq))]
    boots = []
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        if len(np.unique(y[idx])) == 2:
            boots.append(roc_auc_score(y[idx], s[idx]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"auc": float(roc_auc_score(y, s)), "ci_low": float(lo), "ci_high": float(hi), "n": len(y)}


def train_backbone(
    config: BackboneTrainConfig,
    *,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
    command: str | None = None,
    track: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate on held-out patients, export the trunk with metadata and write the card.

    Args:
        config: The run.
        log: Receives one line per epoch and per event.
        progress: ``progress(step, total_steps)`` after every optimisation step.
        command: The command line that started the run, recorded in the weights and model card.
        track: MLflow tracking URI (e.g. ``"file:./mlruns"``); None: no tracking. One run in the
            ``usher2-backbone`` experiment: the config as parameters, per epoch (``step`` = epoch,
            from 0) ``train_loss``, ``lr`` and ``epoch_seconds``, the held-out metrics
            (``simulated_her2.auc``, ``.ci_low``, ``.ci_high``, ``.n``; the same for
            ``bus_bra_pathology``), and the config, model card and ``metrics.json`` as artefacts.
            See :mod:`usher2.tracking`.

    Returns:
        The metrics dict stored in the weights (held-out AUCs with CIs, epochs, wall time).
    """
    tags = {"usher2.command": command or "", "usher2.out": config.out, "config_sha256": config.digest()}
    with scaffold.tracked_run(track, "usher2-backbone", config, tags) as tracker:
        return _train(config, tracker, log=log, progress=progress, command=command)


def _train(
    config: BackboneTrainConfig,
    tracker: Tracker,
    *,
    log: Callable[[str], None],
    progress: Callable[[int, int], None] | None,
    command: str | None,
) -> dict[str, Any]:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    data_dir.mkdir(exist_ok=True)
    device = scaffold.pick_device(config.device)
    train = _training_set(config, data_dir, log)

    torch.manual_seed(config.seed)
    net = _Net(config.arch).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True)
    steps_per_epoch = len(train.labels) // config.batch_size
    total = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total, pct_start=0.15)
    trainables = {"net": net, "opt": opt, "sched": sched}
    ckpt = out / "checkpoint.pt"
    start, wall = _resume(config, ckpt, trainables, device, tracker, log)
    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        losses = _train_epoch(config, train, net, opt, sched, epoch, total, device, progress)
        seconds = time.perf_counter() - t0
        wall += seconds
        scaffold.save_checkpoint(
            ckpt,
            {**scaffold.state_dicts(trainables), "epoch": epoch + 1, "wall": wall, "config_sha256": config.digest()},
        )
        log(f"epoch {epoch + 1}/{config.epochs}: loss {np.mean(losses):.4f}, {wall / 60:.1f} min")
        lr = sched.get_last_lr()[0]
        tracker.log_metrics({"train_loss": float(np.mean(losses)), "lr": lr, "epoch_seconds": seconds}, step=epoch)

    metrics = _evaluate(config, net, data_dir, device, total, wall, log)
    _export(config, net, metrics, out, tracker, log=log, command=command)
    return metrics


def _training_set(config: BackboneTrainConfig, data_dir: Path, log: Callable[[str], None]) -> _Set:
    """The BUS-BRA training folds and the simulated training patients, as configured."""
    bus = _bus_bra(config.bus_bra, config.train_folds, data_dir) if config.bus_bra and config.train_folds else None
    sim = (
        _simulated(config.simulated, config.simulated_seed, config.simulated_size, data_dir)
        if config.simulated
        else None
    )
    train = _join(bus, sim)
    log(
        f"training crops: {len(train.labels)} "
        f"({int((train.task == 0).sum())} BUS-BRA, {int(train.task.sum())} simulated)"
    )
    return train


def _resume(
    config: BackboneTrainConfig,
    ckpt: Path,
    trainables: dict[str, Any],
    device: torch.device,
    tracker: Tracker,
    log: Callable[[str], None],
) -> tuple[int, float]:
    """Restore the checkpoint when there is one: (epochs done, wall seconds so far)."""
    state = scaffold.load_checkpoint(ckpt, device)
    if state is None:
        return 0, 0.0
    if state["config_sha256"] != config.digest():
        raise InputError(ckpt, "a checkpoint of the same config", "one from another config", fix="use a new --out")
    scaffold.restore_states(state, trainables)
    start, wall = int(state["epoch"]), float(state["wall"])
    log(f"resumed after epoch {start}")
    tracker.set_tags({"resumed_at_epoch": start})
    return start, wall


def _train_epoch(
    config: BackboneTrainConfig,
    train: _Set,
    net: _Net,
    opt: torch.optim.Optimizer,
    sched: Any,
    epoch: int,
    total: int,
    device: torch.device,
    progress: Callable[[int, int], None] | None,
) -> list[float]:
    """One pass over the training crops in the epoch's seeded order; returns the steps' losses."""
    net.train()
    rng = np.random.default_rng([config.seed, epoch])
    order = rng.permutation(len(train.labels))
    losses = []
    steps_per_epoch = len(train.labels) // config.batch_size
    for s in scaffold.step_range(epoch, steps_per_epoch, total, progress or None):
        idx = order[s * config.batch_size : (s + 1) * config.batch_size]
        x = _batch(train, idx, config, rng).to(device)
        loss = _loss(net(x), torch.from_numpy(train.labels[idx]).to(device), torch.from_numpy(train.task[idx]))
        losses.append(scaffold.optimiser_step(loss, opt, sched))
    return losses


def _evaluate(
    config: BackboneTrainConfig,
    net: _Net,
    data_dir: Path,
    device: torch.device,
    total: int,
    wall: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The run's steps and wall time, and the held-out AUCs (BUS-BRA pathology, simulated HER2) with CIs."""
    metrics: dict[str, Any] = {"epochs": config.epochs, "steps": total, "wall_seconds": round(wall, 1)}
    if config.bus_bra and config.val_folds:
        val = _bus_bra(config.bus_bra, config.val_folds, data_dir)
        metrics["bus_bra_pathology"] = _auc_ci(val.labels, _scores(net, val, config, device), val.patients)
    if config.val_simulated:
        val = _simulated(config.val_simulated, config.val_simulated_seed, config.simulated_size, data_dir)
        metrics["simulated_her2"] = _auc_ci(val.labels, _scores(net, val, config, device), val.patients)
    log(f"held-out metrics: {json.dumps(metrics)}")
    return metrics


def _export(
    config: BackboneTrainConfig,
    net: _Net,
    metrics: dict[str, Any],
    out: Path,
    tracker: Tracker,
    *,
    log: Callable[[str], None],
    command: str | None,
) -> None:
    """Export the trunk with its provenance, write the card and ``metrics.json``, track the outcome."""
    import timm

    from usher2.weights import save_state

    data_config = {"input_size": [3, config.input_size, config.input_size], "mean": list(MEAN), "std": list(STD)}
    meta = {
        "arch": config.arch,
        "data_config": json.dumps(data_config),
        **scaffold.config_metadata(config),
        "metrics": json.dumps(metrics),
        "timm": timm.__version__,
        **scaffold.provenance(command),
    }
    export = Path(config.export)
    save_state(net.trunk, export, meta)
    card = write_backbone_card(export)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    log(f"exported {export}")
    summary: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):  # a held-out AUC with its CI and n
            summary.update({f"{key}.{stat}": x for stat, x in value.items()})
        else:
            summary[key] = value
    scaffold.log_outcome(tracker, config, summary, weights=export, artifacts=(card, out / "metrics.json"))


def write_backbone_card(weights: str | Path) -> Path:
    """Write ``<weights>.md`` from the weights' metadata."""
    w = Path(weights)
    meta = scaffold.read_weights_metadata(w)
    cfg, m = json.loads(meta["train_config"]), json.loads(meta["metrics"])
    dc = json.loads(meta["data_config"])

    def auc(key: str) -> str:
        v = m.get(key)
        return f"{v['auc']:.3f} (95% CI {v['ci_low']:.3f}-{v['ci_high']:.3f}, n={v['n']})" if v else "not evaluated"

    lines = [
        f"# {w.name}",
        "",
        f"- **Model:** timm `{meta['arch']}` trunk (random initialisation, no ImageNet weights), pooled pre-logit "
        f"features; input {dc['input_size'][1]}x{dc['input_size'][2]} grey ROI crop replicated to 3 channels, "
        f"normalised with mean {dc['mean'][0]} and std {dc['std'][0]}; fp16 safetensors. Used as "
        "`usher2 extract --backbone usresnet10t` (the default deep extractor).",
        "- **Training data:** "
        + (
            f"BUS-BRA folds {', '.join(map(str, cfg['train_folds']))} of the official patient-grouped partition "
            "(pathology benign/malignant) and "
            if cfg["bus_bra"] and cfg["train_folds"]
            else ""
        )
        + f"{cfg['simulated']} simulated patients "
        f"(usher2.simulate seed {cfg['simulated_seed']}, HER2 label), one head per task on a shared trunk; "
        f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, SGD one-cycle lr {cfg['lr']}, crops with random margin, "
        "flip, gamma and contrast.",
        f"- **Command:** `{meta.get('command') or 'usher2 train backbone --config ...'}` "
        f"(config SHA-256 `{meta['train_config_sha256'][:16]}`); {m['steps']} steps in "
        f"{m['wall_seconds'] / 60:.1f} min, timm {meta['timm']}, torch {meta['torch']}.",
        "",
        "## Held-out metrics (last epoch, no selection on these sets; patient-cluster bootstrap CIs)",
        "",
        f"- BUS-BRA pathology AUC, folds {', '.join(map(str, cfg['val_folds']))}: {auc('bus_bra_pathology')}",
        f"- Simulated HER2 AUC, seed {cfg['val_simulated_seed']}: {auc('simulated_her2')}",
        "",
        "## Use with care",
        "",
        f"- BUS-BRA folds {', '.join(map(str, cfg['train_folds']))} were trained on: features of those frames have "
        "seen their pathology label. Evaluate a BUS-BRA pathology model only on the held-out folds, or use another "
        "backbone.",
        f"- Simulated cohorts with seed {cfg['simulated_seed']} were trained on; the demo and the tests use "
        "other seeds.",
    ]
    path = w.with_suffix(".md")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
