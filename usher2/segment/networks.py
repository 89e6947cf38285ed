"""Segmentation networks: segmentation-models-pytorch architectures with 1-channel input.

A :class:`SegmenterConfig` names the smp architecture and encoder (``resnet34``,
``efficientnet-b0``, a timm ``tu-`` encoder…) and the working resolution. Networks start from
random weights, or from a local encoder file; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usher2.io.errors import InputError

__all__ = [
    "ARCHITECTURES",
    "NORMALISATIONS",
    "SegmenterConfig",
    "build_network",
    "load_encoder_weights",
    "normalise_frames",
]

ARCHITECTURES = ("unet", "unetplusplus", "fpn", "deeplabv3plus", "manet", "linknet", "pspnet", "segformer")


#: Input normalisations: ``none`` (grey level / 255) or ``percentile`` (each frame windowed so that
#: its 1st and 99th grey-level percentiles map to 0 and 1; a gain or dynamic-range change of the
#: scanner then moves the input far less).
NORMALISATIONS = ("none", "percentile")


def normalise_frames(x: np.ndarray, how: str) -> np.ndarray:
    """Apply the input normalisation ``how`` to ``(B, H, W)`` float32 frames in [0, 1] (new array or ``x``).

    Example:
        >>> f = np.linspace(0.2, 0.6, 101, dtype=np.float32)[None, None].repeat(3, 1)
        >>> y = normalise_frames(f, "percentile"); round(float(y.min()), 3), round(float(y.max()), 3)
        (-0.01, 1.01)
    """
    if how == "none":
        return x
    if how != "percentile":
        raise ValueError(f"normalise must be one of {', '.join(NORMALISATIONS)}, got {how!r}")
    flat = x.reshape(len(x), -1)
    lo, hi = np.percentile(flat, [1.0, 99.0], axis=1).astype(np.float32)
    scale = np.maximum(hi - lo, np.float32(1e-3))
    return ((x - lo[:, None, None]) / scale[:, None, None]).astype(np.float32)


@dataclass(frozen=True)
class SegmenterConfig:
    """Architecture and preprocessing of one segmenter; saved in its weights' metadata.

    Attributes:
        arch: An smp architecture (``ARCHITECTURES``).
        encoder: An smp encoder name (``resnet34``, ``efficientnet-b0``, ``tu-resnet18``…).
        decoder_channels: U-Net/U-Net++ decoder widths, one per encoder stage (5).
        input_size: Working resolution: frames are resized so their longer side is this many
            pixels, padded to a multiple of 32, segmented, and the probability map is resized back.
        encoder_weights: A local file (safetensors or a PyTorch state dict) for the encoder, or
            ``None`` for random initialisation. Only used when a network is first built.

    Example:
        >>> net = build_network(SegmenterConfig(encoder="resnet18", decoder_channels=(64, 32, 16, 8, 8)))
        >>> net(torch.zeros(1, 1, 64, 96)).shape
        torch.Size([1, 1, 64, 96])
    """

    arch: str = "unet"
    encoder: str = "resnet34"
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    input_size: int = 256
    encoder_weights: str | None = None
    normalise: str = "none"

    def __post_init__(self) -> None:
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {', '.join(NORMALISATIONS)}, got {self.normalise!r}")
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")
        if len(self.decoder_channels) != 5 or any(int(c) < 1 for c in self.decoder_channels):
            raise ValueError(f"decoder_channels must be 5 positive widths, got {self.decoder_channels}")
        object.__setattr__(self, "decoder_channels", tuple(int(c) for c in self.decoder_channels))
        if self.input_size < 32 or self.input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32 (>= 32), got {self.input_size}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SegmenterConfig:
        d = json.loads(text)
        d["decoder_channels"] = tuple(d.get("decoder_channels", cls.decoder_channels))
        return cls(**d)


def build_network(config: SegmenterConfig) -> torch.nn.Module:
    """The smp network: 1 input channel, 1 output logit channel, random or local encoder weights.

    Raises:
        ValueError: The encoder name is unknown to smp (the message lists a few).
        InputError: ``encoder_weights`` names a missing or incompatible file.
    """
    import segmentation_models_pytorch as smp

    kwargs: dict[str, Any] = {"encoder_name": config.encoder, "encoder_weights": None, "in_channels": 1, "classes": 1}
    if config.arch in ("unet", "unetplusplus"):
        kwargs["decoder_channels"] = list(config.decoder_channels)
    try:
        net = smp.create_model(config.arch, **kwargs)
    except KeyError as exc:
        known = ", ".join(sorted(smp.encoders.get_encoder_names())[:12])
        raise ValueError(
            f"encoder {config.encoder!r} is unknown to segmentation-models-pytorch ({exc}); e.g. {known}, "
            "or a timm encoder as 'tu-<timm name>'"
        ) from None
    if config.encoder_weights:
        load_encoder_weights(net.encoder, config.encoder_weights)
    return net


def load_encoder_weights(encoder: torch.nn.Module, path: str | Path) -> None:
    """Load a local encoder state dict; a 3-channel first convolution is summed to 1 channel.

    Keys may carry a ``encoder.`` or ``model.`` prefix. Classifier-head keys (``fc``,
    ``classifier``, ``head``) that the encoder lacks are ignored; any other mismatch is an error.

    Raises:
        InputError: Missing file, unreadable file, or tensors that do not fit the encoder.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "an encoder weights file (.safetensors or .pth)", "no such file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)  # executes no code
            state = state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as exc:
        raise InputError(p, "a readable weights file", f"{type(exc).__name__}: {exc}") from exc
    own = encoder.state_dict()
    fitted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key.removeprefix("encoder.").removeprefix("model.")
        if k not in own:
            continue
        if value.ndim == 4 and value.shape[1] == 3 and own[k].shape[1] == 1:
            value = value.sum(dim=1, keepdim=True)  # grey input: what smp does for pretrained weights
        fitted[k] = value.float()
    missing = [k for k in own if k not in fitted and not k.endswith("num_batches_tracked")]
    if missing:
        raise InputError(
            p,
            f"weights for every encoder tensor ({len(own)})",
            f"{len(missing)} missing, e.g. {missing[:3]}",
            fix="check that the file belongs to the configured encoder",
        )
    try:
        encoder.load_state_dict(fitted, strict=False)
    except RuntimeError as exc:
        raise InputError(p, "tensors of the encoder's shapes", str(exc)) from exc
