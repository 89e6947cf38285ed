"""Stage 5: explainability. Class activation maps, where they are drawn, and how faithful they are.

- :mod:`usher2.explain.cam`: :func:`explain`, the Grad-CAM family (:data:`CAM_METHODS`) on CNNs,
  ViTs and segmentation networks.
- :mod:`usher2.explain.targets`: what a head-less backbone's CAM explains.
- :mod:`usher2.explain.frame`: :func:`explain_frame` (the deep backbone's ROI crop, pasted back
  into the frame), :func:`overlay`, :func:`save_cam_pngs`.
- :mod:`usher2.explain.faithfulness`: ROAD and confidence-change scores per map.
- :mod:`usher2.explain.shapley`: SHAP values of tree and linear fusion models
  (:func:`shap_values`), their beeswarm and per-case waterfall plots, and the numbers as a table.

Example:
    >>> sorted(CAM_METHODS)
    ['eigencam', 'gradcam', 'gradcam++', 'layercam', 'scorecam']
"""

from __future__ import annotations

from usher2.explain.cam import (
    CAM_METHODS,
    default_target_layers,
    explain,
    segmentation_targets,
    vit_reshape_transform,
)
from usher2.explain.faithfulness import FAITHFULNESS_METRICS, faithfulness
from usher2.explain.frame import FrameCAM, explain_frame, overlay, paste_back, save_cam_pngs
from usher2.explain.shapley import SHAP_MODELS, plot_shap_summary, plot_shap_waterfall, shap_table, shap_values
from usher2.explain.targets import ClassifierOutputTarget, LinearTarget, PooledFeatureTarget

__all__ = [
    "CAM_METHODS",
    "FAITHFULNESS_METRICS",
    "SHAP_MODELS",
    "ClassifierOutputTarget",
    "FrameCAM",
    "LinearTarget",
    "PooledFeatureTarget",
    "default_target_layers",
    "explain",
    "explain_frame",
    "faithfulness",
    "overlay",
    "paste_back",
    "plot_shap_summary",
    "plot_shap_waterfall",
    "save_cam_pngs",
    "segmentation_targets",
    "shap_table",
    "shap_values",
    "vit_reshape_transform",
]
