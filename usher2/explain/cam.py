"""Class activation maps from the ``grad-cam`` package (pytorch-grad-cam), one call per batch.

**Methods.** :data:`CAM_METHODS` maps usher2's names to the package's classes: ``gradcam``,
``gradcam++``, ``scorecam``, ``eigencam`` and ``layercam``. Grad-CAM, Grad-CAM++ and LayerCAM
weigh a layer's activations by the gradient of a target score; ScoreCAM weighs them by the
target score of the input masked by each (upsampled) activation channel, so it needs no
gradient but one forward pass per channel; EigenCAM is the first principal component of the
activations, so it ignores the target; usher2's :class:`OrientedEigenCAM` fixes its arbitrary
sign (positive where the layer is active) and avoids the package's ``pixels x pixels`` SVD
matrix. ScoreCAM runs as :class:`QuietScoreCAM` (no progress bar per call).

**Hooks.** Every call builds the CAM object inside ``with METHOD(...) as cam:``: the package
removes its forward hooks on exit, also when the call raises. The package's ``__exit__``
swallows an ``IndexError`` (printing it); :func:`explain` re-raises it as a ``RuntimeError``
so no failure passes silently. Parameter gradients left by the backward pass are dropped
(``zero_grad(set_to_none=True)``) and the model's train/eval mode is restored, so 1,000 calls
leave the model as they found it and do not grow memory.

**Target layers** (:func:`default_target_layers`), when none are given:

- smp segmentation networks (:func:`usher2.segment.networks.build_network`): the decoder,
  whose output is the input of the segmentation head (full resolution, decoder width);
- timm vision transformers: ``blocks[-1].norm1``, with :func:`vit_reshape_transform` dropping
  the prefix (class/register) tokens and folding the patch tokens back into a grid;
- timm CNNs: the last stage named by ``model.feature_info`` (``layer4`` for a ResNet);
- anything else: the last ``Conv2d``.

**Targets.** A list of callables, one per image, each taking that image's model output. With
``targets=None``: a segmentation network gets a
:class:`~pytorch_grad_cam.utils.model_targets.SemanticSegmentationTarget` over its own
predicted lesion (logit > 0; the whole frame when nothing is predicted), see
:func:`segmentation_targets`; any other model gets the package's default, the arg-max output
(for a head-less backbone that is its largest pooled feature, rarely what is wanted: pass a
:class:`~usher2.explain.targets.PooledFeatureTarget` or a
:class:`~usher2.explain.targets.LinearTarget`).

**Output.** ``(B, H, W)`` float32 in [0, 1] at the input's resolution: the package min-max
scales each map (an all-zero map stays zero).
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
from pytorch_grad_cam import score_cam as _score_cam_module
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

from usher2.io.errors import InputError

__all__ = [
    "CAM_METHODS",
    "OrientedEigenCAM",
    "QuietScoreCAM",
    "default_target_layers",
    "explain",
    "is_segmentation_model",
    "is_vit",
    "segmentation_targets",
    "vit_reshape_transform",
]


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """ScoreCAM wraps its channel loop in ``tqdm``; swap it for a plain iterator while it runs."""
    original = _score_cam_module.tqdm
    _score_cam_module.tqdm = types.SimpleNamespace(tqdm=lambda iterable, *args, **kwargs: iterable)
    try:
        yield
    finally:
        _score_cam_module.tqdm = original


class QuietScoreCAM(ScoreCAM):
    """The package's ScoreCAM without its per-call progress bars, 64 masked inputs per forward pass.

    Example:
        >>> issubclass(QuietScoreCAM, ScoreCAM), QuietScoreCAM.batch_size
        (True, 64)
    """

    batch_size = 64

    def get_cam_weights(self, *args: Any, **kwargs: Any) -> np.ndarray:
        with _no_progress_bars():
            return super().get_cam_weights(*args, **kwargs)


class OrientedEigenCAM(EigenCAM):
    """The package's EigenCAM with an economical SVD and a fixed sign.

    The package takes the first right singular vector of the centred ``(pixels, channels)``
    activations with ``full_matrices=True``, which also builds a ``pixels x pixels`` matrix it never
    uses (1 GB for a 128 x 128 map); the projection is the same with ``full_matrices=False``. A
    singular vector's sign is arbitrary, so the map is flipped when it anti-correlates with the
    summed activations (what "this region is active" means), before the ReLU.

    Example:
        >>> a = np.zeros((1, 2, 4, 4), np.float32); a[0, :, :2, :2] = 1.0
        >>> cam = OrientedEigenCAM.get_cam_image(None, None, None, None, a, None, False)
        >>> bool(cam[0, 0, 0] > 0 > cam[0, 3, 3])
        True
    """

    def get_cam_image(
        self,
        input_tensor: torch.Tensor,
        target_layer: torch.nn.Module,
        targets: Any,
        activations: np.ndarray,
        grads: Any,
        eigen_smooth: bool,
    ) -> np.ndarray:
        acts = np.nan_to_num(np.asarray(activations, np.float32))
        out = np.empty((acts.shape[0], *acts.shape[2:]), np.float32)
        for b, act in enumerate(acts):
            flat = act.reshape(act.shape[0], -1).T
            centred = flat - flat.mean(axis=0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            proj = centred @ vt[0]
            if np.dot(proj - proj.mean(), flat.sum(axis=1) - flat.sum(axis=1).mean()) < 0:
                proj = -proj
            out[b] = proj.reshape(act.shape[1:])
        return out


#: usher2 name -> pytorch-grad-cam class.
CAM_METHODS: dict[str, type] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "scorecam": QuietScoreCAM,
    "eigencam": OrientedEigenCAM,
    "layercam": LayerCAM,
}


def is_segmentation_model(model: torch.nn.Module) -> bool:
    """True for an smp network (an encoder, a decoder and a segmentation head).

    Example:
        >>> is_segmentation_model(torch.nn.Conv2d(1, 1, 3))
        False
    """
    return all(hasattr(model, a) for a in ("encoder", "decoder", "segmentation_head"))


def is_vit(model: torch.nn.Module) -> bool:
    """True for a timm vision transformer (patch embedding, blocks and prefix tokens).

    Example:
        >>> import timm
        >>> is_vit(timm.create_model("vit_tiny_patch16_224", img_size=32, pretrained=False, num_classes=0))
        True
    """
    return all(hasattr(model, a) for a in ("patch_embed", "blocks", "num_prefix_tokens"))


def vit_reshape_transform(model: torch.nn.Module, input_hw: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Tokens ``(B, prefix + h*w, C)`` -> ``(B, C, h, w)`` for a timm ViT at input size ``input_hw``.

    The prefix tokens (``model.num_prefix_tokens``: class and register tokens) are dropped and
    the patch grid is the input size divided by the patch size.

    Example:
        >>> import timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, pretrained=False, num_classes=0)
        >>> vit_reshape_transform(vit, (32, 32))(torch.zeros(1, 5, 192)).shape
        torch.Size([1, 192, 2, 2])
    """
    ph, pw = model.patch_embed.patch_size
    gh, gw = int(input_hw[0]) // int(ph), int(input_hw[1]) // int(pw)
    prefix = int(model.num_prefix_tokens)

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] != prefix + gh * gw:
            raise RuntimeError(f"ViT gave {tokens.shape[1]} tokens; expected {prefix} prefix + {gh}x{gw} patches")
        grid = tokens[:, prefix:, :].reshape(tokens.size(0), gh, gw, tokens.size(2))
        return grid.permute(0, 3, 1, 2)

    return reshape


def default_target_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layer(s) a CAM is computed on when none are given (see the module docstring).

    Raises:
        InputError: The model has no layer usher2 knows how to choose (pass ``target_layers``).

    Example:
        >>> import timm
        >>> net = timm.create_model("resnet10t", pretrained=False, num_classes=0)
        >>> default_target_layers(net)[0] is net.layer4
        True
    """
    if is_segmentation_model(model):
        return [model.decoder]
    if is_vit(model):
        return [model.blocks[-1].norm1]
    info = getattr(model, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, list | tuple) else info.info[-1]
        name = last.get("module") if isinstance(last, dict) else None
        if name:
            return [model.get_submodule(name)]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if convs:
        return [convs[-1]]
    raise InputError(
        "target_layers",
        "a model with a Conv2d, a timm feature_info, a timm ViT or an smp decoder",
        type(model).__name__,
        fix="pass target_layers=[the layer to explain]",
    )


def segmentation_targets(logits: torch.Tensor | np.ndarray, *, category: int = 0) -> list[SemanticSegmentationTarget]:
    """One :class:`SemanticSegmentationTarget` per image: the lesion logits summed over the predicted mask.

    Args:
        logits: ``(B, K, H, W)`` segmentation logits (usher2's segmenters: ``K = 1``).
        category: The output channel to explain.

    Example:
        >>> z = torch.full((2, 1, 4, 4), -1.0); z[0, 0, :2, :2] = 3.0
        >>> [float(t(z[b])) for b, t in enumerate(segmentation_targets(z))]
        [12.0, -16.0]
    """
    z = logits.detach().float().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits, np.float32)
    if z.ndim != 4:
        raise InputError("logits", "segmentation logits (B, K, H, W)", f"shape {z.shape}")
    out = []
    for b in range(z.shape[0]):
        mask = (z[b, category] > 0).astype(np.float32)
        if not mask.any():  # nothing predicted: explain the lesion score of the whole frame
            mask[:] = 1.0
        out.append(SemanticSegmentationTarget(category, mask))
    return out


def explain(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    *,
    method: str = "gradcam",
    target_layers: Sequence[torch.nn.Module] | None = None,
    targets: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> np.ndarray:
    """CAMs of a batch: ``(B, H, W)`` float32 in [0, 1].

    Args:
        model: A classifier, a backbone (with a target callable) or an smp segmentation network.
        inputs: ``(B, C, H, W)`` network input (already normalised), on the model's device.
        method: A name in :data:`CAM_METHODS`.
        target_layers: Layers to explain; default :func:`default_target_layers`.
        targets: One callable per image on that image's output; default: see the module docstring.
        reshape_transform: Activations -> ``(B, C, h, w)``; default :func:`vit_reshape_transform` for a ViT.

    Raises:
        InputError: Unknown method, inputs that are not ``(B, C, H, W)``, or not one target per image.

    Example:
        >>> import timm
        >>> _ = torch.manual_seed(0)
        >>> net = timm.create_model("resnet10t", pretrained=False, num_classes=2)
        >>> cams = explain(net, torch.rand(2, 3, 64, 64), method="gradcam")
        >>> cams.shape, bool(cams.min() >= 0 and cams.max() <= 1)
        ((2, 64, 64), True)
    """
    if method not in CAM_METHODS:
        raise InputError("method", f"one of {', '.join(CAM_METHODS)}", repr(method))
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4:
        got = f"shape {tuple(inputs.shape)}" if hasattr(inputs, "shape") else type(inputs).__name__
        raise InputError("inputs", "a (B, C, H, W) torch tensor", got)
    if targets is not None and len(targets) != inputs.shape[0]:
        raise InputError("targets", f"one target per image ({inputs.shape[0]})", f"{len(targets)} targets")
    layers = list(target_layers) if target_layers is not None else default_target_layers(model)
    if reshape_transform is None and is_vit(model):
        reshape_transform = vit_reshape_transform(model, (int(inputs.shape[2]), int(inputs.shape[3])))
    was_training = model.training
    try:
        if targets is None and is_segmentation_model(model):
            with torch.no_grad():
                targets = segmentation_targets(model.eval()(inputs))
        # The input requires a gradient so that activations do too, even in a frozen network.
        x = inputs.detach().clone().requires_grad_(True)
        with (
            torch.enable_grad(),
            CAM_METHODS[method](model=model, target_layers=layers, **_kw(reshape_transform)) as cam,
        ):
            try:
                maps = cam(input_tensor=x, targets=None if targets is None else list(targets))
            except IndexError as exc:  # the package's __exit__ would print and swallow it
                raise RuntimeError(f"{method} failed on {type(model).__name__}: {exc}") from exc
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return np.ascontiguousarray(maps, dtype=np.float32)


def _kw(reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None) -> dict[str, Any]:
    return {} if reshape_transform is None else {"reshape_transform": reshape_transform}
