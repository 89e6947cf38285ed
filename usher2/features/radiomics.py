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

**Subsets.** ``RadiomicsExtractor(params, columns=[...])`` computes only the given columns, with
exactly the values the full extraction gives them (the same pyradiomics code on the same
preprocessed image): an image type none of them uses is never filtered (the Wavelet and LoG
filters and their texture matrices are most of the cost), a LoG sigma none of them uses is
skipped, and on each image type only the classes and features its columns name are computed.
:func:`restrict_params` gives the pyradiomics parameters of such a subset.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np

from usher2.io.config import check_keys, read_mapping
from usher2.io.errors import InputError

__all__ = [
    "DEFAULT_PARAMS",
    "PREFIX",
    "RadiomicsExtractor",
    "load_params",
    "log_name",
    "plan_columns",
    "pyradiomics_order",
    "restrict_params",
]

PREFIX = "radiomics_"
DEFAULT_PARAMS: dict[str, Any] = {
    "imageType": {"Original": {}, "Wavelet": {}, "LoG": {"sigma": [1.0, 2.0, 3.0]}},
    "featureClass": {c: None for c in ("shape2D", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")},
    "setting": {"binWidth": 8, "label": 1, "normalize": False, "correctMask": True},
}
_TOP_KEYS = {"imageType", "featureClass", "setting", "voxelSetting"}
#: Image-type name (the first part of a column after the prefix) -> the pyradiomics image type
#: (``imageType`` key) whose filter yields it; LoG and Wavelet yield several names each.
_IMAGE_TYPE_NAMES = {
    "original": "Original",
    "square": "Square",
    "squareroot": "SquareRoot",
    "logarithm": "Logarithm",
    "exponential": "Exponential",
    "gradient": "Gradient",
    "lbp-2D": "LBP2D",
}


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
        out = read_mapping(source, "a pyradiomics parameter file (YAML: imageType, featureClass, setting)")
    check_keys(source, out, _TOP_KEYS, "top-level keys")
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


def log_name(sigma: Any) -> str:
    """pyradiomics' image-type name of a LoG sigma (``imageoperations.getLoGImage``)."""
    return "log-sigma-%s-mm-3D" % (str(sigma).replace(".", "-"))  # noqa: UP031 - pyradiomics' own format


def pyradiomics_order(columns: Sequence[str]) -> list[str]:
    """``columns`` in the order pyradiomics returns them: each ``<image>_<class>`` block where it
    first appears, and within a block the features sorted as pyradiomics lists its
    ``get<Feature>FeatureValue`` methods (``inspect.getmembers``: by method name, so ``Mean``
    comes after ``MeanAbsoluteDeviation``).

    Example:
        >>> pyradiomics_order(["x_original_firstorder_Mean", "x_original_firstorder_MeanAbsoluteDeviation"])
        ['x_original_firstorder_MeanAbsoluteDeviation', 'x_original_firstorder_Mean']
    """
    blocks: dict[str, list[str]] = {}
    for c in columns:
        blocks.setdefault(c.rsplit("_", 1)[0], []).append(c)
    return [c for b in blocks.values() for c in sorted(b, key=lambda c: f"get{c.rsplit('_', 1)[1]}FeatureValue")]


def _image_type(name: str) -> str | None:
    """The ``imageType`` key whose filter yields the image-type name ``name`` (None: unknown)."""
    if name in _IMAGE_TYPE_NAMES:
        return _IMAGE_TYPE_NAMES[name]
    if re.fullmatch(r"wavelet\d*-[LH]+", name):
        return "Wavelet"
    if name.startswith("log-sigma-"):
        return "LoG"
    if name.startswith("lbp-3D-"):
        return "LBP3D"
    return None


def plan_columns(params: dict[str, Any], columns: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    """``{image-type name: {class: [features]}}`` for radiomics columns; checks each against ``params``."""
    from radiomics import getFeatureClasses

    classes = getFeatureClasses()
    types = params.get("imageType") or {}
    enabled = params.get("featureClass") or {}
    plan: dict[str, dict[str, list[str]]] = {}
    for col in columns:
        parts = col[len(PREFIX) :].split("_", 2) if col.startswith(PREFIX) else []
        if len(parts) != 3:
            raise InputError("radiomics columns", f"names like {PREFIX}<imagetype>_<class>_<feature>", repr(col))
        name, cls, feature = parts
        kind = _image_type(name)
        bad = None
        if kind is None or kind not in types:
            bad = f"image type {name!r} (enabled: {sorted(types)})"
        elif kind == "LoG" and name not in {log_name(s) for s in (types[kind] or {}).get("sigma", [])}:
            bad = f"LoG image {name!r} (sigmas {(types[kind] or {}).get('sigma', [])})"
        elif cls not in enabled or cls not in classes:
            bad = f"feature class {cls!r} (enabled: {sorted(enabled)})"
        elif cls.startswith("shape") and name != "original":
            bad = f"a shape feature on image {name!r} (shape is computed on the original image only)"
        elif classes[cls].getFeatureNames().get(feature, True) or (enabled[cls] and feature not in enabled[cls]):
            bad = f"feature {feature!r} of {cls} (not a pyradiomics feature, deprecated, or not enabled)"
        if bad:
            raise InputError(f"radiomics column {col!r}", "a column the radiomics parameters produce", bad)
        feats = plan.setdefault(name, {}).setdefault(cls, [])
        if feature not in feats:
            feats.append(feature)
    return plan


def restrict_params(params: str | Path | dict[str, Any] | None, columns: Sequence[str]) -> dict[str, Any]:
    """The pyradiomics parameters that compute no more than ``columns`` need.

    Only the image types (and LoG sigmas) with a needed column stay, and every class lists the
    features needed on some image type. Settings are unchanged, so values equal the full
    extraction's. (pyradiomics itself would compute the union of the classes on every image
    type; :class:`RadiomicsExtractor` with ``columns`` computes each image type's own share.)

    Raises:
        InputError: A column the parameters do not produce (unknown image type, class or
            feature, a LoG sigma not in the list, a shape feature of a filtered image), or no columns.

    Example:
        >>> cols = ["radiomics_original_shape2D_Elongation", "radiomics_log-sigma-2-0-mm-3D_glcm_Idm"]
        >>> p = restrict_params(None, cols)
        >>> p["imageType"], p["featureClass"]
        ({'Original': {}, 'LoG': {'sigma': [2.0]}}, {'shape2D': ['Elongation'], 'glcm': ['Idm']})
    """
    full = load_params(params)
    if not list(columns):
        raise InputError("radiomics columns", "at least one column", "none")
    plan = plan_columns(full, columns)
    types: dict[str, Any] = {}
    for name in plan:
        kind = _image_type(name)
        assert kind is not None  # _plan checked it
        args = deepcopy(full["imageType"][kind] or {})
        if kind == "LoG":
            args["sigma"] = [s for s in args.get("sigma", []) if log_name(s) in plan]
        types.setdefault(kind, args)
    classes: dict[str, list[str]] = {}
    for per_type in plan.values():
        for cls, feats in per_type.items():
            classes.setdefault(cls, [])
            classes[cls] += [f for f in feats if f not in classes[cls]]
    out = {k: deepcopy(v) for k, v in full.items() if k not in ("imageType", "featureClass")}
    return {"imageType": types, "featureClass": classes, **out}


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


def _subset_extractor(params: dict[str, Any], plan: dict[str, dict[str, list[str]]]) -> Any:
    """A pyradiomics extractor that computes, on each image type, only that type's share of ``plan``.

    pyradiomics applies one feature list to every image type; this subclass's ``computeFeatures``
    (the only method that reads it per image type) is pyradiomics' own with the image type's list
    from ``plan`` instead, and computes nothing for an image type without one. Everything else
    (loading, mask checks, cropping, filtering, shape) is pyradiomics' ``execute``. Nothing is
    mutated per call, so one instance may serve several threads.
    """
    from radiomics import featureextractor, getFeatureClasses

    classes = getFeatureClasses()

    class _SubsetExtractor(featureextractor.RadiomicsFeatureExtractor):
        def computeFeatures(self, image: Any, mask: Any, imageTypeName: str, **kwargs: Any) -> Any:
            out: collections.OrderedDict[str, Any] = collections.OrderedDict()
            for cls, names in plan.get(imageTypeName, {}).items():
                if cls.startswith("shape"):  # computed once, on the original image, by execute
                    continue
                feature_class = classes[cls](image, mask, **kwargs)
                for name in names:
                    feature_class.enableFeatureByName(name)
                for name, value in feature_class.execute().items():
                    out[f"{imageTypeName}_{cls}_{name}"] = value
            return out

    # diagnostics (image hashes, mask statistics) are dropped anyway and cost about 8 ms an ROI
    return _SubsetExtractor({**params, "setting": {**params["setting"], "additionalInfo": False}})


class RadiomicsExtractor:
    """pyradiomics with usher2's defaults, checks and column names.

    Example:
        >>> yy, xx = np.mgrid[:64, :64]
        >>> img = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.float32)
        >>> mask = ((yy - 32) ** 2 + (xx - 32) ** 2 < 15**2).astype(np.uint8)
        >>> row = RadiomicsExtractor({"setting": {"binWidth": 8}}).extract(img, mask)
        >>> bool(np.isclose(row["radiomics_original_firstorder_Mean"], img[mask > 0].mean()))
        True
        >>> sorted({k.split("_")[2] for k in row})
        ['firstorder', 'glcm', 'gldm', 'glrlm', 'glszm', 'ngtdm', 'shape2D']
        >>> some = ["radiomics_original_glcm_Contrast", "radiomics_wavelet-HH_firstorder_Mean"]
        >>> sub = RadiomicsExtractor(columns=some).extract(img, mask)
        >>> full = RadiomicsExtractor().extract(img, mask)
        >>> list(sub) == some and all(sub[c] == full[c] for c in some)
        True

    Args:
        params: A pyradiomics YAML file, a dict in that format, or ``None`` for :data:`DEFAULT_PARAMS`.
        columns: Compute only these columns (see "Subsets" in the module docstring); None: all.

    Raises:
        InputError: Bad parameters, or a column they do not produce.
    """

    def __init__(
        self, params: str | Path | dict[str, Any] | None = None, *, columns: Sequence[str] | None = None
    ) -> None:
        self.params = load_params(params)
        self.columns = None if columns is None else list(dict.fromkeys(columns))
        self._plan = None if self.columns is None else plan_columns(self.params, self.columns)
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
            if self._plan is None:
                self._extractors[ndim] = featureextractor.RadiomicsFeatureExtractor(self._params_for(ndim))
            else:
                params = restrict_params(self._params_for(ndim), self.columns or [])
                self._extractors[ndim] = _subset_extractor(params, self._plan)
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
        if self.columns is None:
            return {PREFIX + k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}
        missing = [c for c in self.columns if c[len(PREFIX) :] not in result]
        if missing:  # pyradiomics skips a filter it cannot apply (a LoG sigma too wide for the image)
            raise InputError("radiomics", "every requested column", f"{len(missing)} not computed ({missing[:3]})")
        return {c: float(result[c[len(PREFIX) :]]) for c in self.columns}

    def provenance(self) -> dict[str, Any]:
        """Package versions and the parameters, to store with a feature table."""
        import pywt
        import radiomics
        import SimpleITK as sitk

        text = json.dumps(self.params, sort_keys=True, default=str)
        subset = {} if self.columns is None else {"columns": list(self.columns)}
        return {
            **subset,
            "pyradiomics": radiomics.__version__,
            "SimpleITK": sitk.Version_VersionString(),
            "PyWavelets": pywt.__version__,
            "numpy": np.__version__,
            "params": self.params,
            "params_sha256": hashlib.sha256(text.encode()).hexdigest(),
        }
