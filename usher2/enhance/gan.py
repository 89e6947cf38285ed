"""Learned enhancers (pix2pix- and CycleGAN-style generators) behind the enhancer API.

Weights are fp16 safetensors whose metadata carries the generator's architecture, so
preprocessing and architecture cannot drift from the weights. Inference pads each frame to a
multiple of ``2**depth`` and cuts frames larger than ``tile`` into overlapping tiles; each
output pixel comes from the tile in which it lies farthest from an edge.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from usher2.enhance.base import ENHANCERS, Enhancer
from usher2.enhance.networks import GeneratorConfig, UNetGenerator, split_skip_convs
from usher2.inference import inference_copy, to_channels_last
from usher2.io.errors import InputError
from usher2.weights import default_weights_dir, load_state, save_state

__all__ = ["GANEnhancer", "default_weights_dir", "load_generator", "save_generator"]

WEIGHT_FILES = {"pix2pix": "enhancer_pix2pix.safetensors", "cyclegan": "enhancer_cyclegan.safetensors"}


def save_generator(generator: UNetGenerator, path: str | Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Save a generator as fp16 safetensors (atomically) with its config in the metadata."""
    meta = {"format": "usher2-enhancer/1", "generator_config": json.dumps(generator.config.to_dict())}
    meta.update(metadata or {})
    return save_state(generator, path, meta)


def load_generator(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[UNetGenerator, dict[str, str]]:
    """Load a generator saved by :func:`save_generator`, in eval mode and float32.

    Raises:
        InputError: The file is missing, not safetensors, or not an usher2 enhancer.
    """
    p = Path(path)
    state, meta = load_state(p, what="an enhancer weights file", required=("generator_config",))
    config = GeneratorConfig(**json.loads(meta["generator_config"]))
    generator = UNetGenerator(config)
    try:
        generator.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(p, f"weights matching {config}", f"mismatching tensors ({exc})") from exc
    return generator.to(device).eval(), meta


def _pad_mode(h: int, w: int, ph: int, pw: int) -> str:
    return "reflect" if ph < h and pw < w else "replicate"


class GANEnhancer(Enhancer):
    """A trained generator as an enhancer.

    Args:
        weights: The safetensors file; defaults to the shipped file for ``kind``.
        kind: ``"pix2pix"`` or ``"cyclegan"`` (only picks the default file and the name).
        device: ``"cpu"``, ``"cuda"``…; default CUDA when available.
        tile: Frames with a side above this are processed in tiles of this size (a multiple of
            ``2**depth``).
        overlap: Context in pixels kept around each tile's centre region.
        batch_size: Frames (or tiles) per forward pass.
        strength: See :class:`~usher2.enhance.base.Enhancer`.
    """

    def __init__(
        self,
        *,
        weights: str | Path | None = None,
        kind: str = "pix2pix",
        device: str | None = None,
        tile: int = 512,
        overlap: int = 64,
        batch_size: int = 16,
        strength: float = 1.0,
    ) -> None:
        super().__init__(strength=strength)
        if kind not in WEIGHT_FILES:
            raise ValueError(f"kind must be one of {sorted(WEIGHT_FILES)}, got {kind!r}")
        self.name = kind
        self.weights = Path(weights) if weights is not None else default_weights_dir() / WEIGHT_FILES[kind]
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.generator, self.metadata = load_generator(self.weights, device=self.device)
        # what _forward runs: on the CPU a copy with batch norms folded, channels-last
        # (usher2.inference; 1.7x at batch 1) and the skip concatenations split (SplitSkipConv;
        # its new convolutions restrided to channels-last too)
        self._fast = inference_copy(self.generator, self.device)
        if self._fast is not self.generator:
            self._fast = split_skip_convs(self._fast)
            for block in self._fast.up:  # only the new convolutions: the copy's others are channels-last
                to_channels_last(block)
        m = self.generator.config.multiple
        if tile < 2 * m or tile % m:
            raise ValueError(f"tile must be a multiple of {m} and at least {2 * m}, got {tile}")
        if not 0 <= overlap < tile // 2:
            raise ValueError(f"overlap must be in [0, {tile // 2}), got {overlap}")
        self.tile, self.overlap, self.batch_size = tile, overlap, max(1, int(batch_size))

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "weights": str(self.weights),
            "weights_sha256": self.metadata.get("sha256", ""),
            "tile": self.tile,
            "overlap": self.overlap,
        }

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, h, w)`` with sides multiples of ``2**depth``, in chunks of ``batch_size``."""
        outs = [self._fast(x[i : i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]
        return torch.cat(outs)

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        m = self.generator.config.multiple
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode=_pad_mode(h, w, ph, pw))
        return x

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        """One padded frame ``(1, 1, H, W)``, H or W above ``tile``."""
        t, o = self.tile, self.overlap
        core = t - 2 * o
        _, _, h, w = x.shape
        out = torch.empty_like(x)
        # Pad by the overlap so border tiles see context too, then walk the core grid.
        mode = _pad_mode(h, w, o, o)
        xp = (
            F.pad(x, (o, o + t, o, o + t), mode="replicate")
            if mode == "replicate"
            else F.pad(F.pad(x, (o, o, o, o), mode="reflect"), (0, t, 0, t), mode="replicate")
        )
        origins = [(r, c) for r in range(0, h, core) for c in range(0, w, core)]
        for i in range(0, len(origins), self.batch_size):
            chunk = origins[i : i + self.batch_size]
            tiles = torch.cat([xp[..., r : r + t, c : c + t] for r, c in chunk])
            pred = self._forward(tiles)
            for (r, c), p in zip(chunk, pred, strict=True):
                rh, cw = min(core, h - r), min(core, w - c)
                out[0, :, r : r + rh, c : c + cw] = p[:, o : o + rh, o : o + cw]
        return out

    def _enhance_numpy(self, x: np.ndarray) -> np.ndarray:
        h, w = x.shape[-2:]
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        if max(h, w) <= self.tile:
            y = self._forward(self._padded(xt))[..., :h, :w]
        else:
            y = torch.cat([self._tiled(self._padded(xt[b : b + 1]))[..., :h, :w] for b in range(x.shape[0])])
        return y.float().cpu().numpy()


@ENHANCERS.register("pix2pix")
def _pix2pix(**kwargs: Any) -> GANEnhancer:
    """The paired (pix2pix-style) enhancer with the shipped weights unless ``weights`` is given."""
    return GANEnhancer(kind="pix2pix", **kwargs)


@ENHANCERS.register("cyclegan")
def _cyclegan(**kwargs: Any) -> GANEnhancer:
    """The unpaired (CycleGAN-style) enhancer with the shipped weights unless ``weights`` is given."""
    return GANEnhancer(kind="cyclegan", **kwargs)
