"""The torch radiomics engine: pyradiomics' 2D columns for a batch of frames, from the class modules.

:class:`TorchRadiomics` takes the same parameters as
:class:`~usher2.features.radiomics.RadiomicsExtractor` (a pyradiomics YAML file or dict; usher2's
default: Original, Wavelet and LoG sigma 1, 2, 3, every class, ``binWidth`` 8) and the same
optional ``columns`` subset, and returns the same columns (``radiomics_<image>_<class>_<feature>``)
for a whole batch at once:

1. the frames are padded into one ``(B, H, W)`` float64 batch (top-left; each frame's size is kept
   for the filters, whose borders depend on it) and every ROI is checked as pyradiomics' ``checkMask``
   checks it (fewer than 2 dimensions is an error naming the frame; numpy decides, ``check_roi``
   words a refusal);
2. the ROI pixels' layout (:class:`~usher2.features.torchrad.discretise.RoiPixels`) is built once:
   where each ROI's pixels lie in the frames and in its bounding box, and their neighbour pairs;
3. shape (``shape2D``) on the original mask with each frame's spacing;
4. per image type (Original, then the Wavelet bands and the LoG sigmas the plan needs, filtered on
   the whole frames as pyradiomics does; on the CPU only each ROI's bounding box of each filtered
   image is computed, :func:`~usher2.features.torchrad.filters.wavelet_boxes` and
   :func:`~usher2.features.torchrad.filters.log_boxes`, one frame at a time so that the work
   follows each box: the same values; on other devices the whole frames in one batch): only the
   ROI pixels are gathered (``(N,)`` values,
   rounded to float32 as pyradiomics stores a filtered image), discretised per ROI
   (:func:`~usher2.features.torchrad.discretise.bin_pixels`); first order and GLCM take those
   pixel lists directly, the other classes a ``(B, h, w)`` binned image of each ROI's bounding
   box (``h``, ``w`` the largest box; 0 outside the ROI), scattered from them;
5. the rows: one ``(B, columns)`` tensor, one ``tolist``.

**Supported settings.** ``binWidth`` or ``binCount``, ``voxelArrayShift``, ``gldm_a``,
``weightingNorm``, ``label`` 1, ``correctMask``, ``minimumROIDimensions`` (<= 2),
``minimumROISize``; image types Original, Wavelet (pyradiomics' defaults: ``coif1``, level 1,
start level 0) and LoG. Anything else (``normalize``, resampling, other filters, other wavelets,
3D volumes) is refused by :func:`unsupported` with its name; the pyradiomics backend computes it.

A frame that cannot be measured (an empty ROI, fewer than 2 dimensions) gets an
:class:`~usher2.io.errors.InputError` in its place in :meth:`TorchRadiomics.extract_batch`; the
other frames of the batch are unaffected (each ROI's values do not depend on the others).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usher2.features.radiomics import PREFIX, load_params, log_name, plan_columns
from usher2.features.torchrad import filters, firstorder, glcm, gldm, glrlm, glszm, ngtdm, shape2d
from usher2.features.torchrad.discretise import RoiPixels, bin_pixels, check_roi, crop_boxes
from usher2.io.errors import InputError

__all__ = ["CLASSES", "TorchRadiomics", "full_columns", "unsupported"]

#: The torch module of each pyradiomics feature class.
CLASSES = {
    "firstorder": firstorder,
    "shape2D": shape2d,
    "glcm": glcm,
    "glrlm": glrlm,
    "glszm": glszm,
    "gldm": gldm,
    "ngtdm": ngtdm,
}
_SETTINGS = {
    "binWidth",
    "binCount",
    "label",
    "normalize",
    "correctMask",
    "voxelArrayShift",
    "gldm_a",
    "weightingNorm",
    "minimumROIDimensions",
    "minimumROISize",
    "additionalInfo",
    "padDistance",
    "geometryTolerance",
}
_DEFAULT_OFF = {"normalize": False, "label": 1, "resampledPixelSpacing": None, "interpolator": None}


def unsupported(params: dict[str, Any]) -> str | None:
    """Why the torch backend cannot compute ``params`` (None: it can).

    Example:
        >>> unsupported(load_params()) is None
        True
        >>> unsupported({**load_params(), "setting": {"binWidth": 8, "normalize": True}})
        'setting normalize=True'
    """
    setting = params.get("setting") or {}
    for key, value in setting.items():
        if key not in _SETTINGS:
            return f"setting {key}"
        if key in _DEFAULT_OFF and value != _DEFAULT_OFF[key]:
            return f"setting {key}={value!r}"
    if int(setting.get("minimumROIDimensions", 2)) > 2:
        return "setting minimumROIDimensions > 2 (a 2D frame has 2)"
    for kind, args in (params.get("imageType") or {}).items():
        if kind not in ("Original", "Wavelet", "LoG"):
            return f"image type {kind}"
        if kind == "Wavelet" and set(args or {}) - {"binWidth"}:
            return f"Wavelet arguments {sorted(args)} (only pyradiomics' defaults: coif1, level 1)"
        if kind == "LoG" and set(args or {}) - {"sigma", "binWidth"}:
            return f"LoG arguments {sorted(args)}"
    for cls in params.get("featureClass") or {}:
        if cls not in CLASSES:
            return f"feature class {cls}"
    if params.get("voxelSetting"):
        return "voxelSetting"
    return None


def full_columns(params: dict[str, Any]) -> list[str]:
    """Every column ``params`` produce, in pyradiomics' order (shape first, then each image type's
    classes in ``featureClass`` order, each class's features as its torch module lists them)."""
    types = params.get("imageType") or {}
    classes = params.get("featureClass") or {}
    names: list[str] = []
    if "Original" in types:
        names.append("original")
    if "Wavelet" in types:
        names += list(filters.WAVELET_NAMES)
    if "LoG" in types:
        names += [log_name(s) for s in (types["LoG"] or {}).get("sigma", [])]
    cols = [
        f"{PREFIX}original_shape2D_{f}" for f in (classes.get("shape2D") or shape2d.FEATURES) if "shape2D" in classes
    ]
    for name in names:
        for cls, feats in classes.items():
            if cls != "shape2D":
                cols += [f"{PREFIX}{name}_{cls}_{f}" for f in (feats or CLASSES[cls].FEATURES)]
    return cols


def _batch(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The frames (float32 values as float64) and masks padded top-left into one batch, and the sizes."""
    h = max(a.shape[0] for a in images)
    w = max(a.shape[1] for a in images)
    image = torch.zeros((len(images), h, w), dtype=torch.float64, device=device)
    mask = torch.zeros((len(images), h, w), dtype=torch.bool, device=device)
    for k, (a, m) in enumerate(zip(images, masks, strict=True)):
        image[k, : a.shape[0], : a.shape[1]] = torch.from_numpy(np.asarray(a, np.float32).astype(np.float64))
        mask[k, : m.shape[0], : m.shape[1]] = torch.from_numpy(np.asarray(m) != 0)
    sizes = torch.tensor([a.shape for a in images], dtype=torch.int64, device=device)
    return image, mask, sizes


def _box_index(pixels: RoiPixels, boxes: torch.Tensor) -> torch.Tensor:
    """``(N,)`` each ROI pixel's position in the concatenated, flattened per-frame box images
    (``boxes`` ``(B, 4)`` from :func:`~usher2.features.torchrad.discretise.crop_boxes`)."""
    _, h, w = pixels.shape
    heights, widths = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    start = torch.cumsum(heights * widths, 0) - heights * widths
    y = torch.div(pixels.index, w, rounding_mode="floor") % h - pixels.per_pixel(boxes[:, 0])
    x = pixels.index % w - pixels.per_pixel(boxes[:, 2])
    return pixels.per_pixel(start) + y * pixels.per_pixel(widths) + x


class TorchRadiomics:
    """pyradiomics' 2D features, batched in torch (see the module docstring).

    Args:
        params: A pyradiomics YAML file, a dict in that format, or None (usher2's defaults).
        columns: Compute only these columns (as ``RadiomicsExtractor(columns=...)``); None: all.
        device: Torch device (None: the CPU).

    Raises:
        InputError: Parameters the torch backend does not support (named), or a column the
            parameters do not produce.

    Example:
        >>> yy, xx = np.mgrid[:48, :48]
        >>> img = (np.random.default_rng(0).random((48, 48)) * 255).astype(np.float32)
        >>> mask = (yy - 24) ** 2 + (xx - 24) ** 2 < 12**2
        >>> cols = ["radiomics_original_firstorder_Mean", "radiomics_original_glcm_Contrast"]
        >>> row = TorchRadiomics(columns=cols).extract(img, mask)
        >>> list(row) == cols, bool(np.isclose(row[cols[0]], img[mask].astype(float).mean(), rtol=1e-12))
        (True, True)
    """

    def __init__(
        self,
        params: str | Path | dict[str, Any] | None = None,
        *,
        columns: Sequence[str] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.params = load_params(params)
        why = unsupported(self.params)
        if why is not None:
            raise InputError(
                "radiomics parameters", "settings the torch backend computes", why, fix="use the pyradiomics backend"
            )
        self.columns = list(dict.fromkeys(columns)) if columns is not None else full_columns(self.params)
        self.plan = plan_columns(self.params, self.columns)
        self.device = torch.device(device or "cpu")
        setting = self.params["setting"]
        self._bins = {"bin_width": setting.get("binWidth"), "bin_count": setting.get("binCount")}
        if self._bins["bin_count"] is not None:
            self._bins["bin_width"] = None

    def provenance(self) -> dict[str, Any]:
        """The backend, package versions and parameters, to store with a feature table (as
        :meth:`RadiomicsExtractor.provenance <usher2.features.radiomics.RadiomicsExtractor.provenance>`)."""
        import hashlib
        import json

        import usher2

        text = json.dumps(self.params, sort_keys=True, default=str)
        return {
            "backend": "torch",
            "usher2": usher2.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "device": str(self.device),
            "reference": "pyradiomics-bhklab 3.1.4 (equal to float tolerance: tests/features/torchrad)",
            "columns": list(self.columns),
            "params": self.params,
            "params_sha256": hashlib.sha256(text.encode()).hexdigest(),
        }

    def extract(self, image: Any, mask: Any, spacing: Any = None) -> dict[str, float]:
        """One frame's row (as :meth:`RadiomicsExtractor.extract`).

        Raises:
            InputError: An empty mask, a mask of another shape, or a region pyradiomics cannot measure.
        """
        row = self.extract_batch([image], [mask], None if spacing is None else [spacing])[0]
        if isinstance(row, InputError):
            raise row
        return row

    def extract_batch(
        self, images: Sequence[Any], masks: Sequence[Any], spacings: Sequence[Any] | None = None
    ) -> list[dict[str, float] | InputError]:
        """One row per frame (``{column: value}`` in :attr:`columns` order), or the frame's error.

        Args:
            images: ``(H, W)`` grey levels (pixels x 255), any sizes.
            masks: ``(H, W)`` masks of the same shapes (non-zero: the ROI).
            spacings: Pixel size in mm per array axis per frame; None: pixels.
        """
        if not len(images):
            return []
        pairs = enumerate(zip(images, masks, strict=True))
        errors: list[InputError | None] = [self._check(k, a, m) for k, (a, m) in pairs]
        good = [k for k, e in enumerate(errors) if e is None]
        table = self._compute([images[k] for k in good], [masks[k] for k in good], spacings, good) if good else []
        rows = {k: dict(zip(self.columns, values, strict=True)) for k, values in zip(good, table, strict=True)}
        return [rows[k] if k in rows else errors[k] for k in range(len(images))]  # type: ignore[misc]

    def _check(self, k: int, image: Any, mask: Any) -> InputError | None:
        a, m = np.asarray(image), np.asarray(mask)
        if a.ndim != 2:
            return InputError(f"frame {k}", "a 2D (H, W) image (the torch backend is 2D)", f"shape {a.shape}")
        if m.shape != a.shape:
            return InputError(f"frame {k} mask", f"the image's shape {a.shape}", f"shape {m.shape}")
        roi = m != 0
        rows, cols = roi.any(1), roi.any(0)
        if not rows.any():
            return InputError(f"frame {k} mask", "a mask with at least one region pixel", "an empty mask")
        setting = self.params["setting"]
        dims = int(np.ptp(np.flatnonzero(rows)) > 0) + int(np.ptp(np.flatnonzero(cols)) > 0)
        small = setting.get("minimumROISize") is not None and int(roi.sum()) <= setting["minimumROISize"]
        if dims == 0 or dims < int(setting.get("minimumROIDimensions", 2)) or small:
            try:  # check_roi words the refusal
                check_roi(
                    torch.from_numpy(roi)[None],
                    minimum_dimensions=int(setting.get("minimumROIDimensions", 2)),
                    minimum_size=setting.get("minimumROISize"),
                )
            except InputError as exc:
                return InputError(f"frame {k} mask", "a region pyradiomics can measure", exc.got)
        return None

    def _compute(
        self, images: list[Any], masks: list[Any], spacings: Sequence[Any] | None, index: list[int]
    ) -> list[list[float]]:
        """Each frame's values in :attr:`columns` order."""
        image, mask, sizes = _batch(images, masks, self.device)
        sp = [(1.0, 1.0) if spacings is None or spacings[k] is None else tuple(spacings[k]) for k in index]
        spacing = torch.tensor(sp, dtype=torch.float64, device=self.device)
        out: dict[str, torch.Tensor] = {}
        frame_pixels = RoiPixels.from_mask(mask)
        shape = self.plan.get("original", {}).get("shape2D")
        if shape:
            values = shape2d.compute(mask, spacing, names=shape, pixels=frame_pixels)
            out.update({f"{PREFIX}original_shape2D_{f}": v for f, v in values.items()})
        boxes = crop_boxes(mask)
        images_by_name = self._images(image, mask, sizes, spacing, boxes)
        box_index = _box_index(frame_pixels, boxes) if self.device.type == "cpu" else None
        # every class reads only the ROI pixels: gathered from the frames, binned, and scattered
        # into each ROI's bounding box for the classes that take a (B, h, w) binned image
        pixels = frame_pixels.cropped(boxes)
        for name, per_class in self.plan.items():
            texture = {c: fs for c, fs in per_class.items() if c != "shape2D"}
            if not texture:
                continue
            filtered = images_by_name[name]
            if isinstance(filtered, list):  # one box image per frame (the CPU path)
                values = torch.cat([c.reshape(-1) for c in filtered]).index_select(0, box_index)
            else:
                values = frame_pixels.values(filtered)
            # pyradiomics stores a filtered image in float32
            out.update(self._classes(name, values.to(torch.float32).to(torch.float64), pixels, spacing, texture))
        return torch.stack([out[c] for c in self.columns], 1).detach().cpu().tolist()

    def _images(
        self, image: torch.Tensor, mask: torch.Tensor, sizes: torch.Tensor, spacing: torch.Tensor, boxes: torch.Tensor
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """The image types the plan needs, filtered on the whole frames as pyradiomics does (the
        caller rounds the ROI pixels to float32 as pyradiomics stores them); a LoG sigma pyradiomics
        skips for a frame (too small) is NaN there. On the CPU the filters compute each frame's
        ROI box only (a list of ``(h_b, w_b)`` images: the same values, a fraction of the work);
        elsewhere the whole ``(B, H, W)`` frames in one batch (one kernel for all frames)."""
        wanted = [n for n, per_class in self.plan.items() if set(per_class) - {"shape2D"}]
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        bands = [n for n in wanted if n.startswith("wavelet")]
        if self.device.type == "cpu":
            if bands:
                out.update(filters.wavelet_boxes(image, sizes, boxes, names=bands))
            logs = [n for n in wanted if n.startswith("log-sigma-")]
            if logs:
                sigmas = [float(n.removeprefix("log-sigma-").removesuffix("-mm-3D").replace("-", ".")) for n in logs]
                out.update(
                    dict(zip(logs, filters.log_boxes(image, sizes, boxes, sigmas, spacing).values(), strict=True))
                )
            if "original" in wanted:
                out["original"] = image
            return out
        if bands:
            out.update(filters.wavelet(image, mask, sizes=sizes, names=bands))
        for name in (n for n in wanted if n.startswith("log-sigma-")):
            sigma = float(name.removeprefix("log-sigma-").removesuffix("-mm-3D").replace("-", "."))
            res = filters.log(image, mask, (sigma,), spacing, sizes=sizes)
            out[name] = next(iter(res.values())) if res else torch.full_like(image, float("nan"))
        if "original" in wanted:
            out["original"] = image
        return out

    def _classes(
        self,
        name: str,
        values: torch.Tensor,
        pixels: RoiPixels,
        spacing: torch.Tensor,
        texture: dict[str, list[str]],
    ) -> dict[str, torch.Tensor]:
        """The texture and first-order features of one image type from its ROI pixels ``values`` ``(N,)``."""
        setting = self.params["setting"]
        levels = bin_pixels(values, pixels, **self._bins)
        binned = pixels.scatter(levels) if set(texture) - {"firstorder", "glcm"} else None
        out: dict[str, torch.Tensor] = {}
        for cls, feats in texture.items():
            if cls == "firstorder":
                shift = float(setting.get("voxelArrayShift", 0))
                vals = firstorder.compute_pixels(
                    values, pixels, levels, names=feats, spacing=spacing, voxel_array_shift=shift
                )
            elif cls == "glcm":  # the weighting (off by default) uses the first frame's spacing
                pair = tuple(float(v) for v in spacing[0].tolist())
                vals = glcm.compute_pixels(
                    levels, pixels, feats, weighting_norm=setting.get("weightingNorm"), spacing=pair
                )
            elif cls == "gldm":
                vals = gldm.compute(binned, feats, alpha=setting.get("gldm_a", 0))
            else:
                vals = CLASSES[cls].compute(binned, feats)
            out.update({f"{PREFIX}{name}_{cls}_{f}": v for f, v in vals.items()})
        return out
