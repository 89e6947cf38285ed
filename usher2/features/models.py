"""The per-process model cache: the enhancer, segmenter, radiomics extractor and backbones a run uses.

Every stage that runs a network or an extractor on frames (cohort extraction, its Dask workers,
:class:`~usher2.score.engine.FrameScorer`, the MRI extraction) builds it through this module, so
a process builds each model once and every door runs the same one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from usher2.io.errors import InputError

__all__ = [
    "cached_model",
    "deep_extractor",
    "enhancer",
    "in_dask_worker",
    "on_cpu",
    "radiomics_backend",
    "radiomics_extractor",
    "segmenter",
    "segmenter_spec",
    "torch_threads",
    "with_segmenter_weights",
]

_MODELS: dict[tuple[str, str], Any] = {}


def cached_model(kind: str, key: str, build: Callable[[], Any]) -> Any:
    """Build a model once per process (workers reuse it across chunks)."""
    if (kind, key) not in _MODELS:
        _MODELS[(kind, key)] = build()
    return _MODELS[(kind, key)]


def radiomics_backend(params: dict[str, Any], backend: str) -> str:
    """The backend that computes ``params``: ``"torch"`` when asked for and it supports them
    (:func:`~usher2.features.torchrad.engine.unsupported`), else ``"pyradiomics"``.

    Example:
        >>> from usher2.features.radiomics import load_params
        >>> normalised = {**load_params(), "setting": {"normalize": True}}
        >>> radiomics_backend(load_params(), "torch"), radiomics_backend(normalised, "torch")
        ('torch', 'pyradiomics')
    """
    if backend != "torch":
        return "pyradiomics"
    from usher2.features.torchrad.engine import unsupported

    return "torch" if unsupported(params) is None else "pyradiomics"


def _torch_device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def radiomics_extractor(cfg: Any, columns: Sequence[str] | None = None, params: dict[str, Any] | None = None) -> Any:
    """The radiomics extractor of ``cfg`` (its ``params``, or ``params``; only ``columns`` when
    given): a :class:`~usher2.features.radiomics.RadiomicsExtractor`, or a
    :class:`~usher2.features.torchrad.engine.TorchRadiomics` on ``cfg.device`` when
    ``cfg.radiomics_backend`` is ``"torch"`` and it supports the parameters. Both have
    ``extract(image, mask, spacing)``; the torch one also ``extract_batch``."""
    params = cfg.params if params is None else params
    backend = radiomics_backend(params, getattr(cfg, "radiomics_backend", "pyradiomics"))
    cols = None if columns is None else tuple(columns)
    key = f"{backend}|{json.dumps(params, sort_keys=True, default=str)}|{cols}"
    if backend == "torch":
        from usher2.features.radiomics import pyradiomics_order
        from usher2.features.torchrad.engine import TorchRadiomics, full_columns

        cols = cols if cols is not None else tuple(pyradiomics_order(full_columns(params)))
        device = _torch_device(cfg.device)
        return cached_model("radiomics", f"{key}|{device}", lambda: TorchRadiomics(params, columns=cols, device=device))
    from usher2.features.radiomics import RadiomicsExtractor

    return cached_model("radiomics", key, lambda: RadiomicsExtractor(params, columns=cols))


def deep_extractor(cfg: Any, spec: str) -> Any:
    """The :class:`~usher2.features.deep.DeepExtractor` of backbone ``spec`` on ``cfg.device``."""
    from usher2.features.deep import DeepExtractor

    return cached_model("deep", f"{spec}|{cfg.device}", lambda: DeepExtractor(spec, device=cfg.device))


def enhancer(name: str) -> Any:
    """The registered enhancer ``name``."""
    from usher2.enhance import create_enhancer

    return cached_model("enhancer", name, lambda: create_enhancer(name))


def segmenter_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"unet"`` -> ("unet", {}); ``"unet=PATH"`` -> ("unet", {"weights": PATH}).

    Example:
        >>> segmenter_spec("unet=runs/x/segmenter.safetensors")
        ('unet', {'weights': 'runs/x/segmenter.safetensors'})
    """
    name, sep, path = str(spec).partition("=")
    if not name or (sep and not path):
        raise InputError("segmenter", "a segmenter name, or NAME=PATH of its weights", repr(spec))
    return name, ({"weights": path} if sep else {})


def segmenter(spec: str) -> Any:
    """The segmenter of ``spec`` (a registry name or ``NAME=PATH``)."""
    from usher2.segment import create_segmenter

    name, kwargs = segmenter_spec(spec)
    return cached_model("segmenter", spec, lambda: create_segmenter(name, **kwargs))


def with_segmenter_weights(cfg: Any, weights: str | Path | None) -> Any:
    """``cfg`` whose segmenter (same network) loads ``weights`` instead; None: ``cfg`` unchanged.

    Raises:
        InputError: No such weights file.
    """
    if weights is None:
        return cfg
    p = Path(weights)
    if not p.is_file():
        raise InputError(p, "segmenter weights (.safetensors, e.g. from usher2 train segmenter)", "no such file")
    name, _ = segmenter_spec(cfg.segmenter)
    return replace(cfg, segmenter=f"{name}={p.resolve()}")


def in_dask_worker() -> bool:
    """Whether this code runs inside a ``dask.distributed`` worker."""
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def on_cpu(cfg: Any) -> bool:
    """Whether ``cfg.device`` (None: CUDA when available) is the CPU."""
    import torch

    return (cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cpu")


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch threads (None: unchanged), then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
