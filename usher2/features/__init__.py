"""Stage 3: named feature rows from a frame and its lesion mask, and whole-cohort feature tables.

* :class:`RadiomicsExtractor`: pyradiomics on true 2D frames (and 3D volumes), ``radiomics_*`` columns;
* :class:`DeepExtractor`: pooled pre-logit features of a timm backbone on the ROI crop, ``deep_*`` columns;
* :func:`extract_cohort`: a manifest in, a Parquet feature table with provenance out (Dask, resume, perturbations).
"""

from __future__ import annotations

from usher2.features.deep import DEFAULT_BACKBONE, DeepExtractor, RandomInitWarning, roi_crop
from usher2.features.extract import ExtractConfig, ExtractResult, extract_cohort, read_feature_table
from usher2.features.radiomics import DEFAULT_PARAMS, RadiomicsExtractor, load_params

__all__ = [
    "DEFAULT_BACKBONE",
    "DEFAULT_PARAMS",
    "DeepExtractor",
    "ExtractConfig",
    "ExtractResult",
    "RadiomicsExtractor",
    "RandomInitWarning",
    "extract_cohort",
    "load_params",
    "read_feature_table",
    "roi_crop",
]
