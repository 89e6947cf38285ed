r"""Seeded synthetic MRI phantoms with known truth: breast (T1, T2, DCE series, DWI/ADC; HER2 status,
HER2-low among the negatives) and prostate (T2, DWI/ADC; a binary prostate outcome).

``MRIPhantomConfig(anatomy="breast")`` (the default) is described first; the prostate variant
(``anatomy="prostate"``) has its own section below and shares the grid, noise, bias, survival and
file conventions.

Grid
----
Arrays are indexed ``(z, y, x)`` and the config speaks the same order: ``shape_zyx`` voxels of
``spacing_zyx_mm``. The default (24, 96, 96) voxels of (3, 1, 1) mm covers 72 × 96 × 96 mm; the
study target spacing (3, 0.5, 0.5) mm and a 40 × 256 × 256 grid are one config away. The NIfTI
files carry the spacing in SimpleITK's (x, y, z) order.

Anatomy and image formation
---------------------------
A cylindrical breast (an ellipse filling 94 % of each in-plane axis, all slices) holds fat and
fibroglandular tissue (FGT): a smooth random field (coarse Gaussian noise, interpolated) is
thresholded softly into an FGT fraction. The lesion is an ellipsoid (longest diameter
``trait_size_mm``, the other two 0.6–1 × it, rotated in-plane) whose surface carries lobulation
bumps of relative amplitude ``0.3 · trait_lobulation``; around it a peritumoral oedema shell of
``trait_edema_mm``. Every sequence is ``tissue signal × smooth multiplicative bias field`` plus
Rician noise ``|S + σ(n₁ + i n₂)|`` with ``σ = noise`` (signal units where fat on T1 is 1):

==========  =======  =======  ================  ========  ====================================
tissue      T1       T2       DCE baseline      DWI b=0   ADC (10⁻³ mm²/s)
==========  =======  =======  ================  ========  ====================================
air         0        0        0                 0         —
fat         1.00     0.60     0.12 (fat-sat)    0.15      0.8
FGT         0.40     0.30     0.30              0.60      1.7
lesion      0.45     0.40     0.35              0.70      ``trait_adc``
oedema      0.40     1.00     0.28              0.90      2.2
==========  =======  =======  ================  ========  ====================================

**DCE.** With ``t_e`` the last phase within ``early_time_s`` of the baseline and ``t_L`` the
last phase, a lesion voxel's signal is ``S0 (1 + A g(t))`` up to ``t_e`` with
``g = (1 − e^{−t/τ}) / (1 − e^{−t_e/τ})`` (τ ~ U(30, 90) s) and
``S0 (1 + A) (1 + c (t − t_e) / (t_L − t_e))`` after it: ``A`` is the voxel's early enhancement
(``trait_peak_enhancement_pct`` × 0.85–1.15, stronger at the rim) and ``c =
trait_late_change_pct / 100`` the late change from the early peak, so the curve type that
:func:`usher2.mri.kinetics.kinetic_features` reads is the simulated one. FGT enhances slowly
(15 % × (1 − e^{−t/200})); fat and air do not. **DWI** follows ``S_b = S_0 e^{−b·ADC}`` for
every b in ``b_values``; the ADC map is the log-linear least-squares fit over the noisy DWI
(clipped to [0, 4]).

Files store ``round(1000 · signal)`` as int16, so an ADC file is in 10⁻⁶ mm²/s. The 4D DCE file's
fourth spacing is 1 (not a time step: phases need not be evenly spaced); the phase times are in
the manifest's ``dce_times_s`` and in ``simulation.json``.

Label model
-----------
As in :mod:`usher2.simulate.labels`: every variable is drawn **independently** from its prior,
:math:`z_j = f_j(x_j)`, :math:`\eta = b_0 + \sum_j \beta_j z_j`, ``true_prob`` = σ(η),
``label`` ~ Bernoulli(``true_prob``).

===========================  ======================================  ===========================  =====
variable (column)            prior                                   transform :math:`z_j`        β
===========================  ======================================  ===========================  =====
age                          round(N(52, 11)) clipped to [25, 85]    (age − 52) / 11              −0.40
tumour_size_mm (shared)      LogNormal(ln 20, 0.35), [8, 40], 0.1    ln(size / 20) / 0.35         +0.35
er                           Bernoulli(0.70)                         er                           −1.40
pr                           Bernoulli(0.60)                         pr                           −0.60
grade                        {1, 2, 3} w.p. (0.20, 0.45, 0.35)       grade − 2                    +0.70
ki67 (%)                     round(100 · Beta(1.5, 4))               (ki67 − 27) / 17.5           +0.50
trait_lobulation             Beta(1.5, 2.5)                          (x − 0.375) / 0.217          +0.60
trait_curve_type             {0, 1, 2} w.p. (0.35, 0.35, 0.30)       (x − 0.95) / 0.805           +0.90
trait_peak_enhancement_pct   U(60, 200)                              (x − 130) / 40.4             +0.25
trait_edema_mm               0 w.p. 0.5, else U(1, 5)                (x − 1.5) / 1.71             +0.60
trait_adc                    N(1.1, 0.2) clipped to [0.6, 1.8]       (x − 1.1) / 0.2              −0.80
===========================  ======================================  ===========================  =====

with :math:`b_0 = -0.10` (prevalence ≈ 0.30). Curve types are 0 persistent, 1 plateau,
2 washout, so washout is more frequent among positives. The "clinical" view is {age,
tumour_size_mm, er, pr, grade, ki67}; the "image" view is {tumour_size_mm, every ``trait_*``
above}; "all" is their union. Not in η (descriptive only): ``menopausal`` = 1 when age ≥ 51
(a function of age), ``trait_size_mm`` (= ``tumour_size_mm``) and ``trait_late_change_pct``,
drawn given the curve type from U(15, 40) (persistent), U(−5, 5) (plateau) or U(−30, −15)
(washout): the ±10 % rule has a 5 % margin on both sides.

Oracle AUCs (labels-only simulation, 400,000 patients, seed 0): 0.713 clinical, 0.788 image,
0.858 all; 27 % of patients have a DFS event. The oracle score of a subset S is
:math:`E[\sigma(\eta_S + u)]` over the prior of the other terms :math:`u` (fixed-seed Monte
Carlo), strictly increasing in :math:`\eta_S`.

HER2-low among the negatives
----------------------------
Every HER2-negative patient (``label`` = 0) also carries ``her2_low`` (1 = HER2-low, IHC 1+ or
2+/ISH−; 0 = HER2-zero), drawn from its own logistic model of the same variables,
``her2_low_prob`` = σ(η_low), ``her2_low`` ~ Bernoulli(``her2_low_prob``); both are empty (NaN)
for the positives. It has its own random stream (drawn for every patient, then blanked for the
positives), so every other column is unchanged by it:

===========================  ===========================  =====
variable                     transform                    γ
===========================  ===========================  =====
er                           er                           +1.20
pr                           pr                           +0.50
grade                        grade − 2                    −0.40
trait_curve_type             1 when plateau (= 1) else 0  +1.00
trait_peak_enhancement_pct   (x − 130) / 40.4             −0.50
trait_adc                    (x − 1.1) / 0.2              +0.50
===========================  ===========================  =====

with intercept −0.90: HER2-low is more frequent among ER-positive, lower-grade tumours with a
plateau curve, milder enhancement and higher ADC. Oracle AUCs of HER2-low vs HER2-zero among the
negatives (``mri_oracle_aucs(…, task="her2_low")``, 400,000 patients, seed 0):
0.640 clinical, 0.695 image, 0.747 all; 65 % of the
negatives are HER2-low. The oracle score of a subset S is the Bayes score among the negatives,
:math:`P(\text{low} \mid x_S, \text{label}=0)`: the other variables are averaged over their
prior weighted by ``1 − true_prob`` (fixed-seed Monte Carlo).

Prostate
--------
``anatomy="prostate"`` draws a pelvis on the same grid: a body ellipse (94 % of each in-plane
axis, all slices) of fat holding a central soft-tissue region (muscle, 75 % of the body ellipse,
mixed with fat by a smooth random field). The prostate gland is an ellipsoid of volume
``prostate_volume_ml`` with semi-axes 1.25 k : 0.9 k : k (left-right, antero-posterior along +y,
cranio-caudal), centred within ±3 mm of the grid centre. Its transition zone (TZ) is 0.6 × the
gland, shifted anteriorly (−y) by 0.3 of the antero-posterior semi-axis; the rest is the
peripheral zone (PZ). Gland signals carry a mild texture (× (1 + 0.08 · a smooth field, 6 mm
cells)). The lesion is the breast lesion's lobulated ellipsoid (``trait_size_mm``,
``trait_lobulation``; no oedema) centred in the posterolateral PZ, left or right, at 0.55 of the
antero-posterior and 0.35 of the left-right semi-axis from the gland centre (jittered), so large
lesions can reach beyond the capsule. Sequences are "t1", "t2", "adc" and "dwi" (no DCE; asking
for it is an error); defaults ("t2", "adc", "dwi"):

==========  =======  ======================================  ========  ===================
tissue      T1       T2                                      DWI b=0   ADC (10⁻³ mm²/s)
==========  =======  ======================================  ========  ===================
air         0        0                                       0         —
fat         1.00     0.60                                    0.15      0.8
muscle      0.35     0.15                                    0.40      1.4
PZ          0.35     0.80                                    0.70      1.8
TZ          0.35     0.45                                    0.60      1.3
lesion      0.35     0.80 · (1 − ``trait_t2_contrast``)      0.75      ``trait_adc``
==========  =======  ======================================  ========  ===================

so ``trait_t2_contrast`` is how much darker than the PZ the lesion is on T2, and ADC and DWI
follow the breast formulas. ``MRICase.gland`` holds the gland mask (not written to disk).

The label is a binary prostate outcome (e.g. adverse pathology or clinically significant disease,
whatever the study calls its endpoint), drawn as above from
:class:`ProstateLabelModel`:

===========================  ======================================  ===========================  =====
variable (column)            prior                                   transform :math:`z_j`        β
===========================  ======================================  ===========================  =====
age                          round(N(66, 7)) clipped to [45, 85]     (age − 66) / 7               +0.25
psa (ng/mL)                  LogNormal(ln 7, 0.6), [1, 100], 0.01    ln(psa / 7) / 0.6            +0.70
isup                         {1, …, 5} w.p. (.3, .3, .2, .1, .1)     (isup − 2.4) / 1.28          +0.90
prostate_volume_ml           LogNormal(ln 45, 0.35), [20, 120], 0.1  ln(v / 45) / 0.35            −0.45
tumour_size_mm (= trait_…)   LogNormal(ln 14, 0.35), [6, 30], 0.1    ln(size / 14) / 0.35         +0.60
trait_lobulation             Beta(1.5, 2.5)                          (x − 0.375) / 0.217          +0.60
trait_adc                    N(1.0, 0.2) clipped to [0.5, 1.6]       (x − 1.0) / 0.2              −1.10
trait_t2_contrast            U(0.2, 0.7)                             (x − 0.45) / 0.1443          +0.70
===========================  ======================================  ===========================  =====

with :math:`b_0 = -0.55`. The larger gland lowers the risk at a given PSA (the PSA-density
effect). Views: "clinical" {age, psa, isup, prostate_volume_ml}; "image" {tumour_size_mm,
trait_lobulation, trait_adc, trait_t2_contrast}; "all" their union. Survival columns (here
read as recurrence-free survival) follow the same model. Oracle AUCs (labels-only simulation,
400,000 patients, seed 0): 0.722 clinical,
0.774 image, 0.863 all; prevalence 0.41, 38 % have an event.

Survival
--------
Disease-free survival ties to the true risk through a proportional-hazards model:
event time ~ Exponential(rate ``0.01 · exp(0.8 η)`` per month), censoring ~ U(24, 84) months;
``dfs_time`` = min of the two (months, 0.1), ``dfs_event`` = 1 when the event came first.
Survival has its own random stream, so turning it off changes nothing else.

Cohort layout under ``out``::

    t1/<case_id>.nii.gz  t2/…  adc/…      one 3D volume per sequence
    dce/<case_id>.nii.gz                   one 4D volume (T, Z, Y, X); times in ``dce_times_s``
    dwi_b<b>/<case_id>.nii.gz              one per b-value when "dwi" is in ``sequences``
    masks/<case_id>.nii.gz                 lesion mask, 0/1 uint8
    manifest.csv                           one row per case, paths relative to it (breast rows end with
                                           ``her2_low``, ``her2_low_prob``)
    simulation.json                        seed, n and the full config
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from usher2 import __version__
from usher2.io.atomic import atomic_path, atomic_write_text
from usher2.io.errors import InputError
from usher2.simulate.labels import draw_in_blocks

__all__ = [
    "ANATOMIES",
    "MRICase",
    "MRILabelModel",
    "MRIPhantomConfig",
    "ProstateLabelModel",
    "mri_oracle_aucs",
    "mri_oracle_scores",
    "mri_truth_design",
    "simulate_mri_case",
    "simulate_mri_cohort",
    "simulate_mri_labels",
]

ANATOMIES: tuple[str, ...] = ("breast", "prostate")
SEQUENCES: tuple[str, ...] = ("t1", "t2", "dce", "adc", "dwi")
PROSTATE_SEQUENCES: tuple[str, ...] = ("t1", "t2", "adc", "dwi")
_DEFAULT_SEQUENCES = {"breast": ("t1", "t2", "dce", "adc"), "prostate": ("t2", "adc", "dwi")}
CURVE_TYPES: tuple[str, ...] = ("persistent", "plateau", "washout")
CLINICAL_VARIABLES: tuple[str, ...] = ("age", "tumour_size_mm", "er", "pr", "grade", "ki67")
IMAGE_VARIABLES: tuple[str, ...] = (
    "tumour_size_mm",
    "trait_lobulation",
    "trait_curve_type",
    "trait_peak_enhancement_pct",
    "trait_edema_mm",
    "trait_adc",
)
ALL_VARIABLES: tuple[str, ...] = CLINICAL_VARIABLES + IMAGE_VARIABLES[1:]
_SUBSETS: dict[str, tuple[str, ...]] = {"clinical": CLINICAL_VARIABLES, "image": IMAGE_VARIABLES, "all": ALL_VARIABLES}
PROSTATE_CLINICAL_VARIABLES: tuple[str, ...] = ("age", "psa", "isup", "prostate_volume_ml")
PROSTATE_IMAGE_VARIABLES: tuple[str, ...] = ("tumour_size_mm", "trait_lobulation", "trait_adc", "trait_t2_contrast")
PROSTATE_ALL_VARIABLES: tuple[str, ...] = PROSTATE_CLINICAL_VARIABLES + PROSTATE_IMAGE_VARIABLES
_PROSTATE_SUBSETS: dict[str, tuple[str, ...]] = {
    "clinical": PROSTATE_CLINICAL_VARIABLES,
    "image": PROSTATE_IMAGE_VARIABLES,
    "all": PROSTATE_ALL_VARIABLES,
}
TASKS: tuple[str, ...] = ("label", "her2_low")

_LABEL_STREAM = 0x3D1AB  # tags that keep the label, survival, HER2-low and image streams apart
_SURV_STREAM = 0x3D5A1
_IMAGE_STREAM = 0x3D13A
_HER2_LOW_STREAM = 0x3D10E


def _check_coefficients(model: object) -> None:
    for f in fields(model):  # type: ignore[arg-type]
        v = getattr(model, f.name)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or abs(v) > 20:
            raise ValueError(f"{type(model).__name__}.{f.name} must be a finite number in [-20, 20], got {v!r}")


@dataclass(frozen=True)
class MRILabelModel:
    """Coefficients of the breast MRI HER2 logistic model (transforms in the module docstring).

    Example:
        >>> MRILabelModel().intercept
        -0.1
        >>> MRILabelModel(beta_trait_adc=-1.5).beta("trait_adc")
        -1.5
    """

    anatomy: ClassVar[str] = "breast"
    intercept: float = -0.10
    beta_age: float = -0.40
    beta_tumour_size_mm: float = 0.35
    beta_er: float = -1.40
    beta_pr: float = -0.60
    beta_grade: float = 0.70
    beta_ki67: float = 0.50
    beta_trait_lobulation: float = 0.60
    beta_trait_curve_type: float = 0.90
    beta_trait_peak_enhancement_pct: float = 0.25
    beta_trait_edema_mm: float = 0.60
    beta_trait_adc: float = -0.80

    def __post_init__(self) -> None:
        _check_coefficients(self)

    def beta(self, variable: str) -> float:
        """The coefficient of ``variable`` (``trait_size_mm`` is ``tumour_size_mm``)."""
        return float(getattr(self, f"beta_{_canonical(variable, self.anatomy)}"))


@dataclass(frozen=True)
class ProstateLabelModel:
    """Coefficients of the prostate MRI outcome model (priors and transforms in the module docstring).

    Example:
        >>> ProstateLabelModel().beta("isup")
        0.9
        >>> ProstateLabelModel(beta_trait_adc=-2.0).beta("trait_adc")
        -2.0
    """

    anatomy: ClassVar[str] = "prostate"
    intercept: float = -0.55
    beta_age: float = 0.25
    beta_psa: float = 0.70
    beta_isup: float = 0.90
    beta_prostate_volume_ml: float = -0.45
    beta_tumour_size_mm: float = 0.60
    beta_trait_lobulation: float = 0.60
    beta_trait_adc: float = -1.10
    beta_trait_t2_contrast: float = 0.70

    def __post_init__(self) -> None:
        _check_coefficients(self)

    def beta(self, variable: str) -> float:
        """The coefficient of ``variable`` (``trait_size_mm`` is ``tumour_size_mm``)."""
        return float(getattr(self, f"beta_{_canonical(variable, self.anatomy)}"))


def _positive_tuple(value: Any, n: int | None, where: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except TypeError as exc:
        raise ValueError(f"{where} must be a sequence of numbers, got {value!r}") from exc
    if (n is not None and len(out) != n) or not out or not all(math.isfinite(v) and v > 0 for v in out):
        raise ValueError(f"{where} must be {n or 'one or more'} positive finite numbers, got {value!r}")
    return out


@dataclass(frozen=True)
class MRIPhantomConfig:
    """Everything a phantom cohort depends on besides ``n`` and ``seed``.

    Attributes:
        shape_zyx: Voxels ``(Z, Y, X)``; each at least 8.
        spacing_zyx_mm: Voxel size ``(z, y, x)`` in mm; the study target is (3, 0.5, 0.5).
        sequences: Any of "t1", "t2", "dce", "adc", "dwi" (DWI writes one volume per b-value); None
            gives ("t1", "t2", "dce", "adc") for the breast and ("t2", "adc", "dwi") for the prostate,
            which has no DCE.
        dce_times_s: Phase times (s), strictly increasing; the first is the pre-contrast baseline.
        early_time_s: End of the early window after the baseline (s); the lesion's early peak is the
            last phase inside it, and there must be a phase after it.
        b_values: DWI b-values (s/mm²), at least two, strictly increasing.
        noise: Rician noise σ in signal units (fat on T1 = 1).
        bias: Peak-to-peak relative amplitude of the smooth bias field (0 = none).
        survival: Also draw ``dfs_time`` and ``dfs_event``.
        label_model: Coefficients of the label model: an :class:`MRILabelModel` (breast HER2) or a
            :class:`ProstateLabelModel`; None gives the anatomy's default.
        anatomy: "breast" (HER2 phantoms) or "prostate" (gland, zones and a T2-dark, ADC-restricted
            lesion; the label is a binary prostate outcome).

    Example:
        >>> cfg = MRIPhantomConfig(shape_zyx=(40, 256, 256), spacing_zyx_mm=(3.0, 0.5, 0.5))
        >>> cfg.fov_zyx_mm
        (120.0, 128.0, 128.0)
        >>> MRIPhantomConfig(anatomy="prostate").volume_keys()
        ('t2', 'adc', 'dwi_b0', 'dwi_b800')
    """

    shape_zyx: tuple[int, int, int] = (24, 96, 96)
    spacing_zyx_mm: tuple[float, float, float] = (3.0, 1.0, 1.0)
    sequences: tuple[str, ...] | None = None
    dce_times_s: tuple[float, ...] = (0.0, 60.0, 120.0, 180.0, 300.0, 420.0)
    early_time_s: float = 120.0
    b_values: tuple[float, ...] = (0.0, 800.0)
    noise: float = 0.02
    bias: float = 0.2
    survival: bool = True
    label_model: MRILabelModel | ProstateLabelModel | None = None
    anatomy: str = "breast"

    def __post_init__(self) -> None:
        name = "MRIPhantomConfig"
        if self.anatomy not in ANATOMIES:
            raise ValueError(f"{name}.anatomy must be one of {ANATOMIES}, got {self.anatomy!r}")
        if self.sequences is None:
            object.__setattr__(self, "sequences", _DEFAULT_SEQUENCES[self.anatomy])
        if self.label_model is None:
            object.__setattr__(self, "label_model", _SPECS[self.anatomy].model())
        shape = tuple(self.shape_zyx)
        if len(shape) != 3 or not all(
            isinstance(s, int | np.integer) and not isinstance(s, bool) and 8 <= s <= 2048 for s in shape
        ):
            raise ValueError(f"{name}.shape_zyx must be three integers in [8, 2048], got {self.shape_zyx!r}")
        object.__setattr__(self, "shape_zyx", tuple(int(s) for s in shape))
        object.__setattr__(self, "spacing_zyx_mm", _positive_tuple(self.spacing_zyx_mm, 3, f"{name}.spacing_zyx_mm"))
        seqs = tuple(self.sequences)
        bad = [s for s in seqs if s not in SEQUENCES]
        if not seqs or bad or len(set(seqs)) != len(seqs):
            raise ValueError(f"{name}.sequences must be distinct names from {SEQUENCES}, got {self.sequences!r}")
        if self.anatomy == "prostate" and "dce" in seqs:
            raise ValueError(
                f"{name}.sequences: the prostate phantom has no DCE; choose from {PROSTATE_SEQUENCES}, "
                f"got {self.sequences!r}"
            )
        object.__setattr__(self, "sequences", seqs)
        times = tuple(float(t) for t in self.dce_times_s)
        if (
            len(times) < 3
            or not all(math.isfinite(t) for t in times)
            or any(b <= a for a, b in itertools.pairwise(times))
        ):
            raise ValueError(f"{name}.dce_times_s must be >= 3 strictly increasing times, got {self.dce_times_s!r}")
        object.__setattr__(self, "dce_times_s", times)
        rel = np.asarray(times) - times[0]
        early = np.flatnonzero((rel > 0) & (rel <= self.early_time_s))
        if early.size == 0 or early[-1] == len(times) - 1:
            raise ValueError(
                f"{name}.early_time_s={self.early_time_s!r} must leave >= 1 phase inside the early window and "
                f">= 1 after it; phases at {rel.tolist()} s after the baseline"
            )
        bvals = tuple(float(b) for b in self.b_values)
        if len(bvals) < 2 or bvals[0] < 0 or any(b <= a for a, b in itertools.pairwise(bvals)):
            raise ValueError(f"{name}.b_values must be >= 2 increasing non-negative b-values, got {self.b_values!r}")
        object.__setattr__(self, "b_values", bvals)
        if not (isinstance(self.noise, int | float) and 0 <= self.noise <= 1):
            raise ValueError(f"{name}.noise must be in [0, 1], got {self.noise!r}")
        if not (isinstance(self.bias, int | float) and 0 <= self.bias < 1):
            raise ValueError(f"{name}.bias must be in [0, 1), got {self.bias!r}")
        want = _SPECS[self.anatomy].model
        if type(self.label_model) is not want:
            raise ValueError(
                f"{name}.label_model must be a {want.__name__} for anatomy={self.anatomy!r}, "
                f"got {type(self.label_model).__name__}"
            )

    @property
    def fov_zyx_mm(self) -> tuple[float, float, float]:
        """Field of view ``(z, y, x)`` in mm."""
        return tuple(round(n * s, 6) for n, s in zip(self.shape_zyx, self.spacing_zyx_mm, strict=True))  # type: ignore[return-value]

    @property
    def early_index(self) -> int:
        """Index of the last DCE phase inside the early window (the lesion's early peak)."""
        rel = np.asarray(self.dce_times_s) - self.dce_times_s[0]
        return int(np.flatnonzero((rel > 0) & (rel <= self.early_time_s))[-1])

    def volume_keys(self) -> tuple[str, ...]:
        """Manifest path columns, in order: ``dwi`` becomes ``dwi_b<b>`` per b-value."""
        out: list[str] = []
        for s in self.sequences:
            out.extend(f"dwi_b{b:g}" for b in self.b_values) if s == "dwi" else out.append(s)
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists for tuples)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


# --- priors, transforms, labels ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Variable:
    draw: Callable[[np.random.Generator, int], np.ndarray]
    transform: Callable[[np.ndarray], np.ndarray]


def _draw_edema(rng: np.random.Generator, n: int) -> np.ndarray:
    present = rng.random(n) >= 0.5
    return np.where(present, np.round(rng.uniform(1.0, 5.0, n), 2), 0.0)


_VARIABLES: dict[str, _Variable] = {
    "age": _Variable(lambda r, n: np.clip(np.round(r.normal(52.0, 11.0, n)), 25, 85), lambda x: (x - 52.0) / 11.0),
    "tumour_size_mm": _Variable(
        lambda r, n: np.round(np.clip(r.lognormal(math.log(20.0), 0.35, n), 8.0, 40.0), 1),
        lambda x: np.log(x / 20.0) / 0.35,
    ),
    "er": _Variable(lambda r, n: (r.random(n) < 0.70).astype(np.float64), lambda x: x),
    "pr": _Variable(lambda r, n: (r.random(n) < 0.60).astype(np.float64), lambda x: x),
    "grade": _Variable(lambda r, n: r.choice(np.array([1.0, 2.0, 3.0]), size=n, p=[0.2, 0.45, 0.35]), lambda x: x - 2),
    "ki67": _Variable(lambda r, n: np.round(100.0 * r.beta(1.5, 4.0, n)), lambda x: (x - 27.0) / 17.5),
    "trait_lobulation": _Variable(lambda r, n: np.round(r.beta(1.5, 2.5, n), 3), lambda x: (x - 0.375) / 0.217),
    "trait_curve_type": _Variable(
        lambda r, n: r.choice(np.array([0.0, 1.0, 2.0]), size=n, p=[0.35, 0.35, 0.30]), lambda x: (x - 0.95) / 0.805
    ),
    "trait_peak_enhancement_pct": _Variable(
        lambda r, n: np.round(r.uniform(60.0, 200.0, n), 1), lambda x: (x - 130.0) / 40.4
    ),
    "trait_edema_mm": _Variable(_draw_edema, lambda x: (x - 1.5) / 1.71),
    "trait_adc": _Variable(
        lambda r, n: np.round(np.clip(r.normal(1.1, 0.2, n), 0.6, 1.8), 3), lambda x: (x - 1.1) / 0.2
    ),
}
assert tuple(_VARIABLES) == ALL_VARIABLES  # the draw order is part of the seeded stream
_INT_COLUMNS = ("age", "menopausal", "er", "pr", "grade", "ki67", "trait_curve_type")
_LATE_CHANGE = ((15.0, 40.0), (-5.0, 5.0), (-30.0, -15.0))  # per curve type, 5 % clear of the ±10 % rule

_ISUP_P = (0.30, 0.30, 0.20, 0.10, 0.10)  # mean 2.4, sd 1.28
_PROSTATE_VARIABLES: dict[str, _Variable] = {
    "age": _Variable(lambda r, n: np.clip(np.round(r.normal(66.0, 7.0, n)), 45, 85), lambda x: (x - 66.0) / 7.0),
    "psa": _Variable(
        lambda r, n: np.round(np.clip(r.lognormal(math.log(7.0), 0.6, n), 1.0, 100.0), 2),
        lambda x: np.log(x / 7.0) / 0.6,
    ),
    "isup": _Variable(lambda r, n: r.choice(np.arange(1.0, 6.0), size=n, p=list(_ISUP_P)), lambda x: (x - 2.4) / 1.28),
    "prostate_volume_ml": _Variable(
        lambda r, n: np.round(np.clip(r.lognormal(math.log(45.0), 0.35, n), 20.0, 120.0), 1),
        lambda x: np.log(x / 45.0) / 0.35,
    ),
    "tumour_size_mm": _Variable(
        lambda r, n: np.round(np.clip(r.lognormal(math.log(14.0), 0.35, n), 6.0, 30.0), 1),
        lambda x: np.log(x / 14.0) / 0.35,
    ),
    "trait_lobulation": _VARIABLES["trait_lobulation"],
    "trait_adc": _Variable(
        lambda r, n: np.round(np.clip(r.normal(1.0, 0.2, n), 0.5, 1.6), 3), lambda x: (x - 1.0) / 0.2
    ),
    "trait_t2_contrast": _Variable(lambda r, n: np.round(r.uniform(0.2, 0.7, n), 3), lambda x: (x - 0.45) / 0.1443),
}
assert tuple(_PROSTATE_VARIABLES) == PROSTATE_ALL_VARIABLES

# HER2-low among HER2-negatives: variable -> (coefficient, transform); a table in the module docstring.
_HER2_LOW_INTERCEPT = -0.90
_HER2_LOW_TERMS: dict[str, tuple[float, Callable[[np.ndarray], np.ndarray]]] = {
    "er": (1.20, lambda x: x),
    "pr": (0.50, lambda x: x),
    "grade": (-0.40, lambda x: x - 2),
    "trait_curve_type": (1.00, lambda x: (x == 1).astype(np.float64)),
    "trait_peak_enhancement_pct": (-0.50, lambda x: (x - 130.0) / 40.4),
    "trait_adc": (0.50, lambda x: (x - 1.1) / 0.2),
}


@dataclass(frozen=True)
class _Spec:
    variables: dict[str, _Variable]
    subsets: dict[str, tuple[str, ...]]
    int_columns: tuple[str, ...]
    clinical: tuple[str, ...]  # MRICase.clinical
    model: type


_SPECS: dict[str, _Spec] = {
    "breast": _Spec(
        _VARIABLES,
        _SUBSETS,
        _INT_COLUMNS,
        ("age", "menopausal", "er", "pr", "grade", "ki67", "tumour_size_mm"),
        MRILabelModel,
    ),
    "prostate": _Spec(
        _PROSTATE_VARIABLES,
        _PROSTATE_SUBSETS,
        ("age", "isup"),
        ("age", "psa", "isup", "prostate_volume_ml", "tumour_size_mm"),
        ProstateLabelModel,
    ),
}


def _canonical(name: str, anatomy: str = "breast") -> str:
    name = "tumour_size_mm" if name == "trait_size_mm" else name
    spec = _SPECS[anatomy]
    if name not in spec.variables:
        raise KeyError(
            f"unknown {anatomy} variable {name!r}; expected one of {', '.join(spec.variables)} (or trait_size_mm)"
        )
    return name


def _resolve_subset(subset: str | Iterable[str], anatomy: str = "breast") -> tuple[str, ...]:
    subsets = _SPECS[anatomy].subsets
    if isinstance(subset, str):
        if subset in subsets:
            return subsets[subset]
        return (_canonical(subset, anatomy),)
    # a list may mix views and variables ("clinical", "trait_adc"): views expand to their variables
    out = tuple(dict.fromkeys(v for s in subset for v in (subsets[s] if s in subsets else (_canonical(s, anatomy),))))
    if not out:
        raise ValueError("subset is empty; give at least one variable (or use 'all')")
    return out


def _column(df: pd.DataFrame | Mapping[str, Any], name: str) -> np.ndarray:
    if name not in df:
        raise KeyError(f"column {name!r} is missing; the table has {', '.join(map(str, df))}")
    x = np.asarray(df[name], dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"column {name!r} holds {int((~np.isfinite(x)).sum())} non-finite values")
    return x


def _linear_predictor(
    df: pd.DataFrame | Mapping[str, Any], model: MRILabelModel | ProstateLabelModel, names: tuple[str, ...]
) -> np.ndarray:
    variables = _SPECS[model.anatomy].variables
    eta = np.full(len(df[next(iter(df))]), model.intercept, dtype=np.float64)
    for name in names:
        eta = eta + model.beta(name) * variables[name].transform(_column(df, name))
    return eta


def _her2_low_eta(df: pd.DataFrame | Mapping[str, Any], names: Iterable[str]) -> np.ndarray:
    eta = np.full(len(df[next(iter(df))]), _HER2_LOW_INTERCEPT, dtype=np.float64)
    for name in names:
        if name in _HER2_LOW_TERMS:
            coef, transform = _HER2_LOW_TERMS[name]
            eta = eta + coef * transform(_column(df, name))
    return eta


def _draw_block(seed: int, block: int, n: int, config: MRIPhantomConfig) -> pd.DataFrame:
    spec = _SPECS[config.anatomy]
    rng = np.random.default_rng(np.random.SeedSequence([seed, _LABEL_STREAM, block]))
    df = pd.DataFrame({name: var.draw(rng, n) for name, var in spec.variables.items()})
    eta = _linear_predictor(df, config.label_model, spec.subsets["all"])
    df["true_prob"] = expit(eta)
    df["label"] = (rng.random(n) < df["true_prob"].to_numpy()).astype(np.int64)
    if config.anatomy == "breast":
        lo, hi = np.asarray(_LATE_CHANGE).T
        ct = df["trait_curve_type"].to_numpy().astype(np.int64)
        df["trait_late_change_pct"] = np.round(lo[ct] + (hi[ct] - lo[ct]) * rng.random(n), 2)
    if config.survival:
        srng = np.random.default_rng(np.random.SeedSequence([seed, _SURV_STREAM, block]))
        event = srng.exponential(1.0, n) / (0.01 * np.exp(0.8 * eta))
        censor = srng.uniform(24.0, 84.0, n)
        df["dfs_time"] = np.round(np.maximum(np.minimum(event, censor), 0.1), 1)
        df["dfs_event"] = (event <= censor).astype(np.int64)
    if config.anatomy == "breast":
        # Its own stream, drawn for every patient and blanked for the positives: no other column moves.
        hrng = np.random.default_rng(np.random.SeedSequence([seed, _HER2_LOW_STREAM, block]))
        q = expit(_her2_low_eta(df, _HER2_LOW_TERMS))
        low = (hrng.random(n) < q).astype(np.float64)
        negative = df["label"].to_numpy() == 0
        df["her2_low"] = np.where(negative, low, np.nan)
        df["her2_low_prob"] = np.where(negative, q, np.nan)
    return df


def simulate_mri_labels(n: int, seed: int, config: MRIPhantomConfig | None = None) -> pd.DataFrame:
    """Clinical variables, traits, ``true_prob``, ``label`` (and survival) for ``n`` patients, no images.

    Patients are drawn in fixed blocks with their own seeds, so patient ``i`` does not depend on ``n``.

    Args:
        n: Number of patients (>= 1).
        seed: Cohort seed (>= 0).
        config: Settings (only ``anatomy``, ``label_model`` and ``survival`` matter here); defaults
            when None.

    Returns:
        One row per patient. Breast: ``age``, ``menopausal``, ``tumour_size_mm``, ``er``, ``pr``,
        ``grade``, ``ki67``, ``trait_size_mm``, the other ``trait_*`` columns, ``true_prob``,
        ``label``, with ``config.survival`` ``dfs_time`` (months) and ``dfs_event``, then
        ``her2_low`` and ``her2_low_prob`` (NaN for the HER2-positives). Prostate: ``age``, ``psa``,
        ``isup``, ``prostate_volume_ml``, ``tumour_size_mm``, ``trait_size_mm``,
        ``trait_lobulation``, ``trait_adc``, ``trait_t2_contrast``, ``true_prob``, ``label`` and the
        survival columns.

    Example:
        >>> df = simulate_mri_labels(2000, seed=0)
        >>> bool(0.2 < df.label.mean() < 0.4), bool(df.true_prob.between(0, 1).all())
        (True, True)
        >>> bool(df.loc[df.label == 1, "her2_low"].isna().all())
        True
    """
    config = config or MRIPhantomConfig()
    df = draw_in_blocks(n, seed, lambda s, block, size: _draw_block(s, block, size, config))
    if config.anatomy == "breast":
        df.insert(1, "menopausal", (df["age"] >= 51).astype(np.int64))
    df.insert(df.columns.get_loc("trait_lobulation"), "trait_size_mm", df["tumour_size_mm"])
    for col in _SPECS[config.anatomy].int_columns:
        df[col] = df[col].astype(np.int64)
    return df


def _model_of(config: object | None) -> MRILabelModel | ProstateLabelModel:
    if config is None:
        return MRILabelModel()
    if isinstance(config, MRILabelModel | ProstateLabelModel):
        return config
    if isinstance(config, MRIPhantomConfig):
        return config.label_model  # type: ignore[return-value]
    raise TypeError(
        "config must be an MRIPhantomConfig, an MRILabelModel, a ProstateLabelModel or None, "
        f"got {type(config).__name__}"
    )


def _task(task: str, model: MRILabelModel | ProstateLabelModel) -> str:
    task = "her2_low" if task == "low" else task
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} (or 'low'), got {task!r}")
    if task == "her2_low" and model.anatomy != "breast":
        raise ValueError(f"task 'her2_low' needs a breast model, got a {type(model).__name__}")
    return task


def mri_oracle_scores(
    df: pd.DataFrame,
    subset: str | Iterable[str] = "all",
    config: object | None = None,
    n_mc: int | None = None,
    task: str = "label",
) -> np.ndarray:
    """Oracle score of every row for the subset S: :math:`E[\\text{true\\_prob} \\mid x_S]` or, for
    ``task="her2_low"``, :math:`P(\\text{HER2-low} \\mid x_S, \\text{HER2-negative})`.

    The second conditions on the selection: the other variables are averaged over their prior
    weighted by ``1 − true_prob``, so it is the Bayes score among the negatives.

    Args:
        df: Table with the subset's columns (a manifest or :func:`simulate_mri_labels` output).
        subset: "all", "clinical", "image", a variable name or a list of views and variable names.
        config: :class:`MRIPhantomConfig`, :class:`MRILabelModel` or :class:`ProstateLabelModel`
            (breast defaults when None).
        n_mc: Monte Carlo draws of the other variables' prior; None gives 16384 ("label") or 4096
            ("her2_low").
        task: "label" or "her2_low" ("low" is the same; breast only).

    Returns:
        ``(n,)`` probabilities; for "all" exactly ``sigmoid(eta)`` (``her2_low_prob`` for "her2_low").

    Example:
        >>> df = simulate_mri_labels(50, seed=0)
        >>> bool(np.allclose(mri_oracle_scores(df, "all"), df.true_prob))
        True
        >>> neg = df[df.label == 0]
        >>> bool(np.allclose(mri_oracle_scores(neg, "all", task="her2_low"), neg.her2_low_prob))
        True
    """
    model = _model_of(config)
    task = _task(task, model)
    spec = _SPECS[model.anatomy]
    all_names = spec.subsets["all"]
    names = _resolve_subset(subset, model.anatomy)
    eta_s = _linear_predictor(df, model, names)
    others = tuple(v for v in all_names if v not in names)
    if task == "her2_low":
        return _her2_low_scores(df, names, others, eta_s, model, n_mc or 4096)
    n_mc = n_mc or 16384
    if not others:
        return expit(eta_s)
    # A fixed seed: the oracle score is a property of the model, not of the cohort.
    rng = np.random.default_rng(np.random.SeedSequence([20261124, n_mc]))
    u = np.zeros(n_mc)
    for name in all_names:
        x = spec.variables[name].draw(rng, n_mc)  # every variable is drawn so the stream stays stable
        if name in others:
            u += model.beta(name) * spec.variables[name].transform(x)
    grid = np.linspace(float(eta_s.min()) - 1e-9, float(eta_s.max()) + 1e-9, 1024)
    g = np.concatenate([expit(grid[i : i + 64, None] + u[None, :]).mean(axis=1) for i in range(0, grid.size, 64)])
    return np.interp(eta_s, grid, g)


def mri_truth_design(
    df: pd.DataFrame, subset: str | Iterable[str] = "all", config: object | None = None, task: str = "label"
) -> pd.DataFrame:
    """The label model's terms :math:`z_j = f_j(x_j)` of a subset's variables, one column each.

    A logistic regression on these columns is the correctly specified model of what the subset
    shows: fitted on ``n`` phantoms, its held-out AUC is the best a model of ``n`` training cases
    can expect from those variables (the finite-sample ceiling below the oracle). For
    ``task="her2_low"`` the HER2-low model's terms that differ are added (``<name>_low``: the
    plateau indicator of the curve type).

    Example:
        >>> df = simulate_mri_labels(4, seed=0)
        >>> d = mri_truth_design(df, ["tumour_size_mm", "trait_curve_type"], task="her2_low")
        >>> list(d.columns)
        ['tumour_size_mm', 'trait_curve_type', 'trait_curve_type_low']
        >>> list(mri_truth_design(df, ["clinical", "trait_adc"]).columns)[-2:]  # views expand in a list
        ['ki67', 'trait_adc']
        >>> bool(np.allclose(d["tumour_size_mm"], np.log(df["tumour_size_mm"] / 20) / 0.35))
        True
    """
    model = _model_of(config)
    task = _task(task, model)
    variables = _SPECS[model.anatomy].variables
    out = {}
    for name in _resolve_subset(subset, model.anatomy):
        x = _column(df, name)
        out[name] = variables[name].transform(x)
        if task == "her2_low" and name in _HER2_LOW_TERMS:
            low = _HER2_LOW_TERMS[name][1](x)
            if not np.allclose(low, out[name]):
                out[f"{name}_low"] = low
    return pd.DataFrame(out, index=df.index)


def _her2_low_scores(
    df: pd.DataFrame,
    names: tuple[str, ...],
    others: tuple[str, ...],
    eta_s: np.ndarray,
    model: MRILabelModel | ProstateLabelModel,
    n_mc: int,
) -> np.ndarray:
    low_s = _her2_low_eta(df, names)
    if not others:
        return expit(low_s)
    rng = np.random.default_rng(np.random.SeedSequence([20261124, n_mc, _HER2_LOW_STREAM]))
    u, v = np.zeros(n_mc), np.zeros(n_mc)
    for name in ALL_VARIABLES:
        x = _VARIABLES[name].draw(rng, n_mc)
        if name in others:
            u += model.beta(name) * _VARIABLES[name].transform(x)
            if name in _HER2_LOW_TERMS:
                coef, transform = _HER2_LOW_TERMS[name]
                v += coef * transform(x)
    out = np.empty(eta_s.size)
    for i in range(0, eta_s.size, 256):
        w = expit(-(eta_s[i : i + 256, None] + u[None, :]))  # P(negative | x)
        out[i : i + 256] = (expit(low_s[i : i + 256, None] + v[None, :]) * w).sum(axis=1) / w.sum(axis=1)
    return out


def mri_oracle_aucs(manifest: pd.DataFrame, config: object | None = None, task: str = "label") -> dict[str, float]:
    """Oracle AUCs of the "clinical", "image" and "all" views on a cohort.

    For ``task="label"``, "all" is ``roc_auc_score(label, true_prob)`` when ``true_prob`` is present
    (it is σ(η)). For ``task="her2_low"`` (breast), the AUCs are of ``her2_low`` (HER2-low vs
    HER2-zero) over the rows where it is defined (the HER2-negatives), with the scores of
    :func:`mri_oracle_scores` (``her2_low_prob`` for "all" when present).

    Args:
        manifest: A manifest from :func:`simulate_mri_cohort` or a :func:`simulate_mri_labels` table.
        config: :class:`MRIPhantomConfig`, :class:`MRILabelModel` or :class:`ProstateLabelModel` that
            made the labels (breast defaults when None).
        task: "label" or "her2_low" ("low" is the same).

    Returns:
        ``{"clinical": auc, "image": auc, "all": auc}``.

    Example:
        >>> a = mri_oracle_aucs(simulate_mri_labels(20000, seed=1))
        >>> a["clinical"] < a["all"] and a["image"] < a["all"]
        True
        >>> low = mri_oracle_aucs(simulate_mri_labels(4000, seed=1), task="her2_low")
        >>> low["clinical"] < low["all"] and low["image"] < low["all"]
        True
    """
    task = _task(task, _model_of(config))
    target, prob = ("label", "true_prob") if task == "label" else ("her2_low", "her2_low_prob")
    if target not in manifest:
        raise KeyError(f"column {target!r} is missing; oracle AUCs need the 0/1 {target}")
    if task == "her2_low":
        manifest = manifest.loc[manifest[target].notna()]
    y = np.asarray(manifest[target], dtype=np.int64)
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError(f"{target} must contain both 0 and 1, got values {sorted(set(np.unique(y).tolist()))}")
    out = {}
    for name in ("clinical", "image", "all"):
        if name == "all" and prob in manifest:
            score = np.asarray(manifest[prob], dtype=np.float64)
        else:
            score = mri_oracle_scores(manifest, name, config, task=task)
        out[name] = float(roc_auc_score(y, score))
    return out


# --- image formation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MRICase:
    """One simulated case.

    Attributes:
        volumes: ``"t1"``, ``"t2"``, ``"adc"``: ``(Z, Y, X)`` float32; ``"dce"``: ``(T, Z, Y, X)``;
            ``"dwi_b<b>"``: ``(Z, Y, X)``. Signal units (fat on T1 = 1); ADC in 10⁻³ mm²/s.
        mask: ``(Z, Y, X)`` uint8 lesion mask (0/1).
        edema: ``(Z, Y, X)`` bool peritumoral oedema shell (ground truth, not written to disk; all
            False for the prostate).
        traits: The ``trait_*`` values (plus ``true_prob`` and ``label``).
        clinical: The clinical values.
        spacing_zyx_mm: Voxel size.
        dce_times_s: Phase times.
        gland: ``(Z, Y, X)`` bool prostate gland (ground truth, not written to disk); None for the
            breast.
    """

    volumes: dict[str, np.ndarray]
    mask: np.ndarray
    edema: np.ndarray
    traits: dict[str, float]
    clinical: dict[str, float]
    spacing_zyx_mm: tuple[float, float, float]
    dce_times_s: tuple[float, ...]
    gland: np.ndarray | None = None


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int, int], cell_mm: float, spacing: tuple[float, ...]
) -> np.ndarray:
    # Coarse Gaussian noise, linearly interpolated axis by axis: smooth and cheap at any grid size.
    coarse_shape = [max(2, math.ceil(n * s / cell_mm) + 1) for n, s in zip(shape, spacing, strict=True)]
    f = rng.standard_normal(coarse_shape)
    for axis, n in enumerate(shape):
        m = coarse_shape[axis]
        pos = np.linspace(0, m - 1, n)
        i0 = np.minimum(np.floor(pos).astype(int), m - 2)
        w = (pos - i0).reshape([-1 if a == axis else 1 for a in range(3)])
        f = np.take(f, i0, axis=axis) * (1 - w) + np.take(f, i0 + 1, axis=axis) * w
    f -= f.mean()
    return (f / (f.std() + 1e-12)).astype(np.float32)


def _rician(rng: np.random.Generator, s: np.ndarray, sigma: float) -> np.ndarray:
    if sigma == 0:
        return s.astype(np.float32)
    re = s + sigma * rng.standard_normal(s.shape, dtype=np.float32)
    im = sigma * rng.standard_normal(s.shape, dtype=np.float32)
    return np.sqrt(re * re + im * im).astype(np.float32)


def _paint_box(s: np.ndarray, box: tuple[slice, ...], regions: Iterable[tuple[np.ndarray, float]]) -> np.ndarray:
    """``s`` with each ``(region, value)`` painted into ``s[box]`` in turn (later regions win); in place."""
    sub = s[box]
    for region, value in regions:
        sub[region] = value
    s[box] = sub
    return s


def _lesion_geometry(
    rng: np.random.Generator,
    row: Mapping[str, float],
    config: MRIPhantomConfig,
    place: Callable[[float], np.ndarray] | None = None,
):
    """Bounding box, normalised radius ρ (lesion ρ ≤ 1) and oedema limit inside it.

    ``place(reach)`` gives the centre (z, y, x) in mm from the grid centre; None draws it inside the
    breast (the breast stream).
    """
    nz, ny, nx = config.shape_zyx
    sz, sy, sx = config.spacing_zyx_mm
    a = float(row["tumour_size_mm"]) / 2.0
    b, c = a * rng.uniform(0.6, 1.0), a * rng.uniform(0.6, 1.0)
    psi = rng.uniform(0, np.pi)
    lob = 0.3 * float(row["trait_lobulation"])
    edema = float(row.get("trait_edema_mm", 0.0))
    reach = a * (1 + lob) + edema + 2 * max(sx, sy, sz)
    if place is None:
        fov = np.array(config.fov_zyx_mm)
        slack = np.maximum(0.0, np.array([fov[0] / 2, 0.47 * fov[1] * 0.6, 0.47 * fov[2] * 0.6]) - reach)
        centre = rng.uniform(-slack, slack)
    else:
        centre = place(reach)
    dirs = rng.standard_normal((4, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freqs = rng.integers(2, 6, 4)
    phases = rng.uniform(0, 2 * np.pi, 4)
    weights = rng.uniform(0.5, 1.0, 4)
    weights /= weights.sum()

    axes = []
    for n, s, c0 in zip((nz, ny, nx), (sz, sy, sx), centre, strict=True):
        coord = (np.arange(n) - (n - 1) / 2) * s - c0
        keep = np.flatnonzero(np.abs(coord) <= reach)
        if keep.size == 0:  # a tiny field of view: keep the nearest slice so the lesion is never lost
            keep = np.array([int(np.argmin(np.abs(coord)))])
        axes.append((slice(int(keep[0]), int(keep[-1]) + 1), coord[keep[0] : keep[-1] + 1].astype(np.float32)))
    (zsl, z), (ysl, y), (xsl, x) = axes
    z, y, x = z[:, None, None], y[None, :, None], x[None, None, :]
    cp, sp = np.float32(math.cos(psi)), np.float32(math.sin(psi))
    u = (x * cp + y * sp) / np.float32(a)
    v = (-x * sp + y * cp) / np.float32(b)
    w = z / np.float32(c)
    rho0 = np.sqrt(u * u + v * v + w * w) + np.float32(1e-6)
    bump = np.zeros(rho0.shape, dtype=np.float32)
    for d, m, ph, wt in zip(dirs, freqs, phases, weights, strict=True):
        cosang = np.clip((w * d[0] + v * d[1] + u * d[2]) / rho0, -1, 1)
        bump += np.float32(wt) * np.cos(np.float32(m) * np.arccos(cosang) + np.float32(ph))
    rho = rho0 / (1 + np.float32(lob) * bump)
    r_mean = (a * b * c) ** (1 / 3)
    return (zsl, ysl, xsl), rho, 1 + edema / r_mean


def _render(row: Mapping[str, float], rng: np.random.Generator, config: MRIPhantomConfig):
    if config.anatomy == "prostate":
        return _render_prostate(row, rng, config)
    shape = config.shape_zyx
    nz, ny, nx = shape
    _, sy, sx = config.spacing_zyx_mm
    _, fy, fx = config.fov_zyx_mm
    y = ((np.arange(ny) - (ny - 1) / 2) * sy / (0.47 * fy)).astype(np.float32)
    x = ((np.arange(nx) - (nx - 1) / 2) * sx / (0.47 * fx)).astype(np.float32)
    breast2d = (y[:, None] ** 2 + x[None, :] ** 2) <= 1.0
    breast = np.broadcast_to(breast2d, shape)

    density = rng.uniform(-0.8, 0.8)
    fgt = expit(2.5 * (_smooth_field(rng, shape, 15.0, config.spacing_zyx_mm) - density)).astype(np.float32)
    fgt *= breast
    fat = breast.astype(np.float32) - fgt
    coef = rng.uniform(-1, 1, 4) * config.bias / 2
    zz = np.linspace(-1, 1, nz, dtype=np.float32)[:, None, None]
    bias = (1 + coef[0] * zz + coef[1] * y[None, :, None] + coef[2] * x[None, None, :]).astype(np.float32)
    bias = bias + np.float32(coef[3]) * (x[None, None, :] ** 2 - 0.3)

    box, rho, edema_limit = _lesion_geometry(rng, row, config)
    lesion_box = rho <= 1.0
    edema_box = (rho > 1.0) & (rho <= edema_limit) if row["trait_edema_mm"] > 0 else np.zeros_like(lesion_box)
    edema_box &= breast[box]
    lesion_box &= breast[box]
    mask = np.zeros(shape, dtype=np.uint8)
    mask[box] = lesion_box
    edema = np.zeros(shape, dtype=bool)
    edema[box] = edema_box

    def tissue(fat_v: float, fgt_v: float, les_v: float, ede_v: float) -> np.ndarray:
        s = np.float32(fat_v) * fat + np.float32(fgt_v) * fgt
        return _paint_box(s, box, ((edema_box, ede_v), (lesion_box, les_v)))

    out: dict[str, np.ndarray] = {}
    want = set(config.sequences)
    noise = float(config.noise)
    if "t1" in want:
        out["t1"] = _rician(rng, tissue(1.0, 0.40, 0.45, 0.40) * bias, noise)
    if "t2" in want:
        out["t2"] = _rician(rng, tissue(0.60, 0.30, 0.40, 1.00) * bias, noise)
    if "dce" in want:
        base = tissue(0.12, 0.30, 0.35, 0.28) * bias
        base_box = base[box]
        t = np.asarray(config.dce_times_s) - config.dce_times_s[0]
        ie = config.early_index
        te, tl = t[ie], t[-1]
        tau = rng.uniform(30.0, 90.0)
        amp = float(row["trait_peak_enhancement_pct"]) / 100.0
        late = float(row["trait_late_change_pct"]) / 100.0
        # Stronger enhancement at the rim than in the core, the common pattern of invasive cancers.
        a_vox = amp * (0.85 + 0.3 * np.clip(rho[lesion_box], 0, 1)) * rng.uniform(0.95, 1.05, int(lesion_box.sum()))
        dce = np.empty((t.size, *shape), dtype=np.float32)
        for i, ti in enumerate(t):
            phase = base * (1 + np.float32(0.15 * (1 - math.exp(-ti / 200.0))) * fgt)
            if ti <= te:
                gain = 1 + a_vox * (1 - math.exp(-ti / tau)) / (1 - math.exp(-te / tau))
            else:
                gain = (1 + a_vox) * (1 + late * (ti - te) / (tl - te))
            # Lesion and oedema replace the tissue beneath, so they do not inherit its enhancement.
            sub = phase[box]
            sub[lesion_box] = base_box[lesion_box] * gain.astype(np.float32)
            sub[edema_box] = base_box[edema_box] * np.float32(1 + 0.05 * (ti > 0))
            phase[box] = sub
            dce[i] = _rician(rng, phase, noise)
        out["dce"] = dce
    if "adc" in want or "dwi" in want:
        s0 = tissue(0.15, 0.60, 0.70, 0.90) * bias
        adc = tissue(0.8, 1.7, float(row["trait_adc"]), 2.2)
        out.update(_diffusion(rng, s0, adc, breast, want, config, noise))
    volumes = {k: out[k] for k in config.volume_keys()}
    return volumes, mask, edema


def _diffusion(
    rng: np.random.Generator,
    s0: np.ndarray,
    adc: np.ndarray,
    inside: np.ndarray,
    want: Any,
    config: MRIPhantomConfig,
    noise: float,
) -> dict[str, np.ndarray]:
    """DWI ``S_b = S_0 e^{-b ADC}`` with Rician noise for every b-value, and (when asked) the ADC map
    as the log-linear least-squares fit over the noisy DWI, clipped to [0, 4], zero outside ``inside``."""
    out: dict[str, np.ndarray] = {}
    bvals = np.asarray(config.b_values)
    dwi = [_rician(rng, s0 * np.exp(-np.float32(b * 1e-3) * adc), noise) for b in bvals]
    if "dwi" in want:
        for b, vol in zip(bvals, dwi, strict=True):
            out[f"dwi_b{b:g}"] = vol
    if "adc" in want:
        logs = np.log(np.maximum(np.stack(dwi), np.float32(1e-3)))
        bc = (bvals - bvals.mean()) * 1e-3
        slope = np.tensordot(bc.astype(np.float32), logs, axes=1) / np.float32((bc**2).sum())
        out["adc"] = np.clip(-slope, 0.0, 4.0).astype(np.float32) * inside
    return out


def _render_prostate(row: Mapping[str, float], rng: np.random.Generator, config: MRIPhantomConfig):
    shape = config.shape_zyx
    nz, ny, nx = shape
    sz, sy, sx = config.spacing_zyx_mm
    _, fy, fx = config.fov_zyx_mm
    zc = ((np.arange(nz) - (nz - 1) / 2) * sz).astype(np.float32)[:, None, None]
    yc = ((np.arange(ny) - (ny - 1) / 2) * sy).astype(np.float32)[None, :, None]
    xc = ((np.arange(nx) - (nx - 1) / 2) * sx).astype(np.float32)[None, None, :]
    yn, xn = yc / np.float32(0.47 * fy), xc / np.float32(0.47 * fx)
    body = np.broadcast_to((yn**2 + xn**2) <= 1.0, shape)
    pelvis = np.broadcast_to((yn**2 + xn**2) <= 0.75**2, shape)
    muscle = expit(2.5 * (_smooth_field(rng, shape, 15.0, config.spacing_zyx_mm) + 0.5)).astype(np.float32)
    muscle *= pelvis
    fat = body.astype(np.float32) - muscle
    coef = rng.uniform(-1, 1, 4) * config.bias / 2
    zz = np.linspace(-1, 1, nz, dtype=np.float32)[:, None, None]
    bias = (1 + coef[0] * zz + coef[1] * yn + coef[2] * xn).astype(np.float32)
    bias = bias + np.float32(coef[3]) * (xn**2 - 0.3)

    # Gland: an ellipsoid of the drawn volume, 1.25 : 0.9 : 1 (left-right : antero-posterior : cranio-caudal).
    k = (3000.0 * float(row["prostate_volume_ml"]) / (4 * math.pi * 1.25 * 0.9)) ** (1 / 3)
    ga, gb, gc = 1.25 * k, 0.9 * k, k  # x, y, z semi-axes (mm)
    g0 = rng.uniform(-3.0, 3.0, 3)  # gland centre (z, y, x)
    dz, dy, dx = zc - np.float32(g0[0]), yc - np.float32(g0[1]), xc - np.float32(g0[2])
    gland = ((dx / ga) ** 2 + (dy / gb) ** 2 + (dz / gc) ** 2 <= 1.0) & body
    # Transition zone: 0.6 × the gland, shifted anteriorly (−y) by 0.3 of its antero-posterior semi-axis.
    tz = ((dx / (0.6 * ga)) ** 2 + ((dy + 0.3 * gb) / (0.6 * gb)) ** 2 + (dz / (0.6 * gc)) ** 2 <= 1.0) & gland
    pz = gland & ~tz
    texture = 1 + 0.08 * _smooth_field(rng, shape, 6.0, config.spacing_zyx_mm)

    def place(reach: float) -> np.ndarray:
        # Posterolateral peripheral zone, left or right: 0.55 of the way to the gland's back and 0.35 to its side.
        side = 1.0 if rng.random() < 0.5 else -1.0
        jitter = rng.uniform(-1.0, 1.0, 3) * np.array([0.3 * gc, 0.1 * gb, 0.1 * ga])
        return g0 + np.array([0.0, 0.55 * gb, side * 0.35 * ga]) + jitter

    box, rho, _ = _lesion_geometry(rng, row, config, place)
    lesion_box = (rho <= 1.0) & body[box]
    mask = np.zeros(shape, dtype=np.uint8)
    mask[box] = lesion_box

    def tissue(fat_v: float, mus_v: float, pz_v: float, tz_v: float, les_v: float, tex: bool = True) -> np.ndarray:
        s = np.float32(fat_v) * fat + np.float32(mus_v) * muscle
        s[pz] = pz_v * (texture[pz] if tex else 1.0)
        s[tz] = tz_v * (texture[tz] if tex else 1.0)
        return _paint_box(s, box, ((lesion_box, les_v),))

    out: dict[str, np.ndarray] = {}
    want = set(config.sequences)
    noise = float(config.noise)
    if "t1" in want:
        out["t1"] = _rician(rng, tissue(1.0, 0.35, 0.35, 0.35, 0.35) * bias, noise)
    if "t2" in want:
        t2_lesion = 0.80 * (1.0 - float(row["trait_t2_contrast"]))
        out["t2"] = _rician(rng, tissue(0.60, 0.15, 0.80, 0.45, t2_lesion) * bias, noise)
    if "adc" in want or "dwi" in want:
        s0 = tissue(0.15, 0.40, 0.70, 0.60, 0.75) * bias
        adc = tissue(0.8, 1.4, 1.8, 1.3, float(row["trait_adc"]), tex=False)
        out.update(_diffusion(rng, s0, adc, body, want, config, noise))
    volumes = {k: out[k] for k in config.volume_keys()}
    return volumes, mask, gland


def simulate_mri_case(
    seed: int | np.random.Generator, config: MRIPhantomConfig | None = None, *, row: Mapping[str, Any] | None = None
) -> MRICase:
    """Simulate one case: volumes, lesion mask, traits and clinical values.

    Args:
        seed: An integer seed or a ``numpy.random.Generator``.
        config: Settings (defaults when None).
        row: The patient's variables (a row of :func:`simulate_mri_labels`); drawn from ``seed``
            when None.

    Returns:
        An :class:`MRICase`.

    Example:
        >>> case = simulate_mri_case(0, MRIPhantomConfig(shape_zyx=(12, 48, 48), spacing_zyx_mm=(4.0, 2.0, 2.0)))
        >>> case.volumes["dce"].shape, int(case.mask.sum()) > 0
        ((6, 12, 48, 48), True)
    """
    config = config or MRIPhantomConfig()
    if not isinstance(config, MRIPhantomConfig):
        raise TypeError(f"config must be an MRIPhantomConfig or None, got {type(config).__name__}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    spec = _SPECS[config.anatomy]
    if row is None:
        row = _draw_block(int(rng.integers(2**31)), 0, 1, config).iloc[0].to_dict()
        row["trait_size_mm"] = row["tumour_size_mm"]
        if config.anatomy == "breast":
            row["menopausal"] = int(row["age"] >= 51)
    extra = ("trait_late_change_pct",) if config.anatomy == "breast" else ()
    missing = [c for c in (*spec.subsets["all"], *extra) if c not in row]
    if missing:
        raise InputError("row", "every variable of simulate_mri_labels", f"missing {', '.join(missing)}")
    volumes, mask, edema = _render(row, rng, config)
    gland = None
    if config.anatomy == "prostate":
        gland, edema = edema, np.zeros(mask.shape, dtype=bool)
    traits = {k: float(v) for k, v in row.items() if k.startswith("trait_") or k in ("true_prob", "label")}
    clinical = {k: float(row[k]) for k in spec.clinical if k in row}
    return MRICase(volumes, mask, edema, traits, clinical, config.spacing_zyx_mm, config.dce_times_s, gland)


# --- cohort on disk ---------------------------------------------------------------------------------


def _case_id(i: int) -> str:
    return f"mri_{i:06d}"


def _file(out: Path, key: str, case_id: str) -> Path:
    return out / ("masks" if key == "mask" else key) / f"{case_id}.nii.gz"


def _write_nifti(path: Path, arr: np.ndarray, spacing_zyx: tuple[float, ...]) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr, isVector=False)
    sp = tuple(float(s) for s in spacing_zyx[::-1])
    img.SetSpacing(sp + (1.0,) * (arr.ndim - 3))
    with atomic_path(path) as tmp:
        # ITK picks NIfTI by the ".nii.gz" ending, which atomic_path's temporary name lacks.
        nii = tmp.with_name(tmp.name + ".nii.gz")
        try:
            sitk.WriteImage(img, str(nii), True, 1)
            os.replace(nii, tmp)
        finally:
            nii.unlink(missing_ok=True)


def _to_int16(v: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(v * 1000.0), -32768, 32767).astype(np.int16)


def _render_case(job: tuple[int, int, dict[str, Any], MRIPhantomConfig, str]) -> int:
    seed, i, row, config, out = job
    rng = np.random.default_rng(np.random.SeedSequence([seed, _IMAGE_STREAM, i]))
    case = simulate_mri_case(rng, config, row=row)
    cid = _case_id(i)
    for key, vol in case.volumes.items():
        _write_nifti(_file(Path(out), key, cid), _to_int16(vol), config.spacing_zyx_mm)
    _write_nifti(_file(Path(out), "mask", cid), case.mask, config.spacing_zyx_mm)  # last: marks the case done
    return i


def _check_or_write_meta(out: Path, n: int, seed: int, config: MRIPhantomConfig) -> None:
    meta_path = out / "simulation.json"
    cfg = config.to_dict()
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(meta_path, "a simulation.json written by usher2", f"unreadable ({exc})") from exc
        # A cohort written before ``anatomy`` existed is a breast cohort.
        old_cfg = {"anatomy": "breast", **(old.get("config") or {})} if isinstance(old.get("config"), dict) else None
        if old.get("seed") != seed or old_cfg != cfg:
            diff = sorted(k for k in cfg if cfg[k] != (old_cfg or {}).get(k))
            got = f"seed {old.get('seed')}" if old.get("seed") != seed else f"different settings: {', '.join(diff)}"
            raise InputError(
                meta_path,
                f"seed {seed} and the same MRIPhantomConfig to resume this cohort",
                got,
                "use the same seed and settings or another output directory",
            )
    meta = {"generator": "usher2.mri.phantom", "usher2_version": __version__, "seed": seed, "n": n, "config": cfg}
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")


def simulate_mri_cohort(
    n: int,
    seed: int,
    out_dir: str | Path,
    config: MRIPhantomConfig | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Simulate ``n`` single-lesion patients into ``out_dir`` and return the manifest.

    Case ``i`` draws its images from ``SeedSequence([seed, stream, i])``, so files are identical
    whatever ``workers``. Files are written atomically and the mask last, so a case whose files all
    exist is finished and skipped: a killed run resumes (same seed and config; ``n`` may differ).

    Args:
        n: Number of patients (>= 1).
        seed: Cohort seed (>= 0).
        out_dir: Output directory (created); layout in the module docstring.
        config: Settings; defaults when None.
        workers: Processes; 1 renders in this process.
        progress: Called as ``progress(done, total)``.

    Returns:
        The manifest (also ``out_dir/manifest.csv``): ``case_id``, ``patient_id``, one path column
        per volume (:meth:`MRIPhantomConfig.volume_keys`), ``mask``, ``label``, ``true_prob``,
        ``dce_times_s`` (";"-joined), ``spacing_zyx_mm`` (";"-joined), the clinical columns, the
        ``trait_*`` columns, (with ``config.survival``) ``dfs_time``, ``dfs_event`` and, for the
        breast, ``her2_low`` and ``her2_low_prob`` (empty for the positives). Prostate clinical
        columns are ``age``, ``psa``, ``isup``, ``prostate_volume_ml``, ``tumour_size_mm``.

    Raises:
        InputError: ``out_dir`` holds a cohort made with another seed or config.

    Example:
        >>> import tempfile
        >>> cfg = MRIPhantomConfig(shape_zyx=(8, 32, 32), spacing_zyx_mm=(6.0, 3.0, 3.0))
        >>> df = simulate_mri_cohort(2, seed=0, out_dir=tempfile.mkdtemp(), config=cfg)
        >>> list(df.columns[:7])
        ['case_id', 'patient_id', 't1', 't2', 'dce', 'adc', 'mask']
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    n, seed = int(n), int(seed)
    config = config or MRIPhantomConfig()
    if not isinstance(config, MRIPhantomConfig):
        raise TypeError(f"config must be an MRIPhantomConfig or None, got {type(config).__name__}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_or_write_meta(out, n, seed, config)
    keys = (*config.volume_keys(), "mask")
    for key in keys:
        d = _file(out, key, "x").parent
        d.mkdir(exist_ok=True)
        for stale in d.glob(".*.tmp*"):  # left by a killed run; never a finished file
            stale.unlink(missing_ok=True)

    labels = simulate_mri_labels(n, seed, config)
    ids = [_case_id(i) for i in range(n)]
    records = labels.to_dict(orient="records")
    jobs = [
        (seed, i, records[i], config, str(out))
        for i, cid in enumerate(ids)
        if not all(_file(out, k, cid).exists() for k in keys)
    ]
    done = n - len(jobs)
    if progress is not None and done:
        progress(done, n)
    if workers == 1 or len(jobs) <= 1:
        results = map(_render_case, jobs)
    else:
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        results = pool.map(_render_case, jobs, chunksize=1)
    try:
        for _ in results:
            done += 1
            if progress is not None:
                progress(done, n)
    finally:
        if workers > 1 and len(jobs) > 1:
            pool.shutdown()

    man = pd.DataFrame({"case_id": ids, "patient_id": ids})
    for key in keys:
        man[key] = [_file(Path("."), key, cid).as_posix() for cid in ids]
    man["label"] = labels["label"].to_numpy()
    man["true_prob"] = labels["true_prob"].to_numpy()
    man["dce_times_s"] = ";".join(f"{t:g}" for t in config.dce_times_s)
    man["spacing_zyx_mm"] = ";".join(f"{s:g}" for s in config.spacing_zyx_mm)
    rest = [c for c in labels.columns if c not in ("label", "true_prob")]
    man = pd.concat([man, labels[rest]], axis=1)
    with atomic_path(out / "manifest.csv") as tmp:
        man.to_csv(tmp, index=False)
    man.attrs["rendered"] = len(jobs)
    man.attrs["reused"] = n - len(jobs)
    return man
