"""Faithfulness of a heat map: does the model's score depend on the pixels the map highlights?

Both metrics come from the ``grad-cam`` package and give one number per map, in the units of
the target score, oriented so that **higher is more faithful**:

- ``"road"`` (ROAD, Rong et al. 2022; ``ROADCombined``): the most relevant pixels (MoRF) or
  the least relevant pixels (LeRF) above each percentile of the map are replaced by a noisy
  linear interpolation of their neighbours, and the score change is averaged over the
  percentiles. Score = (LeRF change - MoRF change) / 2: a faithful map loses much when its hot
  pixels are removed and little when its cold ones are. The imputation adds noise; it is drawn
  under ``seed`` so a score is reproducible.
- ``"confidence_drop"`` (``CamMultImageConfidenceChange``): the input (as normalised for the
  network) is multiplied by the map and score = target(x * map) - target(x). 0 means the map
  keeps everything the model used; a negative value is the drop in confidence (the package's
  ``DropInConfidence`` is its negative, clipped at 0).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from usher2.explain.cam import is_segmentation_model, segmentation_targets
from usher2.io.errors import InputError

__all__ = ["FAITHFULNESS_METRICS", "faithfulness"]

FAITHFULNESS_METRICS = ("road", "confidence_drop")


def faithfulness(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    cams: np.ndarray,
    targets: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
    *,
    metric: str = "road",
    percentiles: Sequence[int] = (10, 20, 30, 40, 50, 60, 70, 80, 90),
    seed: int = 0,
) -> np.ndarray:
    """One faithfulness score per map, ``(B,)`` float32; higher is more faithful (see the module docstring).

    Args:
        model: The model the maps explain.
        inputs: ``(B, C, H, W)`` network input the maps were computed on.
        cams: ``(B, H, W)`` maps in [0, 1].
        targets: One callable per image; default as in :func:`~usher2.explain.cam.explain`
            (arg-max output, or the predicted lesion of a segmentation network).
        metric: ``"road"`` or ``"confidence_drop"``.
        percentiles: ROAD's removal percentiles.
        seed: Seed of ROAD's imputation noise.

    Raises:
        InputError: Unknown metric, or maps that do not match the inputs.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> with torch.no_grad():
        ...     _ = net[1].weight.fill_(1.0)
        >>> x = torch.ones(1, 1, 4, 4)
        >>> faithfulness(net, x, np.ones((1, 4, 4), np.float32), metric="confidence_drop").tolist()
        [0.0]
        >>> faithfulness(net, x, np.zeros((1, 4, 4), np.float32), metric="confidence_drop").tolist()
        [-16.0]
    """
    if metric not in FAITHFULNESS_METRICS:
        raise InputError("metric", f"one of {', '.join(FAITHFULNESS_METRICS)}", repr(metric))
    cams = np.asarray(cams, np.float32)
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4:
        raise InputError("inputs", "a (B, C, H, W) torch tensor", f"{type(inputs).__name__}")
    if cams.shape != (inputs.shape[0], *inputs.shape[2:]):
        raise InputError("cams", f"maps of shape {(inputs.shape[0], *tuple(inputs.shape[2:]))}", f"{cams.shape}")
    if targets is not None and len(targets) != inputs.shape[0]:
        raise InputError("targets", f"one target per image ({inputs.shape[0]})", f"{len(targets)} targets")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if targets is None:
                out = model(inputs)
                if is_segmentation_model(model):
                    targets = segmentation_targets(out)
                else:
                    targets = [ClassifierOutputTarget(int(c)) for c in out.argmax(dim=-1).tolist()]
            scorer = ROADCombined(percentiles=list(percentiles)) if metric == "road" else CamMultImageConfidenceChange()
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                # ROAD's imputer calls np.argwhere on a torch tensor (the package's code, harmless under NumPy 2)
                warnings.filterwarnings("ignore", "__array_wrap__ must accept context", DeprecationWarning)
                torch.manual_seed(seed)
                scores = scorer(inputs, cams, list(targets), model)
    finally:
        model.train(was_training)
    return np.asarray(scores, np.float32).reshape(-1)
