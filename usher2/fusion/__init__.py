"""Stage 4: feature tables + clinical columns -> calibrated probabilities.

* :mod:`usher2.fusion.selection`: ICC filter, univariate filter, Spearman pruning, LASSO (Radscore);
* :mod:`usher2.fusion.models`: model families, the classifier zoo, early and late fusion;
* :mod:`usher2.fusion.cv`: patient-grouped nested CV, fixed splits, the final refit (with perturbed
  training copies kept with their patient);
* :mod:`usher2.fusion.confidence`: the ``low_segmentation_confidence`` threshold, calibrated on
  out-of-fold segmentations;
* :mod:`usher2.fusion.bundle` and :mod:`usher2.fusion.validate`: model bundles, their checks at load
  (hashes, optional HMAC signature, trusted types, every fitted object's data).
"""

from __future__ import annotations

from usher2.fusion.confidence import ConfidenceThreshold, calibrate_confidence
from usher2.fusion.cv import CVResult, fit_final, nested_cv, selected_features
from usher2.fusion.models import (
    CLASSIFIER_SPECS,
    CLASSIFIERS,
    FAMILIES,
    LateFusionClassifier,
    build_model,
    clinical_selector,
    family_columns,
    imaging_selector,
    make_classifier,
)
from usher2.fusion.selection import CorrelationPruner, ICCFilter, LassoSelector, UnivariateFilter
from usher2.fusion.validate import validate_model

__all__ = [
    "CLASSIFIERS",
    "CLASSIFIER_SPECS",
    "FAMILIES",
    "CVResult",
    "ConfidenceThreshold",
    "CorrelationPruner",
    "ICCFilter",
    "LassoSelector",
    "LateFusionClassifier",
    "UnivariateFilter",
    "build_model",
    "calibrate_confidence",
    "clinical_selector",
    "family_columns",
    "fit_final",
    "imaging_selector",
    "make_classifier",
    "nested_cv",
    "selected_features",
    "validate_model",
]
