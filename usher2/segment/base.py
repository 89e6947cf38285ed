"""The segmenter contract: logits, probabilities, post-processed masks and per-frame results.

Every segmenter takes a float ``(B, 1, H, W)`` batch in [0, 1] (NumPy or torch) of any ``H``
and ``W`` and returns lesion logits of the same shape (:meth:`Segmenter.logits`).
:meth:`Segmenter.predict_mask` thresholds the probability and post-processes the mask;
:meth:`Segmenter.segment` gives one :class:`Segmentation` per frame, with an uncertainty score
and an explicit no-lesion flag instead of an empty mask to trip over.

**Post-processing.** Holes are filled (a lesion outline has no holes). With
``largest_component`` only the largest connected component is kept; the shipped weights
record whether that helped in cross-validation and set it accordingly.

**Uncertainty.** The mean binary entropy (bits, so 0 = certain, 1 = p of 0.5 everywhere) of
the probability map inside the mask dilated by ``uncertainty_margin`` pixels; for a frame with
no lesion, inside the pixels with p > 0.05 (0 when there are none).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from usher2.enhance.base import check_batch
from usher2.registry import Registry

__all__ = ["SEGMENTERS", "Segmentation", "Segmenter", "entropy_uncertainty", "postprocess_mask"]

SEGMENTERS: Registry[Segmenter] = Registry("segmenter")


@dataclass(frozen=True)
class Segmentation:
    """One frame's result.

    Attributes:
        probability: ``(H, W)`` float32 lesion probability.
        mask: ``(H, W)`` bool, post-processed.
        uncertainty: Mean binary entropy in [0, 1] (see the module docstring).
        no_lesion: True when the mask is empty: the segmenter found no lesion.
    """

    probability: np.ndarray
    mask: np.ndarray
    uncertainty: float
    no_lesion: bool

    @property
    def area_px(self) -> int:
        """Lesion pixels in the mask."""
        return int(self.mask.sum())


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` of a 2D mask, from OpenCV's connected components.

    A hole is a 4-connected component of the background that does not touch the frame's border
    (SciPy's default structure); the result is the same set, about 10x faster on a 256-px frame
    (SciPy propagates the border's background by repeated dilations). Other ranks go to SciPy.

    Example:
        >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True; m[2, 2] = False
        >>> bool(fill_holes(m)[2, 2]), bool((fill_holes(m) == ndimage.binary_fill_holes(m)).all())
        (True, True)
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2 or m.size == 0:
        return ndimage.binary_fill_holes(m)
    _, labels = cv2.connectedComponents((~m).view(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    outside = np.zeros(int(labels.max()) + 1, bool)
    outside[border] = True
    outside[0] = False  # label 0: the mask itself
    return ~outside[labels]


def postprocess_mask(mask: np.ndarray, *, largest_component: bool = False) -> np.ndarray:
    """Fill holes, optionally keep the largest 8-connected component. ``(H, W)`` bool in and out.

    Example:
        >>> m = np.zeros((7, 9), bool); m[1:6, 1:6] = True; m[3, 3] = False; m[2, 8] = True
        >>> int(postprocess_mask(m).sum()), int(postprocess_mask(m, largest_component=True).sum())
        (26, 25)
    """
    out = fill_holes(mask)
    if largest_component and out.any():
        labels, n = ndimage.label(out, structure=np.ones((3, 3), bool))
        if n > 1:
            sizes = np.bincount(labels.ravel())[1:]
            out = labels == (int(np.argmax(sizes)) + 1)
    return np.asarray(out, dtype=bool)


def entropy_uncertainty(probability: np.ndarray, mask: np.ndarray, margin: int = 5) -> float:
    """Mean binary entropy (bits) of ``probability`` inside ``mask`` dilated by ``margin`` pixels.

    Example:
        >>> p = np.full((8, 8), 0.5, np.float32); m = np.zeros((8, 8), bool); m[3:5, 3:5] = True
        >>> entropy_uncertainty(p, m), entropy_uncertainty(np.zeros((8, 8), np.float32), m * False)
        (1.0, 0.0)
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    if mask.any() and margin >= 1 and mask.ndim == 2:
        # ``margin`` dilations by a 3 x 3 square are one by a (2 margin + 1) square (OpenCV: faster)
        region = cv2.dilate(mask.view(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8)).view(bool)
    elif mask.any():  # margin 0 is SciPy's iterations=0: dilate until nothing changes
        region = ndimage.binary_dilation(mask, structure=np.ones((3,) * mask.ndim, bool), iterations=max(0, margin))
    else:
        region = probability > 0.05
    if not region.any():
        return 0.0
    p = np.clip(probability[region].astype(np.float64), 1e-7, 1 - 1e-7)
    h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return float(h.mean())


class Segmenter(abc.ABC):
    """Base class: input checks, the NumPy/torch boundary, thresholding and per-frame results.

    Subclasses implement :meth:`_logits_numpy` on a checked float32 ``(B, 1, H, W)`` array.

    Args:
        threshold: Probability above which a pixel is lesion.
        largest_component: Keep only the largest connected component.
        uncertainty_margin: Dilation (pixels) of the mask for the uncertainty score.
    """

    name: str = "segmenter"

    def __init__(self, *, threshold: float = 0.5, largest_component: bool = False, uncertainty_margin: int = 5) -> None:
        if not (isinstance(threshold, int | float) and 0.0 < float(threshold) < 1.0):
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        self.threshold = float(threshold)
        self.largest_component = bool(largest_component)
        self.uncertainty_margin = int(uncertainty_margin)

    @abc.abstractmethod
    def _logits_numpy(self, x: np.ndarray) -> np.ndarray:
        """``(B, 1, H, W)`` float32 in [0, 1] -> float32 logits of the same shape."""

    def settings(self) -> dict[str, Any]:
        """The settings that change outputs, for provenance (saved next to them)."""
        return {
            "name": self.name,
            "threshold": self.threshold,
            "largest_component": self.largest_component,
            "uncertainty_margin": self.uncertainty_margin,
        }

    def logits(self, x: Any) -> Any:
        """Lesion logits, ``(B, 1, H, W)``, same type (NumPy or torch) and device as ``x``."""
        is_torch = type(x).__module__.startswith("torch")
        arr = check_batch(x.detach().to("cpu").float().numpy() if is_torch else np.asarray(x))
        out = self._logits_numpy(arr).astype(np.float32, copy=False)
        if out.shape != arr.shape:  # a contract violation inside usher2, not bad input
            raise RuntimeError(f"{self.name} returned shape {out.shape} for input {arr.shape}")
        if is_torch:
            import torch

            return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)
        return out

    def predict_proba(self, x: Any) -> np.ndarray:
        """``(B, 1, H, W)`` float32 lesion probability (NumPy)."""
        z = self.logits(x)
        z = z.detach().cpu().numpy() if not isinstance(z, np.ndarray) else z
        return (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)

    def _masks(self, prob: np.ndarray, threshold: float | None) -> np.ndarray:
        t = self.threshold if threshold is None else float(threshold)
        return np.stack([postprocess_mask(p[0] > t, largest_component=self.largest_component)[None] for p in prob])

    def predict_mask(self, x: Any, threshold: float | None = None) -> np.ndarray:
        """``(B, 1, H, W)`` bool post-processed masks (``threshold`` defaults to the segmenter's)."""
        return self._masks(self.predict_proba(x), threshold)

    def segment(self, x: Any) -> list[Segmentation]:
        """One :class:`Segmentation` per frame of a ``(B, 1, H, W)`` batch."""
        prob = self.predict_proba(x)
        masks = self._masks(prob, None)
        return [
            Segmentation(
                probability=prob[b, 0],
                mask=masks[b, 0],
                uncertainty=entropy_uncertainty(prob[b, 0], masks[b, 0], self.uncertainty_margin),
                no_lesion=not masks[b, 0].any(),
            )
            for b in range(prob.shape[0])
        ]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "name")
        return f"{type(self).__name__}({args})"
