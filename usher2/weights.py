"""Network weights on disk: fp16 safetensors with the architecture in the metadata.

Both learned stages (enhancer, segmenter) store weights this way, so a file is enough to
rebuild its network and preprocessing can't drift from the weights. Loading executes no code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from usher2.io.atomic import atomic_path
from usher2.io.errors import InputError

__all__ = ["default_weights_dir", "load_state", "save_state"]


def default_weights_dir() -> Path:
    """``$USHER2_WEIGHTS`` when set, else the repository's ``weights/`` folder."""
    env = os.environ.get("USHER2_WEIGHTS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "weights"


def save_state(module: torch.nn.Module, path: str | Path, metadata: dict[str, str]) -> Path:
    """Save a module's state as fp16 safetensors (atomically) with string metadata.

    Example:
        >>> import tempfile, pathlib
        >>> p = save_state(torch.nn.Linear(2, 1), pathlib.Path(tempfile.mkdtemp()) / "l.safetensors", {"a": "1"})
        >>> state, meta = load_state(p, what="a test file", required=("a",))
        >>> sorted(state), meta["a"]
        (['bias', 'weight'], '1')
    """
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in module.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def load_state(
    path: str | Path, *, what: str, required: tuple[str, ...] = (), fix: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file as float32 tensors plus its metadata.

    Args:
        path: The file.
        what: What the file should be, for error messages (e.g. "segmenter weights").
        required: Metadata keys that must be present.
        fix: What to do when the file is missing.

    Raises:
        InputError: The file is missing, not safetensors (corrupt), or lacks ``required`` metadata.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise InputError(p, f"{what} (.safetensors)", "no such file", fix=fix or "train one or pass --weights")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
        state = load_file(str(p))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise InputError(p, "a readable safetensors file", f"a corrupt file ({type(exc).__name__}: {exc})") from exc
    missing = [k for k in required if k not in meta]
    if missing:
        keys = ", ".join(repr(k) for k in required)
        raise InputError(p, f"{what} (metadata {keys})", f"metadata keys {sorted(meta)}")
    return {k: v.float() for k, v in state.items()}, meta
