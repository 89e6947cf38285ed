"""The 3D MRI adapter: read MRI studies, prepare them, and feed the same fusion core.

Modules:

* :mod:`usher2.mri.io` — NIfTI/NRRD/DICOM-series volumes, studies split into sequences (by
  SeriesDescription or a mapping), 4D DCE with acquisition times, DWI by b-value, masks checked
  against the sequences' grids; de-identified metadata only.
* :mod:`usher2.mri.adc` — the ADC map from DWI (mono-exponential, log-linear least squares).
* :mod:`usher2.mri.prepare` — resampling (label-preserving for masks), foreground z-score
  normalisation, optional N4, rigid Mattes-MI registration with a before/after report, quality flags.
* :mod:`usher2.mri.kinetics` — DCE kinetic features and the curve type.
* :mod:`usher2.mri.phantom` — seeded multi-sequence MRI phantoms with known truth (oracle AUCs,
  survival times, HER2-low among negatives); breast and prostate anatomies.
* :mod:`usher2.mri.manifest` — the MRI manifest: one path column per sequence.
* :mod:`usher2.mri.features` — the MRI feature table: per-sequence 3D radiomics
  (``<sequence>_radiomics_*``, with a peritumoral shell), DCE kinetics (``dce_kinetics_*``), 2.5D
  deep features (``<sequence>_deep_<backbone>_*``), perturbations for the ICC; resumable cohorts.
* :mod:`usher2.mri.birads` — BI-RADS MRI descriptor encoding (and a simulated reader for phantoms).
* :mod:`usher2.mri.recipes` — the four MRI study recipes (``usher2 mri reproduce STUDY``) on the
  shared fusion core, evaluation and report.

Example:
    >>> from usher2.mri import CURVE_TYPES, classify_curve
    >>> CURVE_TYPES[int(classify_curve(-15.0))]
    'washout'
"""

from usher2.mri.adc import adc_map
from usher2.mri.birads import BIRADS_DESCRIPTORS, birads_columns, encode_birads, phantom_descriptors
from usher2.mri.features import MRIExtractConfig, extract_mri_cohort, mri_case_features
from usher2.mri.io import MRI_SAFE_TAGS, VOLUME_SUFFIXES, Volume, read_mask, read_study, read_volume
from usher2.mri.kinetics import CURVE_TYPES, classify_curve, kinetic_features
from usher2.mri.manifest import read_mri_manifest
from usher2.mri.phantom import (
    MRICase,
    MRILabelModel,
    MRIPhantomConfig,
    ProstateLabelModel,
    mri_oracle_aucs,
    mri_oracle_scores,
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
from usher2.mri.recipes import STUDIES, load_recipe, reproduce

__all__ = [
    "BIRADS_DESCRIPTORS",
    "CURVE_TYPES",
    "MRI_SAFE_TAGS",
    "STUDIES",
    "VOLUME_SUFFIXES",
    "MRICase",
    "MRIExtractConfig",
    "MRILabelModel",
    "MRIPhantomConfig",
    "PreparedCase",
    "ProstateLabelModel",
    "Volume",
    "adc_map",
    "birads_columns",
    "classify_curve",
    "encode_birads",
    "extract_mri_cohort",
    "foreground_mask",
    "kinetic_features",
    "load_recipe",
    "mri_case_features",
    "mri_oracle_aucs",
    "mri_oracle_scores",
    "n4",
    "normalise",
    "phantom_descriptors",
    "prepare_case",
    "read_mask",
    "read_mri_manifest",
    "read_study",
    "read_volume",
    "register_rigid",
    "reproduce",
    "resample",
    "resample_mask",
    "simulate_mri_case",
    "simulate_mri_cohort",
    "simulate_mri_labels",
]
