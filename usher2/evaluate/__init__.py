"""Statistics and image-quality metrics.

Public names: :func:`roc_auc_ci` and :func:`delong_test` (ROC, DeLong; match R pROC) and
:func:`icc` (the six Shrout-Fleiss forms); the submodules hold segmentation and image-quality
metrics.
"""

from __future__ import annotations

from usher2.evaluate.agreement import icc
from usher2.evaluate.roc import delong_test, roc_auc_ci

__all__ = ["delong_test", "icc", "roc_auc_ci"]
