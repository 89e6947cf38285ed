"""True-2D (and 3D) radiomics through pyradiomics, with named columns and provenance.

**True 2D.** An ultrasound frame goes to pyradiomics as a 2D SimpleITK image. pyradiomics then
computes 2D shape (``shape2D``), texture matrices over the 4 in-plane directions, 4 wavelet
sub-bands (LL, LH, HL, HH) and a 2D LoG. ``force2D`` on a 1 x H x W volume is rejected with an
error: that path silently skips LoG, computes meaningless 3D shape features and is about 11x
slower. On a real 3D volume ``force2D`` (slice-by-slice texture) stays allowed.

**Parameters** are a YAML file in pyradiomics' own format (``imageType``, ``featureClass``,
``setting``, ``voxelSetting``), or the same as a dict. The default (:data:`DEFAULT_PARAMS`):

* Original, Wavelet, and LoG with sigma 1, 2 and 3 (mm when the pixel spacing is known, else pixels);
* every feature class (``shape2D`` for 2D inputs, ``shape`` for 3D);
* ``binWidth: 8`` on 0-255 grey levels (about 32 bins over a full-range frame);
* no resampling (add ``resampledPixelSpacing`` to resample to isotropic spacing).

A parameter set must fix either ``binWidth`` or ``binCount``: pyradiomics' silent default
(``binWidth: 25``) is rarely what a user means.

**Columns** are ``radiomics_<imagetype>_<class>_<feature>``, with pyradiomics' own image-type
names, e.g. ``radiomics_original_glcm_Contrast``, ``radiomics_wavelet-LH_firstorder_Mean``,
``radiomics_log-sigma-1-0-mm-3D_glszm_ZoneEntropy``. pyradiomics calls every LoG image ``-3D``,
also when it filters a 2D image in 2D. The name is kept so that columns match pyradiomics'.
"""

from __future__ import annotations

import hashlib
import json
import logging
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from usher2.io.errors import InputError

__all__ = ["DEFAULT_PARAMS", "PREFIX", "RadiomicsExtractor", "load_params"]

PREFIX = "radiomics_"
DEFAULT_PARAMS: dict[str, Any] = {
    "imageType": {"Original": {}, "Wavelet": {}, "LoG": {"sigma": [1.0, 2.0, 3.0]}},
    "featureClass": {c: None for c in ("shape2D", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")},
    "setting": {"binWidth": 8, "label": 1, "normalize": False, "correctMask": True},
}
_TOP_KEYS = {"imageType", "featureClass", "setting", "voxelSetting"}


def load_params(params: str | Path | dict[str, Any] | None = None) -> dict[str, Any]:
    """A checked parameter dict from a pyradiomics YAML file, a dict or ``None`` (the default).

    Raises:
        InputError: The file is missing or not YAML, an unknown top-level key, or neither
            ``binWidth`` nor ``binCount`` is set.

    Example:
        >>> load_params()["setting"]["binWidth"]
        8
    """
    source: str | Path = "radiomics parameters"
    if params is None:
        out = deepcopy(DEFAULT_PARAMS)
    elif isinstance(params, dict):
        out = deepcopy(params)
    else:
        source = Path(params)
        if not source.is_file():
            raise InputError(source, "a pyradiomics parameter file (YAML)", "no such file")
        try:
            out = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise InputError(source, "a pyradiomics parameter file (YAML)", f"invalid YAML ({exc})") from exc
        if not isinstance(out, dict):
            raise InputError(source, "a YAML mapping (imageType, featureClass, setting)", type(out).__name__)
    unknown = sorted(set(out) - _TOP_KEYS)
    if unknown:
        raise InputError(source, f"top-level keys among {sorted(_TOP_KEYS)}", f"unknown keys {unknown}")
    setting = out.setdefault("setting", {}) or {}
    out["setting"] = setting
    if "binWidth" not in setting and "binCount" not in setting:
        raise InputError(
            source,
            "an explicit setting.binWidth or setting.binCount",
            "neither",
            fix="add e.g. 'binWidth: 8' under 'setting:' (pyradiomics would silently use 25)",
        )
    out.setdefault("imageType", {"Original": {}})
    if not out.get("featureClass"):  # pyradiomics' "all" would include 3D shape for 2D frames
        out["featureClass"] = deepcopy(DEFAULT_PARAMS["featureClass"])
    return out


def _to_sitk(array: Any, spacing: Any, what: str) -> Any:
    import SimpleITK as sitk

    if isinstance(array, sitk.Image):
        return array
    a = np.asarray(array)
    if a.ndim not in (2, 3):
        raise InputError(what, "a 2D (H, W) or 3D (D, H, W) array", f"shape {a.shape}")
    img = sitk.GetImageFromArray(a)
    if spacing is not None:
        sp = [float(s) for s in spacing]
        if len(sp) != a.ndim or not all(np.isfinite(s) and s > 0 for s in sp):
            raise InputError("spacing", f"{a.ndim} positive numbers in array-axis order", str(list(spacing)))
        img.SetSpacing(sp[::-1])  # SimpleITK orders axes x, y, z; NumPy z, y, x
    return img


class RadiomicsExtractor:
    """pyradiomics with usher2's defaults, checks and column names.

    Args:
        params: A pyradiomics YAML file, a dict in that format, or ``None`` for :data:`DEFAULT_PARAMS`.

    Example:
        >>> yy, xx = np.mgrid[:64, :64]
        >>> img = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.float32)
        >>> mask = ((yy - 32) ** 2 + (xx - 32) ** 2 < 15**2).astype(np.uint8)
        >>> row = RadiomicsExtractor({"setting": {"binWidth": 8}}).extract(img, mask)
        >>> bool(np.isclose(row["radiomics_original_firstorder_Mean"], img[mask > 0].mean()))
        True
        >>> sorted({k.split("_")[2] for k in row})
        ['firstorder', 'glcm', 'gldm', 'glrlm', 'glszm', 'ngtdm', 'shape2D']
    """

    def __init__(self, params: str | Path | dict[str, Any] | None = None) -> None:
        self.params = load_params(params)
        self._extractors: dict[int, Any] = {}

    def _params_for(self, ndim: int) -> dict[str, Any]:
        """Swap ``shape``/``shape2D`` to the input's dimensionality."""
        p = deepcopy(self.params)
        classes = p.get("featureClass")
        if classes and ndim == 2 and "shape" in classes:
            classes["shape2D"] = classes.pop("shape")
        if classes and ndim == 3 and "shape2D" in classes and not p["setting"].get("force2D"):
            classes["shape"] = classes.pop("shape2D")
        return p

    def _extractor(self, ndim: int) -> Any:
        if ndim not in self._extractors:
            import radiomics
            from radiomics import featureextractor

            radiomics.setVerbosity(logging.ERROR)  # pyradiomics logs every filter at INFO
            radiomics.logger.setLevel(logging.ERROR)
            self._extractors[ndim] = featureextractor.RadiomicsFeatureExtractor(self._params_for(ndim))
        return self._extractors[ndim]

    def extract(self, image: Any, mask: Any, spacing: Any = None) -> dict[str, float]:
        """One feature row for an image and its lesion mask.

        Args:
            image: ``(H, W)`` or ``(D, H, W)`` array (or a SimpleITK image).
            mask: Same shape; non-zero pixels are the region (or a SimpleITK label image).
            spacing: Pixel size in mm per array axis; ``None``: pixels.

        Returns:
            ``{column: value}``, columns named as in the module docstring.

        Raises:
            InputError: Mismatched shapes, an empty mask, a mask pyradiomics cannot use (too
                small), or ``force2D`` on a single-slice input.
        """
        import SimpleITK as sitk

        img = _to_sitk(np.asarray(image, np.float32) if not isinstance(image, sitk.Image) else image, spacing, "image")
        if isinstance(mask, sitk.Image):
            msk = mask
        else:
            m = np.asarray(mask)
            if m.shape != tuple(reversed(img.GetSize())):
                raise InputError("mask", f"the image's shape {tuple(reversed(img.GetSize()))}", f"shape {m.shape}")
            if not m.any():
                raise InputError("mask", "a mask with at least one region pixel", "an empty mask")
            msk = _to_sitk((m != 0).astype(np.uint8), None, "mask")
            msk.CopyInformation(img)
        size = img.GetSize()
        single_slice = img.GetDimension() == 2 or min(size) == 1
        if single_slice and self.params["setting"].get("force2D"):
            raise InputError(
                "radiomics parameters",
                "no setting.force2D for a 2D frame (usher2 passes frames as true 2D images)",
                f"force2D: true on an image of size {size}",
                fix="remove force2D: on a 1 x H x W volume it skips LoG, gives meaningless 3D shape features "
                "and is about 11x slower",
            )
        try:
            result = self._extractor(img.GetDimension()).execute(img, msk)
        except (ValueError, RuntimeError, IndexError) as exc:
            raise InputError("mask", "a region pyradiomics can measure", f"{type(exc).__name__}: {exc}") from exc
        return {PREFIX + k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}

    def provenance(self) -> dict[str, Any]:
        """Package versions and the parameters, to store with a feature table."""
        import pywt
        import radiomics
        import SimpleITK as sitk

        text = json.dumps(self.params, sort_keys=True, default=str)
        return {
            "pyradiomics": radiomics.__version__,
            "SimpleITK": sitk.Version_VersionString(),
            "PyWavelets": pywt.__version__,
            "numpy": np.__version__,
            "params": self.params,
            "params_sha256": hashlib.sha256(text.encode()).hexdigest(),
        }
