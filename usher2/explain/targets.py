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

:func:`model_target` picks the target scoring uses for a fitted fusion model (the service, ``usher2
score`` and the cohort report all draw that map).

A classifier with a head is explained with the package's own
:class:`~pytorch_grad_cam.utils.model_targets.ClassifierOutputTarget` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from usher2.fusion.introspect import linear_form
from usher2.io.errors import InputError

__all__ = ["ClassifierOutputTarget", "LinearTarget", "PooledFeatureTarget", "model_target"]


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


def model_target(
    model: Any, columns: Sequence[str], reads: bool
) -> tuple[tuple[LinearTarget, LinearTarget] | None, str]:
    """The Grad-CAM target for a fitted fusion model and one backbone, and what it is.

    When the model is linear in the backbone's features (:func:`~usher2.fusion.introspect.linear_form`)
    the target is the evidence for the *predicted* class: ``(LinearTarget(w), LinearTarget(-w))``
    with ``w`` the model's coefficients of ``columns``, the first for a frame labelled 1 and the
    second for one labelled 0 (Grad-CAM keeps positive evidence only). Otherwise None: the sum of
    the pooled features (:class:`PooledFeatureTarget`).

    Args:
        model: The fitted fusion model.
        columns: The backbone's feature columns (``deep_<backbone>_<i>``).
        reads: The model reads any of them.

    Example:
        >>> import pandas as pd
        >>> from sklearn.linear_model import LogisticRegression
        >>> lr = LogisticRegression().fit(pd.DataFrame({"a": [0.0, 1, 2, 3], "b": [1.0, 0, 1, 0]}), [0, 0, 1, 1])
        >>> pair, what = model_target(lr, ["a"], True)
        >>> bool(pair[0].weights[0] > 0), what.startswith("evidence for the predicted class")
        (True, True)
    """
    if not reads:
        return None, "pooled features (sum): the model reads no deep features"
    try:
        form = linear_form(model, None)
    except InputError:
        return None, "pooled features (sum): the model is not linear in the deep features"
    coef = dict(zip(form.names, form.coef, strict=True))
    w = np.array([coef.get(c, 0.0) for c in columns])
    if not np.any(w):
        return None, "pooled features (sum): the model gives this backbone's features no weight"
    return (LinearTarget(w), LinearTarget(-w)), (
        "evidence for the predicted class: the model's logit from this backbone's features (label 1) "
        "or its negative (label 0)"
    )
