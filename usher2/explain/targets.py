"""Targets for head-less backbones: what score a CAM of a feature extractor explains.

usher2's deep backbones are feature extractors: the shipped ``usresnet10t`` was trained with a
pathology head and a HER2 head on a shared trunk, but only the trunk is shipped
(``weights/deep_usresnet10t.safetensors`` holds no ``fc``/``head`` tensors), and
:class:`~usher2.features.deep.DeepExtractor` builds it with ``num_classes=0``. Its output is
the pooled pre-logit feature vector, so a CAM needs a target that turns that vector into one
score. Two are offered (a target is any callable ``output (num_features,) -> scalar``):

- :class:`PooledFeatureTarget`: one pooled feature (the column ``deep_<backbone>_<index>``),
  or, with no index, the sum of all of them (how strongly the crop drives the trunk at all;
  the default of :func:`~usher2.explain.frame.explain_frame`).
- :class:`LinearTarget`: ``w . features + b``, e.g. the deep-feature coefficients of a
  linear fusion model (a logistic regression's HER2 logit restricted to the deep columns).

A classifier with a head is explained with the package's own
:class:`~pytorch_grad_cam.utils.model_targets.ClassifierOutputTarget` (re-exported here).
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from usher2.io.errors import InputError

__all__ = ["ClassifierOutputTarget", "LinearTarget", "PooledFeatureTarget"]


class PooledFeatureTarget:
    """One pooled feature of a head-less backbone, or the sum of all of them (``index=None``).

    Example:
        >>> f = torch.tensor([1.0, 2.0, 3.0])
        >>> float(PooledFeatureTarget()(f)), float(PooledFeatureTarget(2)(f))
        (6.0, 3.0)
    """

    def __init__(self, index: int | None = None) -> None:
        self.index = None if index is None else int(index)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.ndim != 1:
            raise InputError("target", "one image's pooled features (num_features,)", f"shape {tuple(output.shape)}")
        return output.sum() if self.index is None else output[self.index]

    def __repr__(self) -> str:
        return f"PooledFeatureTarget(index={self.index})"


class LinearTarget:
    """A linear score of the pooled features: ``weights . output + bias``.

    Args:
        weights: ``(num_features,)`` coefficients (e.g. a linear model's deep-feature coefficients).
        bias: Added to the score (does not change a gradient-based CAM).

    Example:
        >>> t = LinearTarget(np.array([1.0, -1.0]), bias=0.5)
        >>> float(t(torch.tensor([3.0, 1.0])))
        2.5
    """

    def __init__(self, weights: np.ndarray | torch.Tensor, bias: float = 0.0) -> None:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        if w.ndim != 1 or w.numel() == 0:
            raise InputError("weights", "a non-empty 1-D coefficient vector", f"shape {tuple(w.shape)}")
        self.weights = w
        self.bias = float(bias)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.shape != self.weights.shape:
            raise InputError(
                "target", f"pooled features of shape {tuple(self.weights.shape)}", f"shape {tuple(output.shape)}"
            )
        return (output * self.weights.to(output.device, output.dtype)).sum() + self.bias

    def __repr__(self) -> str:
        return f"LinearTarget(num_features={self.weights.numel()}, bias={self.bias})"
