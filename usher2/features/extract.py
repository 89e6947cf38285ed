"""Cohort feature extraction: a manifest in, one named feature table (Parquet) out.

For every manifest row the frame is read, optionally cleaned of burned-in overlays and
enhanced, its lesion mask is taken from the manifest (``masks="given"``) or predicted by the
segmenter (``masks="predicted"``), and one row of radiomics (:mod:`usher2.features.radiomics`,
plus the BI-RADS lexicon descriptors of :mod:`usher2.features.lexicon`) and deep features
(:mod:`usher2.features.deep`, one block per backbone) is computed.

**Outputs** (beside ``OUT = FEATURES.parquet``, named after its stem):

* ``OUT``: ``case_id``, ``patient_id``, ``label`` (when the manifest has one), ``mask_source``,
  ``mask_area_px``, ``mask_uncertainty`` (the segmenter's, for predicted masks; NaN for given),
  then ``radiomics_*`` and ``deep_<backbone>_<i>`` columns, in manifest order.
  The Parquet file's metadata key ``usher2`` holds the provenance (below).
* ``FEATURES.provenance.json``: the same provenance as a sidecar: usher2/pyradiomics/timm/torch
  versions, the radiomics parameters, each backbone's weights hash, the enhancer, segmenter,
  mask and overlay handling, the manifest's SHA-256, and per case the SHA-256 of its image and
  mask files.
* ``FEATURES.failures.csv``: ``case_id``, ``stage``, ``error``, one line per case that produced no row
  (stage ``features``; stage ``no_lesion`` when the segmenter found no lesion,
  :class:`~usher2.io.errors.NoLesion`) or per perturbation that could not be computed (stage
  ``perturbation:<name>``, e.g. a 1-pixel mask cannot be eroded). Written on every run, header
  only when nothing failed. A failed case never becomes a NaN row.
* ``FEATURES.perturbations.parquet`` (``perturb=True``): the long table ``case_id``,
  ``perturbation``, features, read by the fusion core's ICC filter. Perturbations:
  ``original``; ``erode1``/``erode2``/``dilate1``/``dilate2`` (mask by 1-2 px, elliptical
  element; the frame's edge is not a contour, so a mask does not erode from it);
  ``rotate-5``/``rotate+5`` (frame and mask rotated by 5 degrees about the lesion centre,
  linear/nearest interpolation); ``shift-2``/``shift+2`` (the mask moved 2 px along
  both axes relative to the frame: contour placement); ``enhancer_on`` or ``enhancer_off``
  (the opposite of the run's setting; ``on`` uses the default enhancer, pix2pix); and
  ``mask_predicted`` or ``mask_given`` (the opposite mask source, when the case has a given
  mask). ``ExtractConfig.perturbations`` picks a subset (``enhancer`` and ``mask`` name the two
  toggles) and adds ``contour-<k>`` (k = 1, 2, ...): the k-th draw of a realistic segmentation
  error (:func:`contour_error`, seeded by the case id and k), the rows a fit augments its
  training data with (``usher2 fit --augment``).

**Regions.** Besides the lesion (all image types and classes of the parameters), radiomics
are computed on two regions around it, on the Original image with every texture class and
first order (no shape): ``peritumoral``, a ring outside the mask as wide as 20% of the lesion's
equivalent radius (at least 3 px), where an echogenic halo shows; and ``posterior``, the
rectangle straight below the lesion's bounding box, as tall as the lesion, outside the ring,
where acoustic shadowing or enhancement shows. Columns are ``radiomics_<region>_original_*``;
``peritumoral_area_px`` and ``posterior_area_px`` give the region sizes. A region smaller
than 16 px (a lesion touching the bottom edge has no posterior region) gets NaN features,
which the fusion core imputes inside its folds; the lesion's own features are never NaN.

**Segmenter.** ``ExtractConfig.segmenter`` is a registry name (``unet``) or ``NAME=PATH`` for
other weights of that network (e.g. a segmenter trained without the devices being scored); the
provenance records the weights' SHA-256.

**Execution.** In-process by default; with ``workers=N`` a local ``dask.distributed`` cluster of
N single-threaded worker processes; with ``scheduler="tcp://HOST:PORT"`` an existing Dask
cluster (its workers need usher2 installed and read access to the images). Work is sent in
chunks of ``chunk_size`` cases; the driver writes every finished chunk. The three give the
same table, bit for bit: on the CPU every chunk runs its networks on one torch thread (a
float sum's order depends on the thread count), so scale a CPU run out with ``workers``.
Inside a Dask worker the ITK filters (LoG, resampling) also run on one thread, so that N
workers use N cores; in-process they use every core (their results do not depend on it).

**Resume.** Finished chunks are kept under ``FEATURES.parts/<settings digest>/`` (written
atomically). A re-run with the same settings reuses every finished case whose image and mask
files are unchanged (by SHA-256) and computes only the rest, so a killed run picks up where it
stopped, and cases added to a manifest are the only ones computed. Failed cases are tried
again. Other settings use another parts folder, so results of two settings never mix.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from usher2.features.lexicon import lexicon_features
from usher2.features.models import cached_model as _model
from usher2.features.models import deep_extractor as _deep
from usher2.features.models import enhancer as _enhancer
from usher2.features.models import in_dask_worker as _in_dask_worker
from usher2.features.models import on_cpu as _on_cpu
from usher2.features.models import radiomics_extractor as _radiomics
from usher2.features.models import segmenter as _segmenter
from usher2.features.models import segmenter_spec as _segmenter_spec
from usher2.features.models import torch_threads as _torch_threads
from usher2.features.models import with_segmenter_weights
from usher2.io.atomic import atomic_path, atomic_write_text
from usher2.io.errors import InputError, NoLesion
from usher2.io.hashing import file_sha256
from usher2.io.parts import (
    ChunkResults,
    finished_parts,
    latest_failures,
    parts_folder,
    run_parts,
    write_parquet,
)

__all__ = [
    "CONTOUR_ERROR",
    "ID_COLUMNS",
    "PERTURBATIONS",
    "ExtractConfig",
    "ExtractResult",
    "contour_error",
    "extract_cohort",
    "frame_features",
    "predicted_masks",
    "prepare_pixels",
    "read_feature_table",
    "with_segmenter_weights",
]

GEOMETRIC_PERTURBATIONS = ("erode1", "erode2", "dilate1", "dilate2", "rotate-5", "rotate+5", "shift-2", "shift+2")
PERTURBATIONS = ("original", *GEOMETRIC_PERTURBATIONS, "enhancer_on|enhancer_off", "mask_predicted|mask_given")
#: Names ``ExtractConfig.perturbations`` accepts besides ``contour-<k>``: the geometric ones and the two toggles.
PERTURBATION_CHOICES = (*GEOMETRIC_PERTURBATIONS, "enhancer", "mask")
#: The segmentation-error model of :func:`contour_error`, in units of the lesion's equivalent radius
#: R = sqrt(area / pi): ``offset`` sd of a uniform grow/shrink of the contour, ``noise`` sd of a
#: smooth local in/out displacement whose correlation length is ``correlation`` R, ``shift`` sd of a
#: displacement of the whole contour along each axis. At these values the perturbed mask's Dice with
#: the original has a mean of 0.80 (median 0.83, 10th percentile 0.70; 200 BUS-BRA GE masks), the
#: scale of a segmenter's errors on frames it did not see: the shipped U-Net's cross-validated Dice
#: is 0.81 on those devices (it falls to 0.66-0.71 on the others). Chosen from that card, before any
#: held-out-device result was looked at.
CONTOUR_ERROR = {"offset": 0.12, "noise": 0.15, "correlation": 0.5, "shift": 0.08}
FAILURE_COLUMNS = ["case_id", "stage", "error"]
#: The failures-table stage of a case whose predicted mask is empty (:class:`~usher2.io.errors.NoLesion`).
NO_LESION_STAGE = "no_lesion"
#: Stages at which a whole case produced no row (tried again by a re-run).
CASE_STAGES = ("features", NO_LESION_STAGE)
REGIONS = ("lesion", "peritumoral", "posterior")
MIN_REGION_PX = 16
AREA_COLUMNS = ("peritumoral_area_px", "posterior_area_px")
ID_COLUMNS = [
    "case_id",
    "patient_id",
    "label",
    "mask_source",
    "mask_area_px",
    "mask_uncertainty",
    "peritumoral_area_px",
    "posterior_area_px",
]


@dataclass(frozen=True)
class ExtractConfig:
    """What to extract; every field goes into the provenance and the resume digest.

    Attributes:
        params: Radiomics parameters (see :func:`~usher2.features.radiomics.load_params`); None: defaults.
        radiomics: Compute radiomics features.
        backbones: Deep backbones (``NAME``, ``NAME=PATH``, ``NAME=random``); empty: no deep features.
        masks: ``"given"`` (the manifest's) or ``"predicted"`` (the segmenter's).
        enhancer: Enhancer name, or None for none.
        segmenter: Segmenter name, for predicted masks and the mask perturbation.
        overlays: ``"keep"`` or ``"inpaint"`` (detect and inpaint burned-in text and calipers first).
        perturb: Also compute the perturbation table.
        perturbations: With ``perturb``, which perturbations: names of
            :data:`PERTURBATION_CHOICES` and ``contour-<k>``; None: every one of :data:`PERTURBATIONS`
            (no contour errors).
        regions: Radiomics regions: ``lesion`` (always) plus ``peritumoral`` and ``posterior``.
        lexicon: With ``radiomics``: also the BI-RADS lexicon descriptors
            (:mod:`usher2.features.lexicon`; orientation, margin, posterior features, halo,
            calcifications), as ``radiomics_lexicon_*`` columns.
        chunk_size: Cases per unit of work.
        device: Torch device for the networks (None: CUDA when available).
    """

    params: dict[str, Any] | None = None
    radiomics: bool = True
    backbones: tuple[str, ...] = ("usresnet10t",)
    masks: str = "given"
    enhancer: str | None = None
    segmenter: str = "unet"
    overlays: str = "keep"
    perturb: bool = False
    perturbations: tuple[str, ...] | None = None
    regions: tuple[str, ...] = ("lesion", "peritumoral", "posterior")
    lexicon: bool = True
    chunk_size: int = 16
    device: str | None = None

    def __post_init__(self) -> None:
        from usher2.features.radiomics import load_params

        if self.masks not in ("given", "predicted"):
            raise InputError("masks", "'given' or 'predicted'", repr(self.masks))
        if self.overlays not in ("keep", "inpaint"):
            raise InputError("overlays", "'keep' or 'inpaint'", repr(self.overlays))
        if self.enhancer in ("", "none"):
            object.__setattr__(self, "enhancer", None)
        if not self.radiomics and not self.backbones:
            raise InputError("features", "radiomics and/or at least one backbone", "neither")
        if self.chunk_size < 1:
            raise InputError("chunk_size", "a positive number of cases", str(self.chunk_size))
        object.__setattr__(self, "backbones", tuple(str(b) for b in self.backbones))
        object.__setattr__(self, "regions", tuple(self.regions))
        bad = [r for r in self.regions if r not in REGIONS]
        if bad or "lesion" not in self.regions:
            raise InputError("regions", f"'lesion' plus any of {REGIONS[1:]}", str(list(self.regions)))
        object.__setattr__(self, "params", load_params(self.params))
        if self.perturbations is not None:
            names = tuple(dict.fromkeys(str(n) for n in self.perturbations))
            bad = [n for n in names if n not in PERTURBATION_CHOICES and _contour_index(n) is None]
            if bad or not names:
                raise InputError(
                    "perturbations", f"names among {', '.join(PERTURBATION_CHOICES)} or contour-<k> (k >= 1)", str(bad)
                )
            object.__setattr__(self, "perturbations", names)
        _segmenter_spec(self.segmenter)  # a malformed NAME=PATH fails here, not in the middle of a run

    def perturbation_names(self) -> tuple[str, ...]:
        """The perturbations to compute (with ``perturb``): the chosen ones, or every default one."""
        return self.perturbations if self.perturbations is not None else PERTURBATION_CHOICES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """SHA-256 of the settings that change feature values (not chunking or device)."""
        d = {k: v for k, v in self.to_dict().items() if k not in ("chunk_size", "device")}
        if d["perturbations"] is None or not self.perturb:  # the default: digests from before the field stay valid
            d.pop("perturbations")
        if not self.radiomics:
            d.pop("params")
            d.pop("lexicon")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class ExtractResult:
    """What a cohort extraction produced.

    Attributes:
        table: The feature table (as written to ``out``).
        failures: ``case_id``, ``stage``, ``error`` rows (as written to the failures CSV).
        perturbations: The long perturbation table, or None.
        n_cases: Cases in the manifest.
        computed: Cases computed by this run (the rest were reused from an earlier run).
        paths: Output files by kind (``table``, ``provenance``, ``failures``, ``perturbations``).
    """

    table: pd.DataFrame
    failures: pd.DataFrame
    perturbations: pd.DataFrame | None
    n_cases: int
    computed: int
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def failed_cases(self) -> list[str]:
        return sorted(set(self.failures.loc[self.failures["stage"].isin(CASE_STAGES), "case_id"]))


# ------------------------------------------------------------------------------ one chunk
def _sha256(path: str | None) -> str:
    return file_sha256(path) if path else ""


def _disk(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _perturbed(pixels: np.ndarray, mask: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A geometric perturbation of (frame, mask); raises InputError when the mask vanishes."""
    m8 = mask.astype(np.uint8)
    if name.startswith(("erode", "dilate")):
        r = int(name[-1])
        op = cv2.erode if name.startswith("erode") else cv2.dilate
        out_p, out_m = pixels, op(m8, _disk(r)) > 0
    elif name.startswith("rotate"):
        ys, xs = np.nonzero(mask)
        centre = (float(xs.mean()), float(ys.mean()))
        rot = cv2.getRotationMatrix2D(centre, float(name[len("rotate") :]), 1.0)
        h, w = mask.shape
        out_p = cv2.warpAffine(pixels, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        out_m = cv2.warpAffine(m8, rot, (w, h), flags=cv2.INTER_NEAREST, borderValue=0) > 0
    elif name.startswith("shift"):
        d = int(name[len("shift") :])
        move = np.float32([[1, 0, d], [0, 1, d]])
        out_p = pixels
        out_m = cv2.warpAffine(m8, move, (mask.shape[1], mask.shape[0]), flags=cv2.INTER_NEAREST, borderValue=0) > 0
    else:  # pragma: no cover - the names are ours
        raise ValueError(f"unknown perturbation {name!r}")
    if not out_m.any():
        raise InputError("mask", f"a region that survives {name}", "an empty mask afterwards")
    return out_p.astype(np.float32, copy=False), out_m


def _contour_index(name: str) -> int | None:
    """k of ``contour-<k>`` (k >= 1), else None."""
    head, _, k = name.partition("-")
    return int(k) if head == "contour" and k.isdigit() and int(k) >= 1 else None


def contour_seed(case_id: str, name: str) -> int:
    """The seed of a case's ``contour-<k>`` draw: stable across runs, processes and machines."""
    return int.from_bytes(hashlib.sha256(f"{case_id}|{name}".encode()).digest()[:8], "little")


def contour_error(
    mask: np.ndarray,
    rng: np.random.Generator | int,
    *,
    offset: float = CONTOUR_ERROR["offset"],
    noise: float = CONTOUR_ERROR["noise"],
    correlation: float = CONTOUR_ERROR["correlation"],
    shift: float = CONTOUR_ERROR["shift"],
) -> np.ndarray:
    """A lesion mask as a segmenter might have drawn it: the contour grown or shrunk, bent locally and moved.

    The signed distance to the contour (positive inside) is moved by a random shift, then a random
    constant (grow/shrink) and a smooth random field (local bulges and dents) are added to it; the
    perturbed mask is where it stays positive (holes filled, largest component). Every amplitude is
    a multiple of the lesion's equivalent radius R, so a 20-px and a 200-px lesion get the same
    relative error (see :data:`CONTOUR_ERROR` for the defaults and the Dice they give).

    Args:
        mask: ``(H, W)`` bool lesion mask.
        rng: A generator or a seed (:func:`contour_seed` makes one per case and draw).
        offset, noise, correlation, shift: The error model, in units of R (see :data:`CONTOUR_ERROR`).

    Returns:
        ``(H, W)`` bool perturbed mask.

    Raises:
        InputError: An empty mask, or one the draw erased (fewer than 4 pixels left).

    Example:
        >>> m = np.zeros((120, 120), bool); m[30:90, 20:100] = True
        >>> out = contour_error(m, 0)
        >>> d = 2 * int((out & m).sum()) / int(out.sum() + m.sum())
        >>> 0.6 < d < 1.0, contour_error(m, 0).tolist() == out.tolist()
        (True, True)
    """
    from scipy import ndimage

    rng = np.random.default_rng(rng)
    m = np.asarray(mask, bool)
    area = int(m.sum())
    if area == 0:
        raise InputError("mask", "a non-empty lesion mask to perturb", "an empty mask")
    r = float(np.sqrt(area / np.pi))
    h, w = m.shape
    m8 = m.astype(np.uint8)
    sd = cv2.distanceTransform(m8, cv2.DIST_L2, 5) - cv2.distanceTransform(1 - m8, cv2.DIST_L2, 5)
    dy, dx = rng.normal(0.0, shift * r, 2)
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    sd = cv2.warpAffine(sd.astype(np.float32), move, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    field = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma=max(1.0, correlation * r), mode="reflect")
    field /= max(float(field.std()), 1e-12)
    level = sd + rng.normal(0.0, offset * r) + noise * r * field
    out = ndimage.binary_fill_holes(level > 0)
    labels, n = ndimage.label(out, structure=np.ones((3, 3), bool))
    if n > 1:
        out = labels == (int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)
    if int(out.sum()) < 4:
        raise InputError("mask", "a region that survives the contour error", f"{int(out.sum())} pixels afterwards")
    return np.asarray(out, bool)


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
    grown = cv2.dilate(m.astype(np.uint8), _disk(width)) > 0
    ys, xs = np.nonzero(m)
    y1, x0, x1 = int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    height = y1 - int(ys.min())
    posterior = np.zeros_like(m)
    posterior[y1 : y1 + height, x0:x1] = True  # straight below the lesion, as tall as the lesion
    return {"peritumoral": grown & ~m, "posterior": posterior & ~grown}


def _region_extractor(cfg: ExtractConfig, columns: tuple[str, ...] | None = None) -> Any:
    """The regions' radiomics extractor; with ``columns`` (``radiomics_original_*`` names) only those."""
    from usher2.features.radiomics import RadiomicsExtractor

    setting = {k: v for k, v in cfg.params["setting"].items() if k not in ("resampledPixelSpacing",)}
    params = {
        "imageType": {"Original": {}},
        "featureClass": {c: None for c in ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")},
        "setting": setting,
    }
    key = json.dumps(params, sort_keys=True, default=str)
    if columns is None:
        return _model("radiomics", key, lambda: RadiomicsExtractor(params))
    return _model("radiomics-subset", f"{key}|{columns}", lambda: RadiomicsExtractor(params, columns=columns))


def _region_columns(cfg: ExtractConfig) -> list[str]:
    """Column names of one region's features (from a synthetic disk; once per process)."""

    def build() -> list[str]:
        yy, xx = np.mgrid[:48, :48]
        disk = (yy - 24) ** 2 + (xx - 24) ** 2 < 15**2
        img = np.random.default_rng(0).random((48, 48)).astype(np.float32) * 255
        return list(_region_extractor(cfg).extract(img, disk))

    return _model("region-columns", json.dumps(cfg.params, sort_keys=True, default=str), build)


def _region_features(
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
    out: dict[str, float] = {}
    extra = [r for r in cfg.regions if r != "lesion" and (columns is None or columns.get(r))]
    if not extra:
        return out
    masks = region_masks(mask)
    for region in extra:
        rm = masks[region]
        names = _region_columns(cfg) if columns is None else list(columns[region])
        extractor = _region_extractor(cfg, None if columns is None else columns[region])
        if columns is None:
            out[f"{region}_area_px"] = int(rm.sum())
        values = dict.fromkeys(names, float("nan"))
        if rm.sum() >= MIN_REGION_PX:
            try:
                values.update(extractor.extract(pixels * 255.0, rm, spacing=spacing))
            except InputError:
                pass
        out.update({k.replace("radiomics_", f"radiomics_{region}_", 1): float(v) for k, v in values.items()})
    return out


def _radiomics_row(rad: Any, pixels: np.ndarray, mask: np.ndarray, spacing: Any) -> dict[str, float] | InputError:
    """One frame's radiomics (pixels x 255), or the error; a NaN/inf value is an error, never a silent NaN row."""
    try:
        row = rad.extract(pixels * 255.0, mask, spacing=spacing)
    except InputError as exc:
        return exc
    bad = [k for k, v in row.items() if not np.isfinite(v)]
    if bad:
        return InputError("radiomics", "finite feature values", f"NaN/inf in {len(bad)} columns ({bad[:3]})")
    return row


def frame_features(
    cfg: ExtractConfig,
    items: list[tuple[np.ndarray, np.ndarray, tuple[float, float] | None]],
    columns: Sequence[str] | None = None,
) -> list[Any]:
    """Feature dicts for ``(pixels, mask, spacing)`` items; an item that fails gives its exception.

    Pixels are float32 in [0, 1] (radiomics see them x 255); the deep backbones run as one batch.

    Args:
        cfg: What to extract.
        items: ``(pixels (H, W), mask (H, W) bool, spacing or None)`` per frame.
        columns: Compute only these feature columns (e.g. the ones a model needs, from
            :func:`~usher2.fusion.needed.needed_columns`); each row then holds exactly them, with
            the values the full extraction gives them. Lesion radiomics compute only the listed
            features and image types (:class:`~usher2.features.radiomics.RadiomicsExtractor`
            with ``columns``), a region or backbone none of them uses is skipped, and so are the
            lexicon descriptors. Only the computed lesion columns must be finite. None: every
            column of ``cfg`` (what :func:`extract_cohort` writes).

    Raises:
        InputError: ``columns`` holds a column ``cfg`` does not produce (the message names it).

    Example:
        >>> cfg = ExtractConfig(params={"setting": {"binWidth": 8}}, backbones=(), regions=("lesion",))
        >>> px = np.random.default_rng(0).random((64, 64), dtype=np.float32)
        >>> m = np.zeros((64, 64), bool); m[20:40, 16:48] = True
        >>> want = ["radiomics_original_glcm_Contrast", "radiomics_lexicon_axis_ratio"]
        >>> sub, full = frame_features(cfg, [(px, m, None)], want)[0], frame_features(cfg, [(px, m, None)])[0]
        >>> list(sub) == want and all(sub[c] == full[c] for c in want)
        True
    """
    if columns is not None:
        return _subset_features(cfg, items, _wanted(cfg, columns))
    rows: list[Any] = [{} for _ in items]
    if cfg.radiomics:
        rad = _radiomics(cfg)
        for i, (p, m, sp) in enumerate(items):
            row = _radiomics_row(rad, p, m, sp)
            if isinstance(row, InputError):
                rows[i] = row
            else:
                rows[i].update(row)
                rows[i].update(_region_features(cfg, p, m, sp))
                if cfg.lexicon:
                    rows[i].update(lexicon_features(p, m, sp))
    ok = [i for i, r in enumerate(rows) if isinstance(r, dict)]
    for spec in cfg.backbones:
        deep = _deep(cfg, spec)
        feats = deep.features([items[i][0] for i in ok], [items[i][1] for i in ok]) if ok else []
        for j, i in enumerate(ok):
            rows[i].update(zip(deep.columns, map(float, feats[j]), strict=True))
    return rows


def _wanted(cfg: ExtractConfig, columns: Sequence[str]) -> dict[str, Any]:
    """Sort requested columns by where they come from; raise on one ``cfg`` does not produce."""
    from usher2.features.deep import parse_backbone
    from usher2.features.lexicon import LEXICON_COLUMNS

    cols = list(dict.fromkeys(columns))
    extra = [r for r in cfg.regions if r != "lesion"]
    deep_names = {parse_backbone(s).name: s for s in cfg.backbones}
    out: dict[str, Any] = {"order": cols, "lesion": [], "regions": {}, "lexicon": [], "deep": {}}
    other = ("radiomics_lexicon_", *(f"radiomics_{r}_" for r in REGIONS))  # not lesion radiomics
    bad = []
    for c in cols:
        region = next((r for r in extra if c.startswith(f"radiomics_{r}_")), None)
        backbone = next((n for n in deep_names if c.startswith(f"deep_{n}_")), None)
        if not cfg.radiomics and c.startswith("radiomics_"):
            bad.append(c)
        elif c in LEXICON_COLUMNS:
            (out["lexicon"] if cfg.lexicon else bad).append(c)
        elif region is not None:
            out["regions"].setdefault(region, []).append(c.replace(f"radiomics_{region}_", "radiomics_", 1))
        elif backbone is not None:
            out["deep"].setdefault(deep_names[backbone], []).append(c)
        elif c.startswith("radiomics_") and not c.startswith(other):
            out["lesion"].append(c)
        else:
            bad.append(c)
    if bad:
        raise InputError(
            "feature columns", "columns these extraction settings produce", f"{len(bad)} others, e.g. {bad[:3]}"
        )
    for spec, names in out["deep"].items():
        known = set(_deep(cfg, spec).columns)
        unknown = [c for c in names if c not in known]
        if unknown:
            raise InputError("feature columns", f"columns of the {spec} backbone", f"unknown {unknown[:3]}")
    out["regions"] = {r: tuple(v) for r, v in out["regions"].items()}
    return out


def _lesion_subset(cfg: ExtractConfig, columns: tuple[str, ...]) -> Any:
    from usher2.features.radiomics import RadiomicsExtractor

    key = f"{json.dumps(cfg.params, sort_keys=True, default=str)}|{columns}"
    return _model("radiomics-subset", key, lambda: RadiomicsExtractor(cfg.params, columns=columns))


def _subset_features(
    cfg: ExtractConfig, items: list[tuple[np.ndarray, np.ndarray, tuple[float, float] | None]], wanted: dict[str, Any]
) -> list[Any]:
    """:func:`frame_features` for the columns sorted by :func:`_wanted`."""
    rows: list[Any] = [{} for _ in items]
    rad = _lesion_subset(cfg, tuple(wanted["lesion"])) if wanted["lesion"] else None
    for i, (p, m, sp) in enumerate(items):
        m = np.asarray(m)
        if m.shape != p.shape or not m.any():
            what = f"shape {m.shape} for a frame of {p.shape}" if m.shape != p.shape else "an empty mask"
            rows[i] = InputError("mask", "a non-empty mask of the frame's shape", what)
            continue
        if rad is not None:
            row = _radiomics_row(rad, p, m, sp)
            if isinstance(row, InputError):
                rows[i] = row
                continue
            rows[i].update(row)
        if wanted["regions"]:
            rows[i].update(_region_features(cfg, p, m, sp, wanted["regions"]))
        if wanted["lexicon"]:
            lex = lexicon_features(p, m, sp)
            rows[i].update({c: lex[c] for c in wanted["lexicon"]})
    ok = [i for i, r in enumerate(rows) if isinstance(r, dict)]
    for spec, names in wanted["deep"].items():
        deep = _deep(cfg, spec)
        pos = {c: j for j, c in enumerate(deep.columns)}
        idx = [pos[c] for c in names]
        feats = deep.features([items[i][0] for i in ok], [items[i][1] for i in ok]) if ok else []
        for j, i in enumerate(ok):
            rows[i].update(zip(names, map(float, feats[j][idx]), strict=True))
    return [{c: r[c] for c in wanted["order"]} if isinstance(r, dict) else r for r in rows]


def _prepare(cfg: ExtractConfig, case: dict[str, Any], enhancer: str | None, masks: str) -> dict[str, Any]:
    """Read, clean, enhance and mask one case."""
    from usher2.io.batch import read_case

    c = read_case(case, masks=True)
    p = prepare_pixels(cfg, c.frame.pixels, c.mask, where=f"case {c.case_id}", enhancer=enhancer, masks=masks)
    return {**p, "spacing": c.frame.spacing, "has_given": c.mask is not None}


def prepare_pixels(
    cfg: ExtractConfig,
    pixels: np.ndarray,
    given_mask: np.ndarray | None = None,
    *,
    where: str = "frame",
    enhancer: str | bool | None = True,
    masks: str | None = None,
) -> dict[str, Any]:
    """Clean, enhance and mask one in-memory frame, as :func:`extract_cohort` does for a case.

    Args:
        cfg: The settings (overlays, enhancer, segmenter, masks).
        pixels: ``(H, W)`` float32 in [0, 1].
        given_mask: The lesion mask, for ``masks="given"``.
        where: How errors name the frame.
        enhancer: An enhancer name, None for none, or True for ``cfg.enhancer``.
        masks: ``"given"``/``"predicted"``; None: ``cfg.masks``.

    Returns:
        ``{"pixels", "mask", "uncertainty"}`` (uncertainty NaN for a given mask).

    Raises:
        InputError: No mask for ``masks="given"``, or the mask is empty (the segmenter found no lesion).
    """
    from usher2.io.overlay import detect_overlays, inpaint_overlays

    enhancer = cfg.enhancer if enhancer is True else enhancer
    masks = masks or cfg.masks
    if cfg.overlays == "inpaint":
        found = detect_overlays(pixels)
        if found.has_overlay:
            pixels = inpaint_overlays(pixels, found.mask)
    if enhancer:
        pixels = np.asarray(_enhancer(enhancer)(pixels[None, None]), np.float32)[0, 0]
    uncertainty = float("nan")
    if masks == "given":
        if given_mask is None:
            raise InputError(where, "a mask (masks='given')", "an empty mask cell", fix="use --masks predicted")
        mask = given_mask
    else:
        seg = _segmenter(cfg.segmenter).segment(pixels[None, None])[0]
        if seg.no_lesion:
            raise NoLesion(where)
        mask, uncertainty = seg.mask, float(seg.uncertainty)
    if not mask.any():
        raise InputError(f"{where} mask", "at least one lesion pixel", "an empty mask")
    return {"pixels": pixels, "mask": mask, "uncertainty": uncertainty}


def extract_chunk(cfg: ExtractConfig, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Compute one chunk: feature rows, perturbation rows and failures (picklable, for Dask).

    Args:
        cfg: The settings.
        cases: Manifest rows (``case_id``, ``patient_id``, ``image_path``, ``mask_path``, ...).

    Returns:
        ``{"rows": [...], "perturbations": [...], "failures": [...]}``, lists of dicts.
    """
    if _in_dask_worker():  # Dask runs one chunk per worker thread: ITK filters must not fan out further
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    with _torch_threads(1 if _on_cpu(cfg) else None):
        return _extract_chunk(cfg, cases)


def _extract_chunk(cfg: ExtractConfig, cases: list[dict[str, Any]]) -> dict[str, Any]:
    rows, prows, failures = [], [], []
    prepared: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for case in cases:
        try:
            prepared.append((case, _prepare(cfg, case, cfg.enhancer, cfg.masks)))
        except (InputError, ValueError, OSError) as exc:
            stage = NO_LESION_STAGE if isinstance(exc, NoLesion) else "features"
            failures.append({"case_id": case["case_id"], "stage": stage, "error": f"{type(exc).__name__}: {exc}"})
    feats = frame_features(cfg, [(p["pixels"], p["mask"], p["spacing"]) for _, p in prepared])
    good: list[tuple[dict[str, Any], dict[str, Any], dict[str, float]]] = []
    for (case, p), f in zip(prepared, feats, strict=True):
        if isinstance(f, Exception):
            failures.append({"case_id": case["case_id"], "stage": "features", "error": f"{type(f).__name__}: {f}"})
            continue
        ident = {
            "case_id": case["case_id"],
            "patient_id": case["patient_id"],
            "label": case.get("label"),
            "mask_source": cfg.masks,
            "mask_area_px": int(p["mask"].sum()),
            "mask_uncertainty": p["uncertainty"],
        }
        areas = {k: f[k] for k in AREA_COLUMNS if k in f}
        f = {k: v for k, v in f.items() if k not in AREA_COLUMNS}
        rows.append({**ident, **areas, **f})
        good.append((case, p, f))
    if cfg.perturb:
        prows, pfail = _perturbation_rows(cfg, good)
        failures += pfail
    return {"rows": rows, "perturbations": prows, "failures": failures}


def _perturbation_rows(
    cfg: ExtractConfig, good: list[tuple[dict[str, Any], dict[str, Any], dict[str, float]]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = [{"case_id": c["case_id"], "perturbation": "original", **f} for c, _, f in good]
    failures: list[dict[str, Any]] = []
    jobs: dict[str, list[tuple[str, np.ndarray, np.ndarray, Any]]] = {}
    enh_name, enh = ("enhancer_off", None) if cfg.enhancer else ("enhancer_on", "pix2pix")
    mask_name = "mask_given" if cfg.masks == "predicted" else "mask_predicted"
    chosen = cfg.perturbation_names()
    for case, p, _ in good:
        cid = case["case_id"]
        for name in chosen:
            if name in ("enhancer", "mask"):
                continue
            try:
                if name in GEOMETRIC_PERTURBATIONS:
                    px, m = _perturbed(p["pixels"], p["mask"], name)
                else:  # contour-<k>: the pixels stay, the mask is redrawn
                    px, m = p["pixels"], contour_error(p["mask"], contour_seed(cid, name))
                jobs.setdefault(name, []).append((cid, px, m, p["spacing"]))
            except InputError as exc:
                failures.append({"case_id": cid, "stage": f"perturbation:{name}", "error": f"InputError: {exc}"})
        toggles = [(enh_name, enh, cfg.masks)] if "enhancer" in chosen else []
        if "mask" in chosen and (cfg.masks == "given" or p["has_given"]):
            toggles.append((mask_name, cfg.enhancer, "predicted" if cfg.masks == "given" else "given"))
        for name, enhancer, masks in toggles:
            try:
                q = _prepare(cfg, case, enhancer, masks)
                jobs.setdefault(name, []).append((cid, q["pixels"], q["mask"], q["spacing"]))
            except (InputError, ValueError, OSError) as exc:
                failures.append(
                    {"case_id": cid, "stage": f"perturbation:{name}", "error": f"{type(exc).__name__}: {exc}"}
                )
    for name, items in jobs.items():
        feats = frame_features(cfg, [(px, m, sp) for _, px, m, sp in items])
        for (cid, *_), f in zip(items, feats, strict=True):
            if isinstance(f, Exception):
                failures.append({"case_id": cid, "stage": f"perturbation:{name}", "error": f"{type(f).__name__}: {f}"})
            else:
                rows.append(
                    {"case_id": cid, "perturbation": name, **{k: v for k, v in f.items() if k not in AREA_COLUMNS}}
                )
    return rows, failures


# ------------------------------------------------------------------------------ stored predictions
def predicted_masks(
    manifest: pd.DataFrame,
    probabilities: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    threshold: float = 0.5,
    largest_component: bool = False,
    margin: int = 5,
) -> pd.DataFrame:
    """Masks from stored probability maps (e.g. a segmenter's out-of-fold predictions), for a manifest.

    Each case's map is ``<folder>/<case_id>.png`` (8-bit, p = value / 255) in one of the folders
    (the first that holds it; e.g. one per cross-validation fold). It is resized to the frame's
    mask when their shapes differ, thresholded (p > ``threshold``) and post-processed as the
    segmenter does (holes filled, optionally the largest component); the mask is written as a 0/255
    PNG to ``out/<case_id>.png``. A manifest whose ``mask`` column points at these files trains a
    model on the masks it will see at scoring time (``usher2 fit``, masks ``given``).

    Args:
        manifest: As :func:`~usher2.io.manifest.read_manifest` returns it (``case_id``, ``mask_path``).
        probabilities: A folder of maps, or several.
        out: Folder for the thresholded masks.
        threshold: Probability threshold (the segmenter's, from its weights' post-processing).
        largest_component: Keep only the largest component (as the segmenter's post-processing).
        margin: The dilation of the segmenter's uncertainty score (see :mod:`usher2.segment.base`).

    Returns:
        One row per case with a map: ``case_id``, ``mask`` (the written file; empty when no lesion
        was found), ``no_lesion``, ``uncertainty`` (mean binary entropy, the segmenter's score),
        ``area_px``, and ``dice`` against the manifest's mask (NaN without one).

    Raises:
        InputError: No folder holds a map of any case.
    """
    from usher2.segment.base import entropy_uncertainty, postprocess_mask

    folders = [Path(probabilities)] if isinstance(probabilities, str | Path) else [Path(f) for f in probabilities]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in manifest.to_dict("records"):
        cid = str(case["case_id"])
        src = next((f / f"{cid}.png" for f in folders if (f / f"{cid}.png").is_file()), None)
        if src is None:
            continue
        raw = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
        if raw is None:
            raise InputError(src, "an 8-bit probability map (PNG)", "a file OpenCV cannot decode")
        prob = raw.astype(np.float32) / 255.0
        given_path = case.get("mask_path")
        given = None
        if isinstance(given_path, str) and given_path:
            g = cv2.imread(given_path, cv2.IMREAD_GRAYSCALE)
            given = None if g is None else g > 127
        if given is not None and prob.shape != given.shape:
            prob = cv2.resize(prob, (given.shape[1], given.shape[0]), interpolation=cv2.INTER_LINEAR)
        mask = postprocess_mask(prob > threshold, largest_component=largest_component)
        dice = float("nan")
        if given is not None:
            denom = int(mask.sum()) + int(given.sum())
            dice = 2.0 * int((mask & given).sum()) / denom if denom else 1.0
        target = out / f"{cid}.png"
        if mask.any():
            with atomic_path(target) as tmp:
                if not cv2.imwrite(str(tmp), mask.astype(np.uint8) * 255):
                    raise InputError(target, "a writable folder", "a failed PNG write")
        rows.append(
            {
                "case_id": cid,
                "mask": str(target) if mask.any() else "",
                "no_lesion": not mask.any(),
                "uncertainty": entropy_uncertainty(prob, mask, margin),
                "area_px": int(mask.sum()),
                "dice": dice,
            }
        )
    if not rows:
        raise InputError(
            ", ".join(map(str, folders)), "probability maps named <case_id>.png for the manifest's cases", "none"
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ the cohort
def read_feature_table(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A feature table and its provenance (from the Parquet metadata).

    Raises:
        InputError: Missing file, not Parquet, or no usher2 provenance in it.
    """
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "a feature table (.parquet) from usher2 extract", "no such file")
    try:
        table = pq.read_table(p)
    except Exception as exc:  # pyarrow raises ArrowInvalid and OSError variants
        raise InputError(p, "a Parquet feature table", f"an unreadable file ({type(exc).__name__}: {exc})") from exc
    meta = (table.schema.metadata or {}).get(b"usher2")
    if meta is None:
        raise InputError(p, "a feature table written by usher2 extract (provenance metadata)", "none")
    return table.to_pandas(), json.loads(meta)


def _cases(manifest: str | Path | pd.DataFrame) -> tuple[list[dict[str, Any]], str]:
    from usher2.io.manifest import read_manifest

    if isinstance(manifest, pd.DataFrame):
        df, digest = manifest, hashlib.sha256(pd.util.hash_pandas_object(manifest.astype(str)).values).hexdigest()
    else:
        df, digest = read_manifest(manifest, check_files=False), _sha256(str(manifest))
    cases = []
    for row in df.to_dict("records"):
        row = {k: (None if np.ndim(v) == 0 and pd.isna(v) else v) for k, v in row.items()}
        row["case_id"], row["patient_id"] = str(row["case_id"]), str(row.get("patient_id") or row["case_id"])
        label = row.get("label")
        row["label"] = None if label is None else int(label)
        try:
            row["image_sha256"] = _sha256(row.get("image_path"))
        except OSError:
            row["image_sha256"] = ""  # the chunk reports the unreadable file
        try:
            row["mask_sha256"] = _sha256(row.get("mask_path"))
        except OSError:
            row["mask_sha256"] = ""
        cases.append(row)
    return cases, digest


def _provenance(cfg: ExtractConfig, cases: list[dict[str, Any]], manifest_sha: str) -> dict[str, Any]:
    import usher2

    prov: dict[str, Any] = {
        "usher2": usher2.__version__,
        "settings": cfg.to_dict(),
        "settings_sha256": cfg.digest(),
        "manifest_sha256": manifest_sha,
        "overlay_handling": cfg.overlays,
        "mask_source": cfg.masks,
        "enhancer": cfg.enhancer or "none",
        "inputs": [{k: c[k] for k in ("case_id", "image_sha256", "mask_sha256")} for c in cases],
    }
    if cfg.radiomics:
        prov["radiomics"] = _radiomics(cfg).provenance()
    prov["deep"] = [_deep(cfg, spec).provenance() for spec in cfg.backbones]
    toggles = cfg.perturbation_names() if cfg.perturb else ()
    if cfg.masks == "predicted" or "mask" in toggles:
        prov["segmenter"] = _network_settings(_segmenter(cfg.segmenter))
    for name in {cfg.enhancer, "pix2pix" if "enhancer" in toggles and not cfg.enhancer else None} - {None}:
        prov.setdefault("enhancers", {})[name] = _network_settings(_enhancer(name))
    return prov


def _network_settings(model: Any) -> dict[str, Any]:
    """A stage's settings plus the full SHA-256 of its weights file (when it has one)."""
    out = dict(model.settings())
    weights = getattr(model, "weights", None)
    if weights is not None and Path(weights).is_file():
        out["weights_file_sha256"] = file_sha256(weights)
    return out


def _client(workers: int | None, scheduler: str | None) -> tuple[Any, Any]:
    if scheduler:
        from distributed import Client

        try:
            return Client(scheduler), None  # waits dask's distributed.comm.timeouts.connect (30 s)
        except OSError as exc:
            raise InputError(
                "scheduler", "a reachable Dask scheduler (tcp://HOST:PORT)", f"{scheduler!r}: {exc}"
            ) from exc
    if workers:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=int(workers),
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=50,
        )
        return Client(cluster), cluster
    return None, None


def extract_cohort(
    manifest: str | Path | pd.DataFrame,
    out: str | Path,
    config: ExtractConfig | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> ExtractResult:
    """Extract the feature table of a cohort (see the module docstring for outputs, Dask and resume).

    Args:
        manifest: A manifest file, or a DataFrame as :func:`~usher2.io.manifest.read_manifest` returns.
        out: The feature table to write (``.parquet``).
        config: What to extract; None: :class:`ExtractConfig` defaults.
        workers: Start a local Dask cluster with this many worker processes.
        scheduler: Address of an existing Dask scheduler (wins over ``workers``).
        progress: ``progress(cases_done, n_cases)`` after every chunk.
        log: Receives one line per event.

    Raises:
        InputError: A bad manifest, settings or scheduler address. Bad cases do not raise.
    """
    cfg = config or ExtractConfig()
    out = Path(out)
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise InputError(out, "an output path ending in .parquet", repr(out.suffix or out.name))
    say = log or (lambda _msg: None)
    cases, manifest_sha = _cases(manifest)
    if not cases:
        raise InputError(str(manifest), "a manifest with at least one case", "no rows")
    parts = parts_folder(out, cfg.digest(), cfg.to_dict())
    computed = run_parts(
        cases,
        parts,
        cfg.chunk_size,
        functools.partial(extract_chunk, cfg),
        executor=lambda chunks: _dask_results(cfg, chunks, workers, scheduler, say),
        progress=progress,
        log=say,
    )
    return _assemble(cfg, cases, manifest_sha, parts, out, computed=computed)


@contextmanager
def _dask_results(
    cfg: ExtractConfig,
    chunks: list[list[dict[str, Any]]],
    workers: int | None,
    scheduler: str | None,
    say: Callable[[str], None],
) -> Iterator[ChunkResults | None]:
    """The chunks computed on Dask workers, as they finish; None (compute them in this process)
    without ``workers`` or ``scheduler``. The client (and a local cluster) are closed on leaving."""
    client, cluster = _client(workers, scheduler) if chunks else (None, None)
    try:
        if client is None:
            yield None
        else:
            from distributed import as_completed

            say(f"Dask: {len(client.scheduler_info()['workers'])} workers at {client.scheduler.address}")
            futures = {client.submit(extract_chunk, cfg, chunk, pure=False): chunk for chunk in chunks}
            yield ((futures[fut], fut.result()) for fut in as_completed(futures))
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _assemble(
    cfg: ExtractConfig, cases: list[dict[str, Any]], manifest_sha: str, parts: Path, out: Path, computed: int
) -> ExtractResult:
    frames, pframes, failures, order = collect_parts(parts, cases)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ID_COLUMNS)
    table = table.sort_values("case_id", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    if all(c.get("label") is None for c in cases):
        table = table.drop(columns=["label"])
    prov = _provenance(cfg, cases, manifest_sha)
    return write_extraction(out, table, failures, pframes if cfg.perturb else None, prov, order, computed)


def collect_parts(
    parts: Path, cases: Sequence[dict[str, Any]]
) -> tuple[list[pd.DataFrame], list[pd.DataFrame], list[dict[str, Any]], dict[str, int]]:
    """The finished parts of a resumable extraction: feature frames, perturbation frames, failures
    (the latest attempt of a case still failing included) and each case's manifest position."""
    done = finished_parts(parts)
    wanted = {(c["case_id"], c["image_sha256"], c["mask_sha256"]) for c in cases}
    order = {c["case_id"]: i for i, c in enumerate(cases)}
    by_part: dict[str, set[str]] = {}
    for key, (name, _) in done.items():
        if key in wanted:
            by_part.setdefault(name, set()).add(key[0])
    frames, pframes, failures = [], [], []
    for name in sorted(by_part):
        index = json.loads((parts / f"{name}.json").read_text())
        keep = by_part[name]
        if index["rows"]:
            df = pd.read_parquet(parts / f"{name}.rows.parquet")
            frames.append(df[df["case_id"].isin(keep)])
        if index["perturbations"]:
            df = pd.read_parquet(parts / f"{name}.perturb.parquet")
            pframes.append(df[df["case_id"].isin(keep)])
        failures += [f for f in index["failures"] if f["case_id"] in keep]
    # the latest attempt of a case that failed (it is not in `done`, so read its newest part)
    failed_now = [c for c in cases if (c["case_id"], c["image_sha256"], c["mask_sha256"]) not in done]
    failures += latest_failures(parts, failed_now)
    return frames, pframes, failures, order


def write_extraction(
    out: Path,
    table: pd.DataFrame,
    failures: list[dict[str, Any]],
    pframes: list[pd.DataFrame] | None,
    prov: dict[str, Any],
    order: dict[str, int],
    computed: int,
) -> ExtractResult:
    """Write a cohort extraction atomically: the table, its provenance, failures and (unless
    ``pframes`` is None) the perturbation table, all beside ``out``."""
    fail_df = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
    fail_df = fail_df.sort_values(["case_id", "stage"], key=lambda s: s.map(order) if s.name == "case_id" else s)
    fail_df = fail_df.reset_index(drop=True)
    prov["n_cases"], prov["n_rows"], prov["n_failed"] = (
        len(order),
        len(table),
        int(fail_df["stage"].isin(CASE_STAGES).sum()),
    )
    paths = {
        "table": out,
        "provenance": out.with_name(out.stem + ".provenance.json"),
        "failures": out.with_name(out.stem + ".failures.csv"),
    }
    write_parquet(out, table, prov)
    atomic_write_text(paths["provenance"], json.dumps(prov, indent=2, default=str))
    with atomic_path(paths["failures"]) as tmp:
        fail_df.to_csv(tmp, index=False)
    perturbations = None
    if pframes is not None:
        perturbations = (
            pd.concat(pframes, ignore_index=True) if pframes else pd.DataFrame(columns=["case_id", "perturbation"])
        )
        perturbations = perturbations.sort_values(
            ["case_id", "perturbation"], key=lambda s: s.map(order) if s.name == "case_id" else s, kind="stable"
        ).reset_index(drop=True)
        paths["perturbations"] = out.with_name(out.stem + ".perturbations.parquet")
        write_parquet(paths["perturbations"], perturbations, {**prov, "table": "perturbations"})
    return ExtractResult(table, fail_df, perturbations, len(order), computed, paths)
