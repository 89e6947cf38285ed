"""Heat maps of a frame: the CAM of the deep backbone's ROI crop, on the crop and pasted into the frame.

**Input.** :func:`explain_frame` feeds the backbone exactly what
:class:`~usher2.features.deep.DeepExtractor` feeds it: :meth:`DeepExtractor.crops` (the mask's
box grown by the margin, black beyond the frame, resized to the input size, grey to 3 channels,
normalised). The CAM therefore explains the features that ``usher2 extract`` writes.

**Paste-back.** :func:`paste_back` takes the box from :func:`~usher2.features.deep.roi_box`, the
function :func:`~usher2.features.deep.roi_crop` crops with, resizes the heat to the box
(bilinear) and pastes the part inside the frame. Outside the box (margin included) the heat is 0.

**Overlay.** :func:`overlay` blends OpenCV's JET colour map into the grey frame (``alpha`` of
colour); on the full frame only inside the ROI box, so the rest stays readable.
:func:`save_cam_pngs` writes ``<case>_frame.png`` and ``<case>_roi.png`` atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from usher2.explain.cam import explain
from usher2.explain.targets import PooledFeatureTarget
from usher2.features.deep import BackboneSpec, DeepExtractor, roi_box, roi_crop
from usher2.io.atomic import atomic_path
from usher2.io.errors import InputError

__all__ = ["FrameCAM", "explain_frame", "overlay", "paste_back", "save_cam_pngs"]


@dataclass(frozen=True)
class FrameCAM:
    """The heat map of one frame.

    Attributes:
        roi: ``(h, w)`` float32 grey ROI crop (the backbone's input before normalisation).
        roi_heat: ``(h, w)`` float32 CAM on the crop, in [0, 1].
        frame_heat: ``(H, W)`` float32 CAM pasted into the frame; 0 outside the ROI box.
        box: ``(y0, y1, x0, x1)`` of the ROI box clipped to the frame (end exclusive).
        method: The CAM method.
    """

    roi: np.ndarray
    roi_heat: np.ndarray
    frame_heat: np.ndarray
    box: tuple[int, int, int, int]
    method: str


def paste_back(
    heat: np.ndarray, mask: np.ndarray, *, margin: float = 0.1
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Resample a crop-sized map into the frame where :func:`roi_crop` took the crop from.

    Args:
        heat: ``(h, w)`` map on the ROI crop (any ``h, w``: the crop size).
        mask: ``(H, W)`` bool lesion mask the crop was made from.
        margin: The crop's margin, as given to :func:`roi_crop`.

    Returns:
        ``(H, W)`` float32 map (0 outside the box) and the box ``(y0, y1, x0, x1)`` clipped to the frame.

    Example:
        >>> m = np.zeros((40, 60), bool); m[10:20, 20:30] = True
        >>> full, box = paste_back(np.ones((32, 32), np.float32), m)
        >>> box, float(full.sum()) == (box[1] - box[0]) * (box[3] - box[2])
        ((6, 24, 16, 34), True)
    """
    heat = np.asarray(heat, np.float32)
    if heat.ndim != 2:
        raise InputError("heat", "a 2-D (h, w) map", f"shape {heat.shape}")
    h, w = mask.shape
    y0, y1, x0, x1 = roi_box(np.asarray(mask, bool), margin=margin)
    big = cv2.resize(heat, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    full = np.zeros((h, w), np.float32)
    full[cy0:cy1, cx0:cx1] = big[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    return full, (cy0, cy1, cx0, cx1)


def explain_frame(
    frame: np.ndarray,
    mask: np.ndarray,
    *,
    backbone: str | BackboneSpec | DeepExtractor = "usresnet10t",
    method: str = "gradcam",
    target: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> FrameCAM:
    """The CAM of a frame's ROI crop through a deep backbone, on the crop and in the frame.

    Args:
        frame: ``(H, W)`` grey frame in [0, 1].
        mask: ``(H, W)`` bool lesion mask.
        backbone: A :class:`DeepExtractor` (reused: no rebuild) or a backbone spec for one (CPU).
        method: A name in :data:`~usher2.explain.cam.CAM_METHODS`.
        target: Callable on the backbone's pooled features; default :class:`PooledFeatureTarget` (their sum).

    Raises:
        InputError: Frame and mask shapes differ, the mask is empty, or the method is unknown.

    Example:
        >>> import warnings
        >>> from usher2.features.deep import RandomInitWarning
        >>> _ = torch.manual_seed(0)
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", RandomInitWarning)
        ...     ex = DeepExtractor("resnet10t=random", device="cpu")
        >>> m = np.zeros((96, 128), bool); m[30:60, 40:90] = True
        >>> r = explain_frame(np.random.default_rng(0).random((96, 128), dtype=np.float32), m, backbone=ex)
        >>> r.frame_heat.shape, r.roi_heat.shape, r.box, float(r.frame_heat[:, :30].max())
        ((96, 128), (176, 176), (26, 64, 35, 95), 0.0)
    """
    frame = np.asarray(frame, np.float32)
    mask = np.asarray(mask, bool)
    if frame.ndim != 2:
        raise InputError("frame", "a grey (H, W) frame", f"shape {frame.shape}")
    ex = backbone if isinstance(backbone, DeepExtractor) else DeepExtractor(backbone, device="cpu")
    x = torch.from_numpy(ex.crops([frame], [mask])).to(ex.device)
    roi = roi_crop(frame, mask, ex.input_size, margin=ex.margin)
    heat = explain(ex.inference_model, x, method=method, targets=[target or PooledFeatureTarget()])[0]
    full, box = paste_back(heat, mask, margin=ex.margin)
    return FrameCAM(roi=roi, roi_heat=heat, frame_heat=full, box=box, method=method)


def overlay(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.4, where: np.ndarray | None = None) -> np.ndarray:
    """A JET heat map blended into a grey image: ``(H, W, 3)`` RGB uint8.

    Args:
        image: ``(H, W)`` grey in [0, 1] (or ``(H, W, 3)`` RGB in [0, 1]).
        heat: ``(H, W)`` map in [0, 1].
        alpha: Weight of the colour (0 = the image only).
        where: ``(H, W)`` bool: blend only there (default everywhere).

    Example:
        >>> out = overlay(np.zeros((4, 4), np.float32), np.ones((4, 4), np.float32), alpha=1.0)
        >>> out.shape, out.dtype.name, out[0, 0].tolist()  # JET at 1: dark red
        ((4, 4, 3), 'uint8', [128, 0, 0])
    """
    img = np.asarray(image, np.float32)
    heat = np.asarray(heat, np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[:2] != heat.shape or img.shape[2:] != (3,):
        raise InputError("heat", f"a map of the image's shape {img.shape[:2]}", f"shape {heat.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError("alpha", "a weight in [0, 1]", repr(alpha))
    colour = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255 + 0.5), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    a = np.full(heat.shape, alpha, np.float32) if where is None else np.where(where, np.float32(alpha), 0.0)
    out = (1.0 - a[..., None]) * np.clip(img, 0, 1) + a[..., None] * colour
    return np.uint8(np.clip(out * 255.0 + 0.5, 0, 255))


def save_cam_pngs(
    frame: np.ndarray, result: FrameCAM, out_dir: str | Path, case: str, *, alpha: float = 0.4
) -> list[Path]:
    """Write ``<case>_frame.png`` (overlay inside the ROI box) and ``<case>_roi.png``, atomically.

    Example:
        >>> import tempfile
        >>> r = FrameCAM(np.zeros((8, 8), np.float32), np.ones((8, 8), np.float32),
        ...              np.zeros((16, 16), np.float32), (4, 12, 4, 12), "gradcam")
        >>> with tempfile.TemporaryDirectory() as d:
        ...     [p.name for p in save_cam_pngs(np.zeros((16, 16), np.float32), r, d, "bus_0001-l")]
        ['bus_0001-l_frame.png', 'bus_0001-l_roi.png']
    """
    frame = np.asarray(frame, np.float32)
    y0, y1, x0, x1 = result.box
    where = np.zeros(frame.shape, bool)
    where[y0:y1, x0:x1] = True
    images = {
        f"{case}_frame.png": overlay(frame, result.frame_heat, alpha=alpha, where=where),
        f"{case}_roi.png": overlay(result.roi, result.roi_heat, alpha=alpha),
    }
    paths = []
    for name, rgb in images.items():
        path = Path(out_dir) / name
        with atomic_path(path) as tmp:
            if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {path}")
        paths.append(path)
    return paths
