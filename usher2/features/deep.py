"""Deep features: pooled pre-logit activations of a timm backbone on the lesion's ROI crop.

**Backbones.** Any timm model name works; the seed studies use ``resnet101``, ``vgg19`` and
``vit_small_patch16_224`` (ultrasound) and ``resnet50``, ``vgg16``, ``efficientnet_b0`` (MRI).
The default, :data:`DEFAULT_BACKBONE` (``usresnet10t``), is the one usher2 ships: a timm
``resnet10t`` (4.9 M parameters) trained on ultrasound ROI crops (BUS-BRA pathology plus simulated frames; see
``weights/deep_usresnet10t.md``). Nothing is ever downloaded, so a timm backbone needs its
weights as a local file, given as ``NAME=PATH`` (loaded through timm's
``pretrained_cfg_overlay=dict(file=PATH)``). A randomly initialised network is used only when
asked for by name, ``NAME=random``, and then with a :class:`RandomInitWarning`: its features
are reproducible under a seed but carry no learnt meaning.

**Input.** The crop is the mask's bounding box grown by ``margin`` (a fraction of the box's
side, at least ``min_margin_px`` pixels) on every side; where it reaches past the frame it is
padded with black. It is resized to the backbone's input size (aspect not kept), the grey
level is replicated to 3 channels and normalised with the backbone's data-config mean and std.

**Output.** The pooled pre-logit features, ``model.forward_head(..., pre_logits=True)``: 2048
for resnet50/101, 512 for resnet18, 1280 for efficientnet_b0, 384 for vit_small (class
token), and 4096 for VGG (the output of its fully connected pre-logit block, not its
``num_features`` of 512). Columns are ``deep_<backbone>_<index>``.

**Devices.** CPU in float32; CUDA in bfloat16 autocast (features returned as float32).
Features of a crop do not depend on its batch-mates.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from usher2.io.errors import InputError
from usher2.io.hashing import file_sha256

__all__ = [
    "DEFAULT_BACKBONE",
    "PREFIX",
    "SHIPPED_BACKBONES",
    "STUDY_BACKBONES",
    "BackboneSpec",
    "DeepExtractor",
    "RandomInitWarning",
    "parse_backbone",
    "roi_crop",
]

PREFIX = "deep_"
DEFAULT_BACKBONE = "usresnet10t"
#: usher2's own backbones: name -> (timm architecture, file in the weights folder).
SHIPPED_BACKBONES: dict[str, tuple[str, str]] = {"usresnet10t": ("resnet10t", "deep_usresnet10t.safetensors")}
STUDY_BACKBONES = ("resnet101", "vgg19", "vit_small_patch16_224", "resnet50", "vgg16", "efficientnet_b0")


class RandomInitWarning(UserWarning):
    """A deep extractor was built with random weights (only ever on explicit request)."""


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone name and where its weights come from.

    Attributes:
        name: A shipped name (``usresnet10t``) or a timm model name.
        weights: A local file, ``"random"``, or None (the shipped file for a shipped name).
    """

    name: str
    weights: str | None = None

    def __str__(self) -> str:
        return self.name if self.weights is None else f"{self.name}={self.weights}"


def _usher2_backbone_file(path: Path) -> bool:
    """True for a safetensors file from ``usher2 train backbone`` (metadata ``arch`` and ``data_config``)."""
    if path.suffix != ".safetensors":
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # not readable as safetensors: timm's loader reports it
        return False
    return "arch" in meta and "data_config" in meta


def parse_backbone(spec: str | BackboneSpec) -> BackboneSpec:
    """``NAME``, ``NAME=PATH`` or ``NAME=random`` -> :class:`BackboneSpec`.

    Example:
        >>> parse_backbone("resnet101=random")
        BackboneSpec(name='resnet101', weights='random')
        >>> parse_backbone("usresnet10t")
        BackboneSpec(name='usresnet10t', weights=None)
    """
    if isinstance(spec, BackboneSpec):
        return spec
    name, sep, weights = str(spec).partition("=")
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise InputError("backbone", "a backbone name (NAME, NAME=PATH or NAME=random)", repr(spec))
    return BackboneSpec(name, weights.strip() if sep else None)


def roi_box(mask: np.ndarray, *, margin: float = 0.1, min_margin_px: int = 4) -> tuple[int, int, int, int]:
    """The ROI box ``(y0, y1, x0, x1)`` of a mask: its bounding box grown by ``margin`` of each side
    (at least ``min_margin_px``). It may reach outside the frame; :func:`roi_crop` pads with black there.

    Raises:
        InputError: The mask is empty.

    Example:
        >>> m = np.zeros((40, 60), bool); m[10:20, 20:30] = True
        >>> roi_box(m)
        (6, 24, 16, 34)
    """
    if not mask.any():
        raise InputError("mask", "a mask with at least one lesion pixel", "an empty mask")
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    my = max(min_margin_px, round(margin * (y1 - y0)))
    mx = max(min_margin_px, round(margin * (x1 - x0)))
    return y0 - my, y1 + my, x0 - mx, x1 + mx


def roi_crop(
    pixels: np.ndarray, mask: np.ndarray, size: tuple[int, int], *, margin: float = 0.1, min_margin_px: int = 4
) -> np.ndarray:
    """The ROI crop (:func:`roi_box`) of a frame as float32 ``size`` = ``(H, W)``, values as in ``pixels``.

    Raises:
        InputError: Shapes differ or the mask is empty.

    Example:
        >>> img = np.arange(100, dtype=np.float32).reshape(10, 10) / 100; m = np.zeros((10, 10), bool)
        >>> m[4:6, 4:6] = True
        >>> c = roi_crop(img, m, (10, 10), margin=0.0, min_margin_px=4)  # 4 px each side: the whole frame
        >>> bool(np.allclose(c, img))
        True
    """
    if pixels.shape != mask.shape:
        raise InputError("mask", f"the frame's shape {pixels.shape}", f"shape {mask.shape}")
    y0, y1, x0, x1 = roi_box(mask, margin=margin, min_margin_px=min_margin_px)
    h, w = pixels.shape
    crop = pixels[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)].astype(np.float32, copy=False)
    pads = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
    if any(pads):
        crop = cv2.copyMakeBorder(crop, *pads, cv2.BORDER_CONSTANT, value=0.0)
    interp = cv2.INTER_AREA if crop.shape[0] > size[0] and crop.shape[1] > size[1] else cv2.INTER_LINEAR
    return cv2.resize(crop, (size[1], size[0]), interpolation=interp)


class DeepExtractor:
    """A timm backbone that turns (frame, mask) pairs into pooled pre-logit feature rows.

    Args:
        backbone: ``NAME``, ``NAME=PATH``, ``NAME=random`` or a :class:`BackboneSpec`.
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available).
        batch_size: Crops per forward pass.
        margin: ROI margin as a fraction of the box side (see the module docstring).
        seed: Seed for a random initialisation.
        input_size: Square input side in pixels instead of the backbone's own (e.g. 64 for speed on
            CPU); CNNs take it as they are, vision transformers are built with ``img_size``.

    Raises:
        InputError: A timm name without weights, an unknown name, a missing or unreadable file.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", RandomInitWarning)
        ...     ex = DeepExtractor("resnet18=random", batch_size=2)
        >>> m = np.zeros((64, 64), bool); m[20:40, 10:50] = True
        >>> feats = ex.features([np.random.default_rng(0).random((64, 64), dtype=np.float32)], [m])
        >>> feats.shape, ex.columns[0]
        ((1, 512), 'deep_resnet18_0')
    """

    def __init__(
        self,
        backbone: str | BackboneSpec = DEFAULT_BACKBONE,
        *,
        device: str | None = None,
        batch_size: int = 32,
        margin: float = 0.1,
        seed: int = 0,
        input_size: int | None = None,
    ) -> None:
        import torch

        self.spec = parse_backbone(backbone)
        self._size = None if input_size is None else int(input_size)
        if self._size is not None and self._size < 16:
            raise InputError("input_size", "at least 16 pixels", str(input_size))
        self.batch_size = int(batch_size)
        self.margin = float(margin)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.weights_sha256: str | None = None
        self.model, data_config = self._build(seed)
        self.model.eval().to(self.device)
        # what _forward and the heat maps run: on the CPU a copy with batch norms folded,
        # channels-last (usher2.inference); self.model stays as built (training, hooks of one's own)
        from usher2.inference import inference_copy

        self._fast = inference_copy(self.model, self.device)
        self.input_size = (int(data_config["input_size"][1]), int(data_config["input_size"][2]))
        if self._size is not None:
            self.input_size = (self._size, self._size)
        self.mean = np.asarray(data_config["mean"], np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(data_config["std"], np.float32).reshape(1, 3, 1, 1)
        with torch.inference_mode():
            probe = self._forward(np.zeros((1, 3, *self.input_size), np.float32))
        self.num_features = int(probe.shape[1])

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def inference_model(self) -> Any:
        """The network the features and heat maps come from: on the CPU the inference copy of
        :attr:`model` (:func:`~usher2.inference.inference_copy`: the same function to float32
        rounding, faster), elsewhere :attr:`model` itself."""
        return self._fast

    @property
    def columns(self) -> list[str]:
        return [f"{PREFIX}{self.name}_{i}" for i in range(self.num_features)]

    # ------------------------------------------------------------------ building
    def _build(self, seed: int) -> tuple[Any, dict[str, Any]]:
        import timm
        import torch

        name, weights = self.spec.name, self.spec.weights
        if name in SHIPPED_BACKBONES and weights is None:
            from usher2.weights import default_weights_dir

            return self._build_usher2(default_weights_dir() / SHIPPED_BACKBONES[name][1], name)
        if weights not in (None, "random"):
            path = Path(weights).expanduser()
            if not path.is_file():
                raise InputError(path, f"a weights file for {name}", "no such file")
            if _usher2_backbone_file(path):  # from usher2 train backbone: its own arch, input size, normalisation
                return self._build_usher2(path, name)
        arch = SHIPPED_BACKBONES[name][0] if name in SHIPPED_BACKBONES else name
        if not timm.is_model(arch):
            raise InputError(
                "backbone",
                f"a shipped backbone ({', '.join(SHIPPED_BACKBONES)}) or a timm model name",
                repr(name),
                fix="see timm.list_models()",
            )
        if weights is None:
            raise InputError(
                "backbone",
                f"local weights for {name} (nothing is downloaded)",
                "none given",
                fix=f"pass {name}=/path/to/weights.safetensors, {name}=random for an untrained network, "
                f"or use the shipped {DEFAULT_BACKBONE}",
            )
        if weights == "random":
            warnings.warn(
                f"deep backbone {name} has RANDOM weights (asked for with {name}=random): its features "
                "carry no learnt meaning",
                RandomInitWarning,
                stacklevel=3,
            )
            torch.manual_seed(seed)
            model = self._create(arch, pretrained=False)
        else:
            path = Path(weights).expanduser()
            try:
                model = self._create(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
            except Exception as exc:  # timm/torch/safetensors raise many types for a bad file
                raise InputError(
                    path, f"weights that fit timm's {arch}", f"a file timm cannot load ({type(exc).__name__}: {exc})"
                ) from exc
            self.weights_sha256 = file_sha256(path)
        return model, timm.data.resolve_model_data_config(model)

    def _create(self, arch: str, **kwargs: Any) -> Any:
        """``timm.create_model``; a transformer gets ``img_size`` when an input size is asked for
        (CNNs take any size as they are)."""
        import timm

        if self._size is not None:
            try:
                return timm.create_model(arch, num_classes=0, img_size=self._size, **kwargs)
            except TypeError:  # a CNN's constructor has no img_size
                pass
        return timm.create_model(arch, num_classes=0, **kwargs)

    def _build_usher2(self, path: Path, name: str) -> tuple[Any, dict[str, Any]]:
        """A backbone file written by ``usher2 train backbone`` (timm trunk + data config in the metadata)."""
        import json

        import timm

        from usher2.weights import load_state

        state, meta = load_state(
            path, what=f"the {name} deep backbone", required=("arch", "data_config"), fix="reinstall usher2"
        )
        arch = meta["arch"]
        model = timm.create_model(meta["arch"], pretrained=False, num_classes=0)
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head", "classifier"))}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise InputError(path, f"weights for timm's {arch}", f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        self.weights_sha256 = file_sha256(path)
        return model, json.loads(meta["data_config"])

    # ------------------------------------------------------------------ running
    def _forward(self, x: np.ndarray) -> np.ndarray:
        import torch

        t = torch.from_numpy(x).to(self.device)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = self._fast.forward_head(self._fast.forward_features(t), pre_logits=True)
        else:
            out = self._fast.forward_head(self._fast.forward_features(t), pre_logits=True)
        return out.float().cpu().numpy()

    def crops(self, pixels: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
        """Normalised ``(N, 3, H, W)`` float32 network input for frames in [0, 1] and their masks."""
        grey = np.stack(
            [roi_crop(p, m, self.input_size, margin=self.margin) for p, m in zip(pixels, masks, strict=True)]
        )
        return ((grey[:, None] - self.mean) / self.std).astype(np.float32)

    def features(self, pixels: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
        """``(N, num_features)`` float32 features; frames ``(H, W)`` in [0, 1], masks bool.

        Raises:
            InputError: A mask is empty or its shape differs from its frame's.
        """
        import torch

        if len(pixels) != len(masks):
            raise ValueError(f"{len(pixels)} frames but {len(masks)} masks")
        out = np.empty((len(pixels), self.num_features), np.float32)
        with torch.inference_mode():
            for i in range(0, len(pixels), self.batch_size):
                out[i : i + self.batch_size] = self._forward(
                    self.crops(pixels[i : i + self.batch_size], masks[i : i + self.batch_size])
                )
        return out

    def provenance(self) -> dict[str, Any]:
        import timm
        import torch

        return {
            "backbone": str(self.spec),
            "weights_sha256": self.weights_sha256,
            "random_init": self.spec.weights == "random",
            "input_size": list(self.input_size),
            "mean": self.mean.ravel().tolist(),
            "std": self.std.ravel().tolist(),
            "margin": self.margin,
            "num_features": self.num_features,
            "timm": timm.__version__,
            "torch": torch.__version__,
            "precision": "bfloat16" if self.device.type == "cuda" else "float32",
        }
