"""Seeded synthetic breast-ultrasound cohort with known truth.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from usher2.simulate import SimulationConfig, oracle_aucs, simulate_cohort, simulate_labels
    >>> aucs = oracle_aucs(simulate_labels(20000, seed=0))
    >>> aucs["clinical"] < aucs["image"] < aucs["all"]
    True
"""

from usher2.simulate.anatomy import LesionTraits
from usher2.simulate.cohort import simulate_cohort
from usher2.simulate.config import RenderSettings, SimulationConfig
from usher2.simulate.labels import LabelModel, oracle_auc, oracle_aucs, oracle_scores, simulate_labels
from usher2.simulate.render import RenderedFrame, render_frame
from usher2.simulate.speckle import RAYLEIGH_SNR, envelope_snr, homogeneous_envelope

__all__ = [
    "RAYLEIGH_SNR",
    "LabelModel",
    "LesionTraits",
    "RenderSettings",
    "RenderedFrame",
    "SimulationConfig",
    "envelope_snr",
    "homogeneous_envelope",
    "oracle_auc",
    "oracle_aucs",
    "oracle_scores",
    "render_frame",
    "simulate_cohort",
    "simulate_labels",
]
