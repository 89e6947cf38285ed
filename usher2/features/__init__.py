"""Stage 3: named feature rows from a frame and its lesion mask (radiomics now; deep features to come)."""

from __future__ import annotations

from usher2.features.radiomics import DEFAULT_PARAMS, RadiomicsExtractor, load_params

__all__ = ["DEFAULT_PARAMS", "RadiomicsExtractor", "load_params"]
