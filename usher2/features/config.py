"""The settings of a feature extraction and the names its tables share.

* :class:`ExtractConfig`: what to extract (radiomics parameters, backbones, mask source, enhancer,
  segmenter, overlays, perturbations, regions, chunking); every field goes into the provenance,
  and those that change feature values into the resume digest (:meth:`ExtractConfig.digest`).
* The perturbation names (:data:`GEOMETRIC_PERTURBATIONS`, :data:`PERTURBATIONS`,
  :data:`PERTURBATION_CHOICES`; what each does: :mod:`usher2.features.perturb`) and the radiomics
  :data:`REGIONS` (:mod:`usher2.features.regions`).
* The columns and stages of the tables (:data:`ID_COLUMNS`, :data:`AREA_COLUMNS`,
  :data:`FAILURE_COLUMNS`, :data:`NO_LESION_STAGE`, :data:`CASE_STAGES`; the tables:
  :mod:`usher2.features.cohort`).

**Segmenter.** ``ExtractConfig.segmenter`` is a registry name (``unet``) or ``NAME=PATH`` for
other weights of that network (e.g. a segmenter trained without the devices being scored); the
provenance records the weights' SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from usher2.features.models import segmenter_spec as _segmenter_spec
from usher2.io.errors import InputError

__all__ = [
    "AREA_COLUMNS",
    "CASE_STAGES",
    "FAILURE_COLUMNS",
    "GEOMETRIC_PERTURBATIONS",
    "ID_COLUMNS",
    "NO_LESION_STAGE",
    "PERTURBATIONS",
    "PERTURBATION_CHOICES",
    "RADIOMICS_BACKENDS",
    "REGIONS",
    "ExtractConfig",
]

GEOMETRIC_PERTURBATIONS = ("erode1", "erode2", "dilate1", "dilate2", "rotate-5", "rotate+5", "shift-2", "shift+2")
PERTURBATIONS = ("original", *GEOMETRIC_PERTURBATIONS, "enhancer_on|enhancer_off", "mask_predicted|mask_given")
#: Names ``ExtractConfig.perturbations`` accepts besides ``contour-<k>``: the geometric ones and the two toggles.
PERTURBATION_CHOICES = (*GEOMETRIC_PERTURBATIONS, "enhancer", "mask")
FAILURE_COLUMNS = ["case_id", "stage", "error"]
#: The failures-table stage of a case whose predicted mask is empty (:class:`~usher2.io.errors.NoLesion`).
NO_LESION_STAGE = "no_lesion"
#: Stages at which a whole case produced no row (tried again by a re-run).
CASE_STAGES = ("features", NO_LESION_STAGE)
REGIONS = ("lesion", "peritumoral", "posterior")
#: Who computes the radiomics (:attr:`ExtractConfig.radiomics_backend`).
RADIOMICS_BACKENDS = ("pyradiomics", "torch")
AREA_COLUMNS = ("peritumoral_area_px", "posterior_area_px")
ID_COLUMNS = [
    "case_id",
    "patient_id",
    "label",
    "mask_source",
    "mask_area_px",
    "mask_uncertainty",
    "peritumoral_area_px",
    "posterior_area_px",
]


@dataclass(frozen=True)
class ExtractConfig:
    """What to extract; every field goes into the provenance and the resume digest.

    Attributes:
        params: Radiomics parameters (see :func:`~usher2.features.radiomics.load_params`); None: defaults.
        radiomics: Compute radiomics features.
        backbones: Deep backbones (``NAME``, ``NAME=PATH``, ``NAME=random``); empty: no deep features.
        masks: ``"given"`` (the manifest's) or ``"predicted"`` (the segmenter's).
        enhancer: Enhancer name, or None for none.
        segmenter: Segmenter name, for predicted masks and the mask perturbation.
        overlays: ``"keep"`` or ``"inpaint"`` (detect and inpaint burned-in text and calipers first).
        perturb: Also compute the perturbation table.
        perturbations: With ``perturb``, which perturbations: names of
            :data:`PERTURBATION_CHOICES` and ``contour-<k>``; None: every one of :data:`PERTURBATIONS`
            (no contour errors).
        regions: Radiomics regions: ``lesion`` (always) plus ``peritumoral`` and ``posterior``.
        lexicon: With ``radiomics``: also the BI-RADS lexicon descriptors
            (:mod:`usher2.features.lexicon`; orientation, margin, posterior features, halo,
            calcifications), as ``radiomics_lexicon_*`` columns.
        chunk_size: Cases per unit of work.
        device: Torch device for the networks (None: CUDA when available).
        radiomics_backend: Who computes the radiomics: ``"pyradiomics"`` (the reference) or
            ``"torch"`` (:mod:`usher2.features.torchrad`: the same columns, batched; parameters
            it cannot compute fall back to pyradiomics, see
            :func:`~usher2.features.models.radiomics_backend`). The two agree to float tolerance
            (``tests/features/torchrad``).
    """

    params: dict[str, Any] | None = None
    radiomics: bool = True
    backbones: tuple[str, ...] = ("usresnet10t",)
    masks: str = "given"
    enhancer: str | None = None
    segmenter: str = "unet"
    overlays: str = "keep"
    perturb: bool = False
    perturbations: tuple[str, ...] | None = None
    regions: tuple[str, ...] = ("lesion", "peritumoral", "posterior")
    lexicon: bool = True
    chunk_size: int = 16
    device: str | None = None
    radiomics_backend: str = "pyradiomics"

    def __post_init__(self) -> None:
        from usher2.features.radiomics import load_params

        if self.masks not in ("given", "predicted"):
            raise InputError("masks", "'given' or 'predicted'", repr(self.masks))
        if self.overlays not in ("keep", "inpaint"):
            raise InputError("overlays", "'keep' or 'inpaint'", repr(self.overlays))
        if self.enhancer in ("", "none"):
            object.__setattr__(self, "enhancer", None)
        if not self.radiomics and not self.backbones:
            raise InputError("features", "radiomics and/or at least one backbone", "neither")
        if self.chunk_size < 1:
            raise InputError("chunk_size", "a positive number of cases", str(self.chunk_size))
        if self.radiomics_backend not in RADIOMICS_BACKENDS:
            raise InputError(
                "radiomics_backend", " or ".join(map(repr, RADIOMICS_BACKENDS)), repr(self.radiomics_backend)
            )
        object.__setattr__(self, "backbones", tuple(str(b) for b in self.backbones))
        object.__setattr__(self, "regions", tuple(self.regions))
        bad = [r for r in self.regions if r not in REGIONS]
        if bad or "lesion" not in self.regions:
            raise InputError("regions", f"'lesion' plus any of {REGIONS[1:]}", str(list(self.regions)))
        object.__setattr__(self, "params", load_params(self.params))
        if self.perturbations is not None:
            names = tuple(dict.fromkeys(str(n) for n in self.perturbations))
            bad = [n for n in names if n not in PERTURBATION_CHOICES and _contour_index(n) is None]
            if bad or not names:
                raise InputError(
                    "perturbations", f"names among {', '.join(PERTURBATION_CHOICES)} or contour-<k> (k >= 1)", str(bad)
                )
            object.__setattr__(self, "perturbations", names)
        _segmenter_spec(self.segmenter)  # a malformed NAME=PATH fails here, not in the middle of a run

    def perturbation_names(self) -> tuple[str, ...]:
        """The perturbations to compute (with ``perturb``): the chosen ones, or every default one."""
        return self.perturbations if self.perturbations is not None else PERTURBATION_CHOICES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """SHA-256 of the settings that change feature values (not chunking or device)."""
        d = {k: v for k, v in self.to_dict().items() if k not in ("chunk_size", "device")}
        if d["perturbations"] is None or not self.perturb:  # the default: digests from before the field stay valid
            d.pop("perturbations")
        if d["radiomics_backend"] == "pyradiomics":  # likewise
            d.pop("radiomics_backend")
        if not self.radiomics:
            d.pop("params")
            d.pop("lexicon")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _contour_index(name: str) -> int | None:
    """k of ``contour-<k>`` (k >= 1), else None."""
    head, _, k = name.partition("-")
    return int(k) if head == "contour" and k.isdigit() and int(k) >= 1 else None
