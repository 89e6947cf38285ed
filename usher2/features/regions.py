"""Radiomics by region: the lesion's own row and the two regions around it.

**Regions.** Besides the lesion (all image types and classes of the parameters), radiomics
are computed on two regions around it, on the Original image with every texture class and
first order (no shape): ``peritumoral``, a ring outside the mask as wide as 20% of the lesion's
equivalent radius (at least 3 px), where an echogenic halo shows; and ``posterior``, the
rectangle straight below the lesion's bounding box, as tall as the lesion, outside the ring,
where acoustic shadowing or enhancement shows. Columns are ``radiomics_<region>_original_*``;
``peritumoral_area_px`` and ``posterior_area_px`` give the region sizes. A region smaller
than 16 px (a lesion touching the bottom edge has no posterior region) gets NaN features,
which the fusion core imputes inside its folds; the lesion's own features are never NaN.

* :func:`radiomics_row`: one frame's lesion radiomics, checked finite (an error, never a NaN row);
  :func:`radiomics_rows`: the same for many frames (one batched call with the torch backend);
* :func:`region_masks`: the peritumoral ring and the posterior region of a lesion mask;
* :func:`region_features`: the ``radiomics_<region>_original_*`` features and areas of those regions
  (:func:`region_rows`: of many frames, each region's extraction batched);
* :func:`disk`: the elliptical structuring element of the ring (and of the erode/dilate perturbations).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from usher2.features.config import ExtractConfig
from usher2.features.models import cached_model as _model
from usher2.features.models import radiomics_extractor
from usher2.io.errors import InputError

__all__ = ["MIN_REGION_PX", "disk", "radiomics_row", "radiomics_rows", "region_features", "region_masks", "region_rows"]

MIN_REGION_PX = 16


def disk(r: int) -> np.ndarray:
    """The elliptical structuring element of radius ``r``: ``(2r + 1, 2r + 1)`` uint8."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _finite(row: dict[str, float]) -> dict[str, float] | InputError:
    bad = [k for k, v in row.items() if not np.isfinite(v)]
    if bad:
        return InputError("radiomics", "finite feature values", f"NaN/inf in {len(bad)} columns ({bad[:3]})")
    return row


def radiomics_row(rad: Any, pixels: np.ndarray, mask: np.ndarray, spacing: Any) -> dict[str, float] | InputError:
    """One frame's radiomics (pixels x 255), or the error; a NaN/inf value is an error, never a silent NaN row."""
    return radiomics_rows(rad, [(pixels, mask, spacing)])[0]


Item = tuple[np.ndarray, np.ndarray, Any]


def radiomics_rows(rad: Any, items: Sequence[Item]) -> list[dict[str, float] | InputError]:
    """:func:`radiomics_row` of ``(pixels, mask, spacing)`` items: one batched call when the
    extractor has ``extract_batch`` (the torch backend), else one call per frame."""
    return [r if isinstance(r, InputError) else _finite(r) for r in _extract_rows(rad, items)]


def _extract_rows(rad: Any, items: Sequence[Item]) -> list[dict[str, float] | InputError]:
    """The extractor's rows (pixels x 255) or errors, values unchecked."""
    if not items:
        return []
    if not hasattr(rad, "extract_batch"):
        out: list[dict[str, float] | InputError] = []
        for p, m, sp in items:
            try:
                out.append(rad.extract(p * 255.0, m, spacing=sp))
            except InputError as exc:
                out.append(exc)
        return out
    spacings = [sp for _, _, sp in items]
    return rad.extract_batch(
        [p * 255.0 for p, _, _ in items],
        [m for _, m, _ in items],
        None if all(s is None for s in spacings) else spacings,
    )


def region_masks(mask: np.ndarray) -> dict[str, np.ndarray]:
    """The peritumoral ring and the posterior region of a lesion mask (see the module docstring).

    Example:
        >>> m = np.zeros((100, 100), bool); m[20:40, 30:60] = True
        >>> r = region_masks(m)
        >>> bool(r["peritumoral"][15:20, 30:60].any()), bool(r["posterior"][:40].any()), int(r["posterior"].sum())
        (True, False, 510)
    """
    m = mask.astype(bool)
    area = int(m.sum())
    width = max(3, round(0.2 * np.sqrt(area / np.pi)))  # 20% of the equivalent radius
    grown = cv2.dilate(m.astype(np.uint8), disk(width)) > 0
    ys, xs = np.nonzero(m)
    y1, x0, x1 = int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    height = y1 - int(ys.min())
    posterior = np.zeros_like(m)
    posterior[y1 : y1 + height, x0:x1] = True  # straight below the lesion, as tall as the lesion
    return {"peritumoral": grown & ~m, "posterior": posterior & ~grown}


def _region_extractor(cfg: ExtractConfig, columns: tuple[str, ...] | None = None) -> Any:
    """The regions' radiomics extractor (``cfg``'s backend); with ``columns`` (``radiomics_original_*``
    names) only those."""
    setting = {k: v for k, v in cfg.params["setting"].items() if k not in ("resampledPixelSpacing",)}
    params = {
        "imageType": {"Original": {}},
        "featureClass": {c: None for c in ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")},
        "setting": setting,
    }
    return radiomics_extractor(cfg, columns, params=params)


def _region_columns(cfg: ExtractConfig) -> list[str]:
    """Column names of one region's features (from a synthetic disk; once per process)."""

    def build() -> list[str]:
        yy, xx = np.mgrid[:48, :48]
        disk = (yy - 24) ** 2 + (xx - 24) ** 2 < 15**2
        img = np.random.default_rng(0).random((48, 48)).astype(np.float32) * 255
        return list(_region_extractor(cfg).extract(img, disk))

    key = f"{cfg.radiomics_backend}|{json.dumps(cfg.params, sort_keys=True, default=str)}"
    return _model("region-columns", key, build)


def region_features(
    cfg: ExtractConfig,
    pixels: np.ndarray,
    mask: np.ndarray,
    spacing: Any,
    columns: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, float]:
    """``radiomics_<region>_original_*`` of the extra regions, plus ``<region>_area_px``; NaN features
    for a region smaller than :data:`MIN_REGION_PX` pixels (e.g. no posterior region under a lesion
    that touches the bottom edge) or one pyradiomics cannot measure. With ``columns``
    (``{region: its radiomics_original_* names}``) only those regions and features, no area."""
    return region_rows(cfg, [(pixels, mask, spacing)], columns)[0]


def region_rows(
    cfg: ExtractConfig, items: Sequence[Item], columns: dict[str, tuple[str, ...]] | None = None
) -> list[dict[str, float]]:
    """:func:`region_features` of ``(pixels, lesion mask, spacing)`` items, each region's radiomics
    of all items in one :func:`radiomics_rows` call."""
    out: list[dict[str, float]] = [{} for _ in items]
    extra = [r for r in cfg.regions if r != "lesion" and (columns is None or columns.get(r))]
    if not extra:
        return out
    masks = [region_masks(m) for _, m, _ in items]
    for region in extra:
        names = _region_columns(cfg) if columns is None else list(columns[region])
        extractor = _region_extractor(cfg, None if columns is None else columns[region])
        big = [j for j, rm in enumerate(masks) if rm[region].sum() >= MIN_REGION_PX]
        rows = _extract_rows(extractor, [(items[j][0], masks[j][region], items[j][2]) for j in big])
        got = {j: r for j, r in zip(big, rows, strict=True) if not isinstance(r, InputError)}
        for j in range(len(items)):
            if columns is None:
                out[j][f"{region}_area_px"] = int(masks[j][region].sum())
            values = {**dict.fromkeys(names, float("nan")), **got.get(j, {})}
            out[j].update({k.replace("radiomics_", f"radiomics_{region}_", 1): float(v) for k, v in values.items()})
    return out
