"""Helpers shared by the training loops of the learned stages (enhancer, segmenter).

Config files, distributed-run discovery and atomic checkpoints live here once, so each stage's
loop only holds its own model, data and losses.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

import torch

from usher2.io.atomic import atomic_path
from usher2.io.errors import InputError

__all__ = ["dist_info", "load_config_file", "save_checkpoint"]

C = TypeVar("C")


def dist_info() -> tuple[int, int, int]:
    """``(world_size, rank, local_rank)`` from torchrun's environment; ``(1, 0, 0)`` without it.

    Example:
        >>> dist_info() if "WORLD_SIZE" not in os.environ else (1, 0, 0)
        (1, 0, 0)
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically.

    Checkpoints are internal training state, never shipped to users; read them back with
    ``torch.load(..., weights_only=True)``, which executes no code.
    """
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


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
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(p, f"a {what} config file (.yaml or .json)", "no such file")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(p, "valid YAML", f"a parse error ({exc})") from exc
    if not isinstance(raw, dict):
        raise InputError(p, "a mapping of settings", type(raw).__name__)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(p, f"settings among {sorted(known)}", f"unknown keys {unknown}")
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
