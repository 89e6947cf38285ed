"""The training scaffold shared by the learned stages (enhancer, segmenter, deep-feature backbone).

Config files, distributed-run set-up, the device, checkpoints (atomic writes, resume with a config
check), the epoch and step loops (progress, DDP barriers), the wall clock, the weights' provenance
metadata and the tracked run live here once, so each stage's trainer only holds its own model,
data, losses and reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from usher2.io.atomic import atomic_path
from usher2.io.config import check_keys, read_mapping
from usher2.io.errors import InputError
from usher2.tracking import Tracker, track_run

__all__ = [
    "WallClock",
    "config_metadata",
    "config_sha256",
    "dist_info",
    "epoch_range",
    "init_distributed",
    "load_checkpoint",
    "load_config_file",
    "log_outcome",
    "optimiser_step",
    "pick_device",
    "provenance",
    "read_grey",
    "read_weights_metadata",
    "restore_states",
    "save_checkpoint",
    "state_dicts",
    "step_range",
    "tracked_run",
    "wrap_ddp",
]

C = TypeVar("C")


def dist_info() -> tuple[int, int, int]:
    """``(world_size, rank, local_rank)`` from torchrun's environment; ``(1, 0, 0)`` without it.

    Example:
        >>> dist_info() if "WORLD_SIZE" not in os.environ else (1, 0, 0)
        (1, 0, 0)
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed() -> tuple[int, int, int]:
    """:func:`dist_info`, after starting the process group when torchrun runs more than one process.

    NCCL on CUDA machines, gloo elsewhere; a group already started is kept.
    """
    world, rank, local_rank = dist_info()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world, rank, local_rank


def pick_device(requested: str | None, local_rank: int | None = None) -> torch.device:
    """``requested`` when set, else CUDA when available (``cuda:<local_rank>`` when given), else the CPU.

    Example:
        >>> pick_device("cpu")
        device(type='cpu')
    """
    if local_rank is None:
        return torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    return torch.device(requested or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"))


def wrap_ddp(module: torch.nn.Module, device: torch.device, world: int) -> torch.nn.Module:
    """``module`` in DistributedDataParallel when ``world > 1`` (one process per device), else itself."""
    if world <= 1:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)


def config_sha256(settings: Mapping[str, Any]) -> str:
    """SHA-256 of settings as sorted-key JSON: the digest a checkpoint and the weights record.

    Example:
        >>> config_sha256({"b": 1, "a": 2}) == config_sha256({"a": 2, "b": 1})
        True
    """
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically.

    Checkpoints are internal training state, never shipped to users; read them back with
    ``torch.load(..., weights_only=True)``, which executes no code.
    """
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, device: torch.device, digest: str | None = None) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (tensors on ``device``), or None when there is none yet.

    Args:
        path: The checkpoint file.
        device: Where its tensors go.
        digest: The running config's digest; the checkpoint's ``digest`` must equal it.

    Raises:
        InputError: With ``digest``, the checkpoint is of another config.
    """
    if not path.exists():
        return None
    state = torch.load(path, map_location=device, weights_only=True)
    if digest is not None and state["digest"] != digest:
        raise InputError(
            path,
            f"a checkpoint of this config (digest {digest[:12]})",
            f"one of another config (digest {state['digest'][:12]})",
            fix="use a new --out folder or delete the old run",
        )
    return state


def state_dicts(objects: Mapping[str, Any]) -> dict[str, Any]:
    """``{name: obj.state_dict()}`` of modules, optimisers and schedulers, in order."""
    return {name: obj.state_dict() for name, obj in objects.items()}


def restore_states(state: Mapping[str, Any], objects: Mapping[str, Any]) -> None:
    """Load each object's state from ``state[name]`` (the inverse of :func:`state_dicts`), in order."""
    for name, obj in objects.items():
        obj.load_state_dict(state[name])


def optimiser_step(
    loss: torch.Tensor,
    opt: torch.optim.Optimizer,
    sched: Any,
    *,
    clip: tuple[torch.nn.Module, float] | None = None,
) -> float:
    """One update from ``loss``: zero the gradients, back-propagate, clip (``(module, max_norm)``), step both.

    Returns:
        The loss as a float (this syncs with the device).
    """
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(clip[0].parameters(), clip[1])
    opt.step()
    sched.step()
    return float(loss.detach())


class WallClock:
    """Training wall time: seconds spent before a resume plus the seconds since this clock started.

    Example:
        >>> WallClock(10.0)() >= 10.0
        True
    """

    def __init__(self, before: float = 0.0) -> None:
        self.before = before
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return self.before + time.perf_counter() - self.start


def epoch_range(start: int, epochs: int, world: int) -> Iterator[int]:
    """Epochs ``start..epochs-1``; under DDP every process waits for the others after each epoch.

    Example:
        >>> list(epoch_range(1, 3, 1))
        [1, 2]
    """
    for epoch in range(start, epochs):
        yield epoch
        if world > 1:
            torch.distributed.barrier()


def step_range(
    epoch: int, steps_per_epoch: int, total: int, progress: Callable[[int, int], None] | None, rank: int = 0
) -> Iterator[int]:
    """The steps ``0..steps_per_epoch-1`` of ``epoch``; after each, rank 0 reports ``progress(done, total)``.

    ``done`` counts the run's steps (``epoch * steps_per_epoch + step + 1``).

    Example:
        >>> done = []
        >>> list(step_range(1, 2, 4, lambda d, t: done.append((d, t))))
        [0, 1]
        >>> done
        [(3, 4), (4, 4)]
    """
    for step in range(steps_per_epoch):
        yield step
        if progress is not None and rank == 0:
            progress(epoch * steps_per_epoch + step + 1, total)


def load_config_file(
    path: str | Path,
    cls: type[C],
    *,
    nested: dict[str, type] | None = None,
    tuples: dict[str, tuple[str, ...]] | None = None,
    what: str = "training",
    **overrides: Any,
) -> C:
    """Read a frozen config dataclass from YAML or JSON; unknown keys and bad values are named errors.

    Args:
        path: The config file.
        cls: The dataclass to build.
        nested: Field name -> dataclass for fields given as mappings.
        tuples: Field name -> keys inside that nested mapping whose lists become tuples.
        what: Names the config in error messages ("a <what> config file").
        **overrides: Settings that replace the file's (``None`` values are ignored).

    Raises:
        InputError: Missing file, invalid YAML, not a mapping, unknown keys, or a value the
            dataclass rejects (its message names the field).

    Example:
        >>> import tempfile, pathlib
        >>> @dataclasses.dataclass(frozen=True)
        ... class Demo:
        ...     epochs: int = 1
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.yaml"
        >>> _ = p.write_text("epochs: 3")
        >>> load_config_file(p, Demo)
        Demo(epochs=3)
    """
    p = Path(path)
    raw = read_mapping(p, f"a {what} config file (.yaml or .json)")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    check_keys(p, raw, (f.name for f in dataclasses.fields(cls)), "settings")  # type: ignore[arg-type]
    try:
        for name, sub in (nested or {}).items():
            if isinstance(raw.get(name), dict):
                values = dict(raw[name])
                for key in (tuples or {}).get(name, ()):
                    if key in values and values[key] is not None:
                        values[key] = tuple(values[key])
                raw[name] = sub(**values)
        return cls(**raw)
    except (TypeError, ValueError) as exc:
        raise InputError(p, f"valid {what} settings", str(exc)) from exc


def config_metadata(config: Any) -> dict[str, str]:
    """The weights' ``train_config`` (sorted JSON) and ``train_config_sha256`` (the config's digest)."""
    return {
        "train_config": json.dumps(config.to_dict(), sort_keys=True),
        "train_config_sha256": config.digest(),
    }


def provenance(command: str | None) -> dict[str, str]:
    """The weights' ``torch`` version and the ``command`` that trained them (``""`` when unknown)."""
    return {"torch": torch.__version__, "command": command or ""}


def read_weights_metadata(weights: Path) -> dict[str, str]:
    """The string metadata of a safetensors file (what a model card is written from)."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        return dict(f.metadata() or {})


def read_grey(path: Any, expected: str = "a readable image") -> np.ndarray:
    """A grey uint8 image read with OpenCV.

    Raises:
        InputError: OpenCV cannot decode the file (``expected`` names what it should be).
    """
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise InputError(path, expected, "a file OpenCV cannot decode")
    return img


def tracked_run(
    track: str | None, experiment: str, config: Any, tags: Mapping[str, Any]
) -> contextlib.AbstractContextManager[Tracker]:
    """The training run's tracked MLflow run: named after ``config.out``, the config as parameters."""
    return track_run(track, experiment=experiment, run_name=Path(config.out).name, params=config.to_dict(), tags=tags)


def log_outcome(
    tracker: Tracker,
    config: Any,
    metrics: Mapping[str, float],
    *,
    weights: Path | None = None,
    artifacts: tuple[Path, ...] = (),
) -> None:
    """Track a finished run: its final metrics, the ``weights`` tag, the config and the artefacts, in that order."""
    tracker.log_metrics(metrics)
    if weights is not None:
        tracker.set_tags({"weights": str(weights)})
    tracker.log_dict(config.to_dict(), "config.json")
    for path in artifacts:
        tracker.log_artifact(path)
