"""Statistics and image-quality metrics: the analyses the studies publish, checked against R.

- ROC: :func:`roc_auc_ci`, :func:`delong_test` (match R pROC), :func:`plot_roc`.
- Thresholds: :func:`youden_threshold`, :func:`threshold_metrics` (Wilson CIs).
- Calibration: :func:`calibration_curve`, :func:`calibration_slope_intercept`, :func:`brier_score`,
  :func:`hosmer_lemeshow` (R ResourceSelection's algorithm), :func:`plot_calibration`.
- Decision curves: :func:`net_benefit` (matches R dcurves), :func:`plot_decision_curve`.
- Nomogram (R rms style) and waterfall plot: :func:`nomogram`, :func:`plot_waterfall`.
- Survival: :func:`kaplan_meier`, :func:`logrank_test` (lifelines; match R survdiff),
  :func:`score_groups`, :func:`plot_kaplan_meier`.
- Agreement: :func:`icc` (the six Shrout-Fleiss forms).

Every plot is drawn in :func:`usher2.evaluate.figures.figure_style` and saved as PNG (300 dpi)
and SVG; each analysis also returns its numbers as a DataFrame. The submodules ``segmentation``
and ``image_quality`` hold the segmentation and enhancement metrics.
"""

from __future__ import annotations

from usher2.evaluate.agreement import icc
from usher2.evaluate.bootstrap import BootstrapValidation, bootstrap_validation
from usher2.evaluate.calibration import (
    CalibrationFit,
    HosmerLemeshowResult,
    brier_score,
    calibration_curve,
    calibration_slope_intercept,
    hosmer_lemeshow,
    plot_calibration,
    scaled_brier_score,
)
from usher2.evaluate.dca import net_benefit, plot_decision_curve
from usher2.evaluate.nomogram import Nomogram, nomogram
from usher2.evaluate.roc import AUCResult, DeLongResult, delong_test, roc_auc_ci
from usher2.evaluate.roc_plot import plot_roc, roc_band
from usher2.evaluate.survival import LogRankResult, kaplan_meier, logrank_test, plot_kaplan_meier, score_groups
from usher2.evaluate.threshold import (
    Proportion,
    ThresholdMetrics,
    threshold_metrics,
    wilson_proportion,
    youden_threshold,
)
from usher2.evaluate.waterfall import plot_waterfall, waterfall_table

__all__ = [
    "AUCResult",
    "BootstrapValidation",
    "CalibrationFit",
    "DeLongResult",
    "HosmerLemeshowResult",
    "LogRankResult",
    "Nomogram",
    "Proportion",
    "ThresholdMetrics",
    "bootstrap_validation",
    "brier_score",
    "calibration_curve",
    "calibration_slope_intercept",
    "delong_test",
    "hosmer_lemeshow",
    "icc",
    "kaplan_meier",
    "logrank_test",
    "net_benefit",
    "nomogram",
    "plot_calibration",
    "plot_decision_curve",
    "plot_kaplan_meier",
    "plot_roc",
    "plot_waterfall",
    "roc_auc_ci",
    "roc_band",
    "scaled_brier_score",
    "score_groups",
    "threshold_metrics",
    "waterfall_table",
    "wilson_proportion",
    "youden_threshold",
]
