"""Frame-level feature extraction: named feature rows of frames and their lesion masks, one chunk of a cohort at a time.

For every case the frame is read, optionally cleaned of burned-in overlays and enhanced, its
lesion mask is taken from the manifest (``masks="given"``) or predicted by the segmenter
(``masks="predicted"``), and one row of radiomics (:mod:`usher2.features.radiomics`, plus the
BI-RADS lexicon descriptors of :mod:`usher2.features.lexicon` and the regions around the lesion
of :mod:`usher2.features.regions`) and deep features (:mod:`usher2.features.deep`, one block
per backbone) is computed.

* :func:`frame_features`: the feature rows of in-memory ``(pixels, mask, spacing)`` items, every
  column or only the wanted ones (:mod:`usher2.features.subset`);
* :func:`prepare_pixels`: one frame cleaned, enhanced and masked;
* :func:`extract_chunk`: one chunk of cases: feature rows, perturbation rows
  (:mod:`usher2.features.perturb`) and failures (picklable, for Dask).

The whole cohort, with its outputs (the Parquet table and its provenance, the failures, the
perturbation table), the Dask execution and the resume, is :func:`~usher2.features.cohort.extract_cohort`:
see :mod:`usher2.features.cohort`. The settings are :class:`~usher2.features.config.ExtractConfig`
(:mod:`usher2.features.config`); masks from stored probability maps are
:func:`~usher2.features.masks.predicted_masks`. Every public name this module held before the split is
still importable from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from usher2.features.config import (
    AREA_COLUMNS,
    CASE_STAGES,
    FAILURE_COLUMNS,
    GEOMETRIC_PERTURBATIONS,
    ID_COLUMNS,
    NO_LESION_STAGE,
    PERTURBATION_CHOICES,
    PERTURBATIONS,
    REGIONS,
    ExtractConfig,
)
from usher2.features.lexicon import lexicon_features
from usher2.features.masks import predicted_masks
from usher2.features.models import deep_extractor as _deep
from usher2.features.models import enhancer as _enhancer
from usher2.features.models import in_dask_worker as _in_dask_worker
from usher2.features.models import on_cpu as _on_cpu
from usher2.features.models import radiomics_extractor as _radiomics
from usher2.features.models import segmenter as _segmenter
from usher2.features.models import torch_threads as _torch_threads
from usher2.features.models import with_segmenter_weights
from usher2.features.perturb import CONTOUR_ERROR, contour_error, contour_seed, perturbation_rows
from usher2.features.regions import (
    MIN_REGION_PX,
    radiomics_rows,
    region_masks,
    region_rows,
)
from usher2.features.subset import subset_features, wanted_columns
from usher2.io.errors import InputError, NoLesion

__all__ = [
    "AREA_COLUMNS",
    "CASE_STAGES",
    "CONTOUR_ERROR",
    "FAILURE_COLUMNS",
    "GEOMETRIC_PERTURBATIONS",
    "ID_COLUMNS",
    "MIN_REGION_PX",
    "NO_LESION_STAGE",
    "PERTURBATIONS",
    "PERTURBATION_CHOICES",
    "REGIONS",
    "ExtractConfig",
    "ExtractResult",
    "collect_parts",
    "contour_error",
    "contour_seed",
    "extract_chunk",
    "extract_cohort",
    "frame_features",
    "predicted_masks",
    "prepare_pixels",
    "read_feature_table",
    "region_masks",
    "run_extraction",
    "with_segmenter_weights",
    "write_extraction",
]


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
            column of ``cfg`` (what :func:`~usher2.features.cohort.extract_cohort` writes).

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
        return subset_features(cfg, items, wanted_columns(cfg, columns))
    rows: list[Any] = [{} for _ in items]
    if cfg.radiomics:
        rows = [r if isinstance(r, InputError) else dict(r) for r in radiomics_rows(_radiomics(cfg), items)]
        ok = [i for i, r in enumerate(rows) if isinstance(r, dict)]
        for i, extra in zip(ok, region_rows(cfg, [items[i] for i in ok]), strict=True):
            rows[i].update(extra)
            if cfg.lexicon:
                rows[i].update(lexicon_features(*items[i]))
    ok = [i for i, r in enumerate(rows) if isinstance(r, dict)]
    for spec in cfg.backbones:
        deep = _deep(cfg, spec)
        feats = deep.features([items[i][0] for i in ok], [items[i][1] for i in ok]) if ok else []
        for j, i in enumerate(ok):
            rows[i].update(zip(deep.columns, map(float, feats[j]), strict=True))
    return rows


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
    """Clean, enhance and mask one in-memory frame, as :func:`~usher2.features.cohort.extract_cohort` does for a case.

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
        prows, pfail = perturbation_rows(cfg, good, frame_features, _prepare)
        failures += pfail
    return {"rows": rows, "perturbations": prows, "failures": failures}


# The cohort run sits above this module (it sends extract_chunk to the workers); re-exported for
# ``from usher2.features.extract import extract_cohort``. Last, so that the cohort module, imported
# from here, finds extract_chunk already defined.
from usher2.features.cohort import (  # noqa: E402
    ExtractResult,
    collect_parts,
    extract_cohort,
    read_feature_table,
    run_extraction,
    write_extraction,
)
