"""Trained smp networks (U-Net, U-Net++, …) behind the segmenter API.

Weights are fp16 safetensors whose metadata carries the :class:`SegmenterConfig` and the
post-processing chosen in cross-validation. A frame of any size is resized so that its longer
side is the config's ``input_size``, zero-padded at the bottom and right to a multiple of 32
(as in training), segmented, and the logits are cropped and resized back to the frame.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from usher2.inference import inference_copy
from usher2.io.errors import InputError
from usher2.segment.base import SEGMENTERS, Segmenter
from usher2.segment.networks import SegmenterConfig, build_network, normalise_frames
from usher2.weights import default_weights_dir, load_state, save_state

__all__ = ["UNetSegmenter", "load_network", "resize_to_working", "save_network"]

WEIGHT_FILES = {"unet": "segmenter_unet.safetensors", "unetplusplus": "segmenter_unetplusplus.safetensors"}


def save_network(
    net: torch.nn.Module, config: SegmenterConfig, path: str | Path, *, metadata: dict[str, str] | None = None
) -> Path:
    """Save a segmentation network as fp16 safetensors with its config in the metadata."""
    meta = {"format": "usher2-segmenter/1", "segmenter_config": config.to_json()}
    meta.update(metadata or {})
    return save_state(net, path, meta)


def load_network(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, str]]:
    """Load a network saved by :func:`save_network` (eval mode, float32) and its metadata.

    Raises:
        InputError: Missing, corrupt, not an usher2 segmenter, or tensors that do not fit.
    """
    p = Path(path)
    state, meta = load_state(p, what="segmenter weights", required=("segmenter_config",))
    config = SegmenterConfig.from_json(meta["segmenter_config"])
    net = build_network(dataclasses.replace(config, encoder_weights=None))  # the file holds every tensor
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(p, f"weights matching {config}", f"mismatching tensors ({exc})") from exc
    return net.to(device).eval(), meta


def resize_to_working(h: int, w: int, input_size: int) -> tuple[int, int]:
    """The ``(h, w)`` a frame is resized to: longer side ``input_size``, aspect kept (>= 1 px).

    Example:
        >>> resize_to_working(353, 274, 256), resize_to_working(8, 8, 256)
        ((256, 199), (256, 256))
    """
    scale = input_size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _resize_batch(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """``(B, H, W)`` float32 resized to ``(B, h, w)``; area averaging when shrinking."""
    if x.shape[1:] == (h, w):
        return x
    interp = cv2.INTER_AREA if h < x.shape[1] and w < x.shape[2] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in x])


class UNetSegmenter(Segmenter):
    """A trained smp network as a segmenter.

    Args:
        weights: The safetensors file; default: the shipped file for ``kind``.
        kind: Registry name (``"unet"``, ``"unetplusplus"``); only picks the default file.
        device: ``"cpu"``, ``"cuda"``…; default CUDA when available.
        tta: Average the logits with those of the horizontally flipped frame (depth is never flipped).
        batch_size: Frames per forward pass.
        threshold: Probability threshold; default from the weights (else 0.5).
        largest_component: Default from the weights (what helped in cross-validation).
        uncertainty_margin: See :class:`~usher2.segment.base.Segmenter`.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        kind: str = "unet",
        device: str | None = None,
        tta: bool = False,
        batch_size: int = 16,
        threshold: float | None = None,
        largest_component: bool | None = None,
        uncertainty_margin: int = 5,
    ) -> None:
        self.weights: Path | None = Path(weights) if weights is not None else default_weights_dir() / WEIGHT_FILES[kind]
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        net, meta = load_network(self.weights, device=dev)
        self._setup(net, SegmenterConfig.from_json(meta["segmenter_config"]), meta, dev, kind, tta, batch_size)
        self._fast = inference_copy(net, dev)  # a frozen network: folded, channels-last on the CPU
        post = json.loads(meta.get("postprocess", "{}"))
        super().__init__(
            threshold=post.get("threshold", 0.5) if threshold is None else threshold,
            largest_component=post.get("largest_component", False) if largest_component is None else largest_component,
            uncertainty_margin=uncertainty_margin,
        )

    def _setup(
        self,
        net: torch.nn.Module,
        config: SegmenterConfig,
        meta: dict[str, str],
        device: torch.device,
        kind: str,
        tta: bool,
        batch_size: int,
    ) -> None:
        self.net, self.config, self.metadata, self.device = net, config, meta, device
        self._fast = net  # what _forward runs; an in-memory (training) network runs as it is
        self.name, self.tta, self.batch_size = kind, bool(tta), max(1, int(batch_size))
        self.enhancer_name = meta.get("enhancer") or None
        self._enhancer = None
        if self.enhancer_name:  # the network was trained on enhanced frames: enhance the same way
            from usher2.enhance import create_enhancer

            self._enhancer = create_enhancer(self.enhancer_name)

    @classmethod
    def from_network(
        cls,
        net: torch.nn.Module,
        config: SegmenterConfig,
        *,
        device: str = "cpu",
        enhancer: str | None = None,
        tta: bool = False,
        **kwargs: Any,
    ) -> UNetSegmenter:
        """Wrap an in-memory network (training, cross-validation) without a weights file."""
        self = cls.__new__(cls)
        self.weights = None
        self._setup(net.eval(), config, {"enhancer": enhancer or ""}, torch.device(device), "unet", tta, 16)
        Segmenter.__init__(self, **kwargs)
        return self

    def settings(self) -> dict[str, Any]:
        import hashlib

        digest = hashlib.sha256(self.weights.read_bytes()).hexdigest()[:16] if self.weights else None
        return {
            **super().settings(),
            "weights": str(self.weights),
            "weights_sha256": digest,
            "tta": self.tta,
            "enhancer": self.enhancer_name,
        }

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, x.shape[0], self.batch_size):
            chunk = x[i : i + self.batch_size].to(self.device)
            z = self._fast(chunk).float()
            if self.tta:
                z = 0.5 * (z + self._fast(chunk.flip(-1)).float().flip(-1))
            out.append(z.cpu())
        return torch.cat(out)

    def _logits_numpy(self, x: np.ndarray) -> np.ndarray:
        h, w = x.shape[2:]
        if self._enhancer is not None:
            x = self._enhancer(x)
        rh, rw = resize_to_working(h, w, self.config.input_size)
        small = _resize_batch(x[:, 0], rh, rw)
        ph, pw = -rh % 32, -rw % 32
        t = F.pad(torch.from_numpy(np.ascontiguousarray(small))[:, None], (0, pw, 0, ph))  # zeros, as in training
        if self.config.normalise != "none":  # after padding, as in training (the padded square is windowed)
            t = torch.from_numpy(normalise_frames(t[:, 0].numpy(), self.config.normalise))[:, None]
        z = self._forward(t)[:, :, :rh, :rw]
        if (rh, rw) != (h, w):
            z = F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False)
        return z.numpy()


def _factory(kind: str) -> Any:
    def make(**kwargs: Any) -> UNetSegmenter:
        return UNetSegmenter(kind=kind, **kwargs)

    make.__doc__ = f"The trained {kind} segmenter (weights/{WEIGHT_FILES[kind]} unless ``weights`` is given)."
    return make


for _kind in WEIGHT_FILES:
    SEGMENTERS.register(_kind)(_factory(_kind))
