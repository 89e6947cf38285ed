"""The 3D MRI adapter: read MRI studies, prepare them, and feed the same fusion core.

Landed so far (issue 9, in progress):

* :mod:`usher2.mri.io` — NIfTI/NRRD/DICOM-series volumes, studies split into sequences (by
  SeriesDescription or a mapping), 4D DCE with acquisition times, DWI by b-value, masks checked
  against the sequences' grids; de-identified metadata only.
* :mod:`usher2.mri.adc` — the ADC map from DWI (mono-exponential, log-linear least squares).
* :mod:`usher2.mri.prepare` — resampling (label-preserving for masks), foreground z-score
  normalisation, optional N4, rigid Mattes-MI registration with a before/after report, quality flags.
* :mod:`usher2.mri.kinetics` — DCE kinetic features and the curve type.
* :mod:`usher2.mri.phantom` — seeded multi-sequence MRI phantoms with known truth (oracle AUCs,
  survival times).

Example:
    >>> from usher2.mri import CURVE_TYPES, classify_curve
    >>> CURVE_TYPES[int(classify_curve(-15.0))]
    'washout'
"""

from usher2.mri.adc import adc_map
from usher2.mri.io import MRI_SAFE_TAGS, VOLUME_SUFFIXES, Volume, read_mask, read_study, read_volume
from usher2.mri.kinetics import CURVE_TYPES, classify_curve, kinetic_features
from usher2.mri.phantom import (
    MRICase,
    MRILabelModel,
    MRIPhantomConfig,
    mri_oracle_aucs,
    simulate_mri_case,
    simulate_mri_cohort,
    simulate_mri_labels,
)
from usher2.mri.prepare import (
    PreparedCase,
    foreground_mask,
    n4,
    normalise,
    prepare_case,
    register_rigid,
    resample,
    resample_mask,
)

__all__ = [
    "CURVE_TYPES",
    "MRI_SAFE_TAGS",
    "VOLUME_SUFFIXES",
    "MRICase",
    "MRILabelModel",
    "MRIPhantomConfig",
    "PreparedCase",
    "Volume",
    "adc_map",
    "classify_curve",
    "foreground_mask",
    "kinetic_features",
    "mri_oracle_aucs",
    "n4",
    "normalise",
    "prepare_case",
    "read_mask",
    "read_study",
    "read_volume",
    "register_rigid",
    "resample",
    "resample_mask",
    "simulate_mri_case",
    "simulate_mri_cohort",
    "simulate_mri_labels",
]
