"""The MRI feature table: per-sequence 3D radiomics, DCE kinetics and 2.5D deep features per case.

For every manifest row (:func:`usher2.mri.manifest.read_mri_manifest`) the needed sequences are
read, brought onto one grid with the lesion mask (:func:`usher2.mri.prepare.prepare_case`:
resampling, rigid registration, z-score normalisation) and turned into one feature row.

**Sequences** (``MRIExtractConfig.sequences``):

* ``t1``, ``t2``, ``dwi_b<b>`` or any other 3D column: the volume itself.
* ``adc``: the manifest's ``adc`` file; without one, the ADC map fitted to the case's
  ``dwi_b<b>`` volumes (:func:`usher2.mri.adc.adc_map`, log-linear least squares on the first
  DWI's grid), stored in 10⁻⁶ mm²/s, the unit scanners write ADC maps in.
* ``dce``: the 4D DCE series. Its radiomics image is the **subtraction** early peak − baseline:
  the last phase within 120 s of the pre-contrast phase 1 (per the manifest's ``dce_times_s``;
  phase 2 when the times are unknown) minus phase 1, where the enhancing lesion stands out.
* ``dce_p<k>``: phase ``k`` of the 4D ``dce`` (1-based; phase 1 is the pre-contrast baseline).

**Columns:** ``case_id``, ``patient_id``, ``label`` (when the manifest has one), ``mri_flags``
(the preparation's quality flags, ``";"``-joined), then per sequence

* ``<seq>_radiomics_<pyradiomics name>``, e.g. ``t2_radiomics_original_firstorder_Mean``, on the
  lesion (parameters: :data:`DEFAULT_PARAMS_FILE` unless ``radiomics`` says otherwise);
* ``<seq>_radiomics_morphology_EllipsoidDice`` (with ``morphology``): the lesion's overlap with its
  moment ellipsoid (:func:`usher2.features.morphology.ellipsoid_fit`), a margin-irregularity
  measure that pyradiomics' ``Sphericity`` mixes with elongation; the mask is the same for
  every sequence, so is the value (like pyradiomics' shape features);
* ``<seq>_radiomics_peritumoral_<pyradiomics name>``: first-order features of a shell
  ``peritumoral_mm`` wide around the lesion (the lesion dilated by an ellipsoid of that radius
  in mm, minus the lesion, inside the grid); NaN when the shell has fewer than 8 voxels;
* ``<seq>_deep_<backbone>_<i>`` (with ``backbones``): 2.5D deep features, the mean over the
  axial slice with the largest lesion area and ``neighbours`` slices on each side of
  :class:`usher2.features.deep.DeepExtractor`'s pooled features of each slice with its mask
  (a neighbour slice without lesion uses the central slice's mask). Slices are scaled to
  [0, 1] by the volume's 0.5th-99.5th percentiles;
* ``dce_kinetics_*`` (with ``kinetics`` and a ``dce`` column): :func:`usher2.mri.kinetics.kinetic_features`
  of the lesion on the common grid, on the **un-normalised** signal (a z-score would break the
  percentage enhancement). The phases are resampled onto the grid by physical coordinates
  (DCE phases are one acquisition; they are not registered to the reference).

**Perturbations** (for the ICC filter of :mod:`usher2.fusion.selection`), applied to the
prepared case: ``erode``/``dilate`` (the mask by one voxel in-plane), ``shift`` (the mask moved
one voxel along x and y), ``noise`` (Gaussian noise of 5% of each volume's standard deviation
inside the lesion, seeded), of every case or of a ``perturb_fraction`` share of them
(:func:`perturbed`). Every feature column is recomputed; the long table has
``case_id``, ``perturbation`` (``original`` and the names) and the feature columns.

**Outputs, resume, failures** as in :func:`usher2.features.extract.extract_cohort`: the table
(Parquet, provenance in its metadata), ``<stem>.provenance.json``, ``<stem>.failures.csv``,
``<stem>.perturbations.parquet``; finished chunks under ``<stem>.parts/<settings digest>/``
keyed by case and the SHA-256 of every input file, so a re-run computes only what changed.
A bad case is a failure row (stage ``features``), never a crash and never a NaN row.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from usher2.features.extract import ExtractResult, collect_parts, run_extraction, write_extraction
from usher2.features.models import cached_model
from usher2.features.morphology import ellipsoid_fit
from usher2.io.errors import InputError
from usher2.io.hashing import file_sha256
from usher2.io.parts import ChunkResults
from usher2.mri.adc import adc_map
from usher2.mri.io import Volume, read_volume
from usher2.mri.kinetics import kinetic_features
from usher2.mri.manifest import _times, dwi_columns, read_mri_manifest
from usher2.mri.prepare import prepare_case, resample, to_array

__all__ = [
    "DEFAULT_PARAMS_FILE",
    "MRI_PERTURBATIONS",
    "MRIExtractConfig",
    "extract_mri_cohort",
    "mri_case_features",
    "perturbed",
]

DEFAULT_PARAMS_FILE = Path(__file__).with_name("params") / "mri3d.yaml"
"""usher2's default 3D pyradiomics parameters for z-scored MRI (Original image, all 3D classes)."""
MRI_PERTURBATIONS: tuple[str, ...] = ("erode", "dilate", "shift", "noise")
ID_COLUMNS = ["case_id", "patient_id", "label", "mri_flags"]
_DCE_PHASE = re.compile(r"^dce_p([1-9]\d*)$")
_MIN_SHELL_VOXELS = 8
_EARLY_TIME_S = 120.0


@dataclass(frozen=True)
class MRIExtractConfig:
    """What to extract from each MRI case; every field goes into the provenance and the resume digest.

    Attributes:
        sequences: Sequences to use (see the module docstring for the names).
        reference: Sequence defining the common grid; None: ``t2`` if used, else the first.
        spacing: Common voxel size ``(x, y, z)`` in mm; None keeps the reference's own spacing.
        register: Register every other sequence rigidly to the reference.
        registration: Extra keyword arguments of :func:`usher2.mri.prepare.register_rigid`.
        n4: N4 bias-field correction first.
        normalise: Z-score each volume inside the reference's foreground.
        radiomics: pyradiomics parameters (YAML file or dict); None: :data:`DEFAULT_PARAMS_FILE`;
            False: no radiomics (nor peritumoral features), e.g. for a deep-features-only study.
        peritumoral_mm: Width of the peritumoral shell (0: no peritumoral features).
        morphology: The moment-ellipsoid fit of the lesion with the radiomics (see the columns).
        kinetics: DCE kinetic features when the case has a ``dce`` series.
        backbones: Deep backbones (``NAME``, ``NAME=PATH``, ``NAME=random``); empty: none.
        deep_sequences: Sequences given to the backbones; None: every sequence used.
        neighbours: Slices on each side of the largest-lesion slice for the 2.5D deep features.
        deep_input_size: Backbone input side in pixels (e.g. 64 for CPU speed; a vision transformer
            is built for it); None: the backbone's own.
        perturbations: Perturbations (of :data:`MRI_PERTURBATIONS`) for the ICC table.
        perturb_fraction: Share of the cases that are also extracted under the perturbations, chosen
            by a seeded hash of the case id (so the same cases whatever the chunking or order). The
            ICC is a property of the features, and a subset estimates it as the MRI studies do
            (ICC on a random sample of patients) at a fraction of the cost; 1 = every case.
        seed: Seed of the random backbones and the noise perturbation.
        chunk_size: Cases per unit of work.
        device: Torch device of the backbones (None: CUDA when available).

    Example:
        >>> cfg = MRIExtractConfig(sequences=("t2", "dce_p3"))
        >>> cfg.params["setting"]["binWidth"], len(cfg.digest())
        (0.25, 64)
    """

    sequences: tuple[str, ...] = ("t2", "adc")
    reference: str | None = None
    spacing: tuple[float, float, float] | None = (0.5, 0.5, 3.0)
    register: bool = True
    registration: dict[str, Any] = field(default_factory=dict)
    n4: bool = False
    normalise: bool = True
    radiomics: str | dict[str, Any] | bool | None = None
    peritumoral_mm: float = 3.0
    morphology: bool = True
    kinetics: bool = True
    backbones: tuple[str, ...] = ()
    deep_sequences: tuple[str, ...] | None = None
    neighbours: int = 1
    deep_input_size: int | None = None
    perturbations: tuple[str, ...] = ()
    perturb_fraction: float = 1.0
    seed: int = 0
    chunk_size: int = 4
    device: str | None = None
    params: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from usher2.features.radiomics import load_params

        seqs = tuple(str(s) for s in self.sequences)
        if not seqs or len(set(seqs)) != len(seqs):
            raise InputError("sequences", "one or more distinct sequence names", str(list(self.sequences)))
        object.__setattr__(self, "sequences", seqs)
        if self.reference is not None and self.reference not in seqs:
            raise InputError("reference", f"one of the sequences {list(seqs)}", repr(self.reference))
        if self.spacing is not None:
            sp = tuple(float(s) for s in self.spacing)
            if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
                raise InputError("spacing", "three positive voxel sizes in mm (x, y, z), or None", str(self.spacing))
            object.__setattr__(self, "spacing", sp)
        object.__setattr__(self, "registration", dict(self.registration or {}))
        if not (math.isfinite(float(self.peritumoral_mm)) and self.peritumoral_mm >= 0):
            raise InputError("peritumoral_mm", "a width in mm >= 0", str(self.peritumoral_mm))
        object.__setattr__(self, "backbones", tuple(str(b) for b in self.backbones))
        if self.deep_sequences is not None:
            deep = tuple(str(s) for s in self.deep_sequences)
            bad = [s for s in deep if s not in seqs]
            if bad:
                raise InputError("deep_sequences", f"sequences among {list(seqs)}", str(bad))
            object.__setattr__(self, "deep_sequences", deep)
        if int(self.neighbours) < 0:
            raise InputError("neighbours", "a number of slices >= 0", str(self.neighbours))
        if self.deep_input_size is not None and int(self.deep_input_size) < 16:
            raise InputError(
                "deep_input_size", "an input side of at least 16 pixels, or None", str(self.deep_input_size)
            )
        perts = tuple(str(p) for p in self.perturbations)
        bad = [p for p in perts if p not in MRI_PERTURBATIONS]
        if bad or len(set(perts)) != len(perts):
            raise InputError("perturbations", f"distinct names among {list(MRI_PERTURBATIONS)}", str(list(perts)))
        object.__setattr__(self, "perturbations", perts)
        frac = float(self.perturb_fraction)
        if not (0 < frac <= 1):
            raise InputError("perturb_fraction", "a share of the cases in (0, 1]", str(self.perturb_fraction))
        object.__setattr__(self, "perturb_fraction", frac)
        if int(self.chunk_size) < 1:
            raise InputError("chunk_size", "a positive number of cases", str(self.chunk_size))
        if self.radiomics is True:
            raise InputError("radiomics", "a parameter file or dict, None (the default) or False (none)", "True")
        if self.radiomics is False and not self.backbones and not self.kinetics:
            raise InputError("radiomics", "some features: radiomics, kinetics or backbones", "all off")
        use = self.radiomics is not False
        params = load_params(DEFAULT_PARAMS_FILE if self.radiomics in (None, False) else self.radiomics)
        if not use:
            object.__setattr__(self, "peritumoral_mm", 0.0)
        object.__setattr__(self, "morphology", bool(self.morphology) and use)
        object.__setattr__(self, "params", params)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["perturb_fraction"] == 1.0:  # the default keeps the digests (and resumable parts) of older runs
            del d["perturb_fraction"]
        if not d["morphology"]:  # the tables of older runs had no morphology columns: the same digest
            del d["morphology"]
        d["radiomics"] = str(self.radiomics) if isinstance(self.radiomics, str | Path) else self.radiomics
        return d

    def digest(self) -> str:
        """SHA-256 of the settings that change feature values (not chunking or device)."""
        d = {k: v for k, v in self.to_dict().items() if k not in ("chunk_size", "device", "radiomics")}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()

    @property
    def deep_names(self) -> tuple[str, ...]:
        return self.sequences if self.deep_sequences is None else self.deep_sequences


# ------------------------------------------------------------------------------ reading
def _empty(value: Any) -> bool:
    return value is None or (np.ndim(value) == 0 and pd.isna(value)) or str(value).strip() == ""


def _path(case: Mapping[str, Any], column: str, seq: str) -> str:
    value = case.get(column)
    if _empty(value):
        raise InputError(
            f"case {case.get('case_id')!r}: column {column!r}", f"a file for sequence {seq!r}", "an empty cell"
        )
    return str(value)


def _dce_phase_index(times: Sequence[float] | None, n: int) -> int:
    """Index of the early peak phase: the last phase within 120 s of the baseline (phase 2 without times)."""
    if times is None or len(times) != n:
        return 1
    rel = np.asarray(times, float) - float(times[0])
    early = np.flatnonzero((rel > 0) & (rel <= _EARLY_TIME_S))
    return int(early[-1]) if early.size else 1


def _frame_volume(vol: Volume, arr: np.ndarray, name: str) -> Volume:
    return Volume(arr.astype(np.float32, copy=False), vol.spacing, vol.origin, vol.direction, name, source=vol.source)


def _read_sequences(case: Mapping[str, Any], cfg: MRIExtractConfig) -> tuple[dict[str, Volume], Volume | None]:
    """``({sequence: 3D Volume}, the 4D DCE Volume or None)`` for one case."""
    out: dict[str, Volume] = {}
    dce: Volume | None = None
    times = _times(case.get("dce_times_s"), f"case {case.get('case_id')!r}: dce_times_s")

    def load_dce() -> Volume:
        nonlocal dce
        if dce is None:
            p = _path(case, "dce", "dce")
            dce = read_volume(p, sequence="dce")
            if not dce.is_4d or dce.array.shape[0] < 2:
                raise InputError(p, "a 4D DCE series (two or more phases)", f"shape {dce.shape}")
            if times is not None:
                if len(times) != dce.array.shape[0]:
                    raise InputError(p, f"{len(times)} phases (one per dce_times_s entry)", f"{dce.array.shape[0]}")
                dce = replace(dce, times=times)
        return dce

    for seq in cfg.sequences:
        if seq == "dce":
            v = load_dce()
            peak = _dce_phase_index(v.times, v.array.shape[0])
            out[seq] = _frame_volume(v, v.array[peak] - v.array[0], seq)
        elif m := _DCE_PHASE.match(seq):
            v = load_dce()
            k = int(m.group(1))
            if k > v.array.shape[0]:
                raise InputError(v.source, f"phase {k} for {seq!r}", f"{v.array.shape[0]} phases")
            out[seq] = _frame_volume(v, v.array[k - 1], seq)
        elif seq == "adc" and _empty(case.get("adc")):
            dwi = dwi_columns([str(k) for k in case.keys()])
            dwi = {b: c for b, c in dwi.items() if not _empty(case.get(c))}
            if len(dwi) < 2:
                raise InputError(
                    f"case {case.get('case_id')!r}: column 'adc'",
                    "an ADC file or two or more dwi_b<b> files",
                    "neither",
                )
            vols = {b: read_volume(case[c], sequence=c) for b, c in dwi.items()}
            first = next(iter(vols.values()))
            arrays = {}
            for b, v in vols.items():
                if v.is_4d or not v.same_grid(first):
                    raise InputError(v.source, "a 3D DWI volume on the grid of the other b-values", f"shape {v.shape}")
                arrays[b] = v.array
            adc, _ = adc_map(arrays)
            out[seq] = _frame_volume(first, np.clip(adc, 0, None) * 1e6, "adc")
        else:
            v = read_volume(_path(case, seq, seq), sequence=seq)
            if v.is_4d:
                raise InputError(v.source, f"a 3D volume for sequence {seq!r}", f"a 4D volume of shape {v.shape}")
            out[seq] = v
    if cfg.kinetics and dce is None and "dce" in case and not _empty(case.get("dce")) and times is not None:
        load_dce()
    return out, dce


def _read_mask(case: Mapping[str, Any]) -> sitk.Image:
    p = _path(case, "mask", "mask")
    m = read_volume(p, sequence="mask")
    if m.is_4d:
        raise InputError(p, "a 3D lesion mask", f"a 4D volume of shape {m.shape}")
    arr = m.array
    if not np.array_equal(arr, np.round(arr)) or arr.min() < 0:
        raise InputError(p, "integer labels >= 0 (0 background)", f"values in {arr.min()}..{arr.max()}")
    if not arr.any():
        raise InputError(p, "a lesion mask with at least one voxel", "an empty mask")
    img = sitk.GetImageFromArray((arr != 0).astype(np.uint8))
    img.SetSpacing(m.spacing)
    img.SetOrigin(m.origin)
    img.SetDirection(m.direction)
    return img


# ------------------------------------------------------------------------------ features
def _radiomics(cfg: MRIExtractConfig) -> Any:
    from usher2.features.radiomics import RadiomicsExtractor

    key = json.dumps(cfg.params, sort_keys=True, default=str)
    return cached_model("mri-radiomics", key, lambda: RadiomicsExtractor(cfg.params))


def _shell_radiomics(cfg: MRIExtractConfig) -> Any:
    from usher2.features.radiomics import RadiomicsExtractor

    setting = {k: v for k, v in cfg.params["setting"].items() if k != "resampledPixelSpacing"}
    params = {"imageType": {"Original": {}}, "featureClass": {"firstorder": None}, "setting": setting}
    key = json.dumps(params, sort_keys=True, default=str)
    return cached_model("mri-radiomics", key, lambda: RadiomicsExtractor(params))


def _deep(cfg: MRIExtractConfig, spec: str) -> Any:
    from usher2.features.deep import DeepExtractor, RandomInitWarning

    def build() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomInitWarning)  # asked for by name; noted in the provenance
            return DeepExtractor(spec, device=cfg.device, seed=cfg.seed, batch_size=16, input_size=cfg.deep_input_size)

    return cached_model("mri-deep", f"{spec}|{cfg.device}|{cfg.seed}|{cfg.deep_input_size}", build)


def _image(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(ref)
    return img


def _shell(mask: np.ndarray, ref: sitk.Image, mm: float) -> np.ndarray:
    """The lesion dilated by an ellipsoid of ``mm`` (at least a voxel per axis), minus the lesion."""
    radius = [max(1, math.ceil(mm / s - 1e-6)) for s in ref.GetSpacing()]  # x, y, z
    idx = np.nonzero(mask)
    box = tuple(
        slice(max(0, int(a.min()) - r - 1), min(n, int(a.max()) + r + 2))
        for a, r, n in zip(idx, radius[::-1], mask.shape, strict=True)
    )
    grown = sitk.BinaryDilate(sitk.GetImageFromArray(mask[box].astype(np.uint8)), radius, sitk.sitkBall)
    out = np.zeros_like(mask, dtype=bool)
    out[box] = to_array(grown) != 0  # dilation on the lesion's box (the whole grid is ~100x slower)
    return out & ~mask


def _deep_features(cfg: MRIExtractConfig, arr: np.ndarray, mask: np.ndarray, seq: str) -> dict[str, float]:
    areas = mask.sum(axis=(1, 2))
    z = int(np.argmax(areas))
    lo, hi = np.percentile(arr, [0.5, 99.5])
    scaled = np.clip((arr - lo) / (hi - lo if hi > lo else 1.0), 0, 1).astype(np.float32)
    zs = [k for k in range(z - cfg.neighbours, z + cfg.neighbours + 1) if 0 <= k < arr.shape[0]]
    frames = [scaled[k] for k in zs]
    masks = [mask[k] if mask[k].any() else mask[z] for k in zs]
    out: dict[str, float] = {}
    for spec in cfg.backbones:
        ex = _deep(cfg, spec)
        pooled = ex.features(frames, masks).mean(axis=0)
        out.update({f"{seq}_{c}": float(v) for c, v in zip(ex.columns, pooled, strict=True)})
    return out


def _crop_box(region: np.ndarray, cfg: MRIExtractConfig) -> tuple[slice, ...] | None:
    """The region's bounding box grown by pyradiomics' ``padDistance`` + 2 voxels, or None (no crop).

    pyradiomics crops to the same box (padded by ``padDistance`` for its filters) before it
    computes anything, so the values are unchanged; only its whole-image checks get cheaper
    (about 0.3 s per call on a 256 x 256 x 40 grid). Not with ``normalize`` (whole-image
    statistics) or resampling, which read the whole image.
    """
    setting = cfg.params.get("setting") or {}
    if setting.get("normalize") or setting.get("resampledPixelSpacing"):
        return None
    pad = int(setting.get("padDistance", 5)) + 2
    idx = np.nonzero(region)
    return tuple(
        slice(max(0, int(a.min()) - pad), min(n, int(a.max()) + pad + 1))
        for a, n in zip(idx, region.shape, strict=True)
    )


def _crop(image: sitk.Image, box: tuple[slice, ...] | None) -> sitk.Image:
    if box is None:
        return image
    z, y, x = box
    return image[x, y, z]  # SimpleITK slicing is (x, y, z) and keeps the physical placement


def _features(
    cfg: MRIExtractConfig,
    volumes: Mapping[str, sitk.Image],
    mask: np.ndarray,
    dce: np.ndarray | None,
    times: Sequence[float] | None,
) -> dict[str, float]:
    """Every feature column of one prepared case (``mask`` boolean on the common grid)."""
    if not mask.any():
        raise InputError("mask", "a lesion on the common grid", "an empty mask after resampling")
    ref = next(iter(volumes.values()))
    msk = _image(mask.astype(np.uint8), ref)
    shell = _shell(mask, ref, cfg.peritumoral_mm) if cfg.peritumoral_mm > 0 else None
    shell_ok = shell is not None and int(shell.sum()) >= _MIN_SHELL_VOXELS
    region = mask | shell if shell is not None else mask
    box = _crop_box(region, cfg)
    msk = _crop(msk, box)
    shell_img = _crop(_image(shell.astype(np.uint8), ref), box) if shell_ok else None
    row: dict[str, float] = {}
    morph = ellipsoid_fit(mask, ref.GetSpacing()[::-1]) if cfg.morphology else {}
    for seq, full in volumes.items():
        if cfg.radiomics is False:
            break
        img = _crop(full, box)
        row.update({f"{seq}_{k}": v for k, v in _radiomics(cfg).extract(img, msk).items()})
        row.update({f"{seq}_radiomics_morphology_{k}": v for k, v in morph.items()})
        if shell is not None:
            ext = _shell_radiomics(cfg)
            if shell_img is not None:
                vals = ext.extract(img, shell_img)
            else:
                vals = dict.fromkeys(_shell_columns(cfg), math.nan)
            row.update({f"{seq}_radiomics_peritumoral_{k.removeprefix('radiomics_')}": v for k, v in vals.items()})
    if dce is not None and times is not None:
        row.update(kinetic_features(dce, times, mask, early_time_s=_EARLY_TIME_S))
    if cfg.backbones:
        for seq in cfg.deep_names:
            row.update(_deep_features(cfg, to_array(volumes[seq]), mask, seq))
    return row


def _shell_columns(cfg: MRIExtractConfig) -> list[str]:
    def build() -> list[str]:
        z, y, x = np.mgrid[:6, :24, :24]
        ball = (z - 3) ** 2 + (y - 12) ** 2 + (x - 12) ** 2 < 25
        img = np.random.default_rng(0).random((6, 24, 24)).astype(np.float32)
        return list(_shell_radiomics(cfg).extract(img, ball))

    return cached_model("mri-shell-columns", json.dumps(cfg.params["setting"], sort_keys=True, default=str), build)


def _prepared(case: Mapping[str, Any], cfg: MRIExtractConfig) -> dict[str, Any]:
    vols, dce = _read_sequences(case, cfg)
    mask_img = _read_mask(case)
    ref_name = cfg.reference or ("t2" if "t2" in vols else next(iter(vols)))
    spacing = cfg.spacing if cfg.spacing is not None else vols[ref_name].spacing
    prep = prepare_case(
        {k: v.to_sitk() for k, v in vols.items()},
        mask_img,
        reference=ref_name,
        spacing=spacing,
        register=cfg.register,
        n4=cfg.n4,
        normalise=cfg.normalise,
        registration=cfg.registration,
    )
    mask = to_array(prep.mask) != 0
    grid = prep.volumes[ref_name]
    dce_arr = times = None
    if cfg.kinetics and dce is not None and dce.times is not None:
        times = dce.times
        dce_arr = np.stack(
            [to_array(resample(dce.to_sitk(i), reference=grid)) for i in range(dce.array.shape[0])]
        ).astype(np.float64)
    return {"prep": prep, "mask": mask, "dce": dce_arr, "times": times}


def _rng(cfg: MRIExtractConfig, case_id: str) -> np.random.Generator:
    key = int.from_bytes(hashlib.sha256(str(case_id).encode()).digest()[:8], "little")
    return np.random.default_rng([cfg.seed, key])


def perturbed(cfg: MRIExtractConfig, case_id: str) -> bool:
    """Whether ``case_id`` is among the cases extracted under the perturbations.

    Example:
        >>> cfg = MRIExtractConfig(perturbations=("noise",), perturb_fraction=0.25)
        >>> abs(sum(perturbed(cfg, f"c{i}") for i in range(4000)) / 4000 - 0.25) < 3 * (0.25 * 0.75 / 4000) ** 0.5
        True
        >>> perturbed(MRIExtractConfig(), "c0")
        False
    """
    if not cfg.perturbations:
        return False
    key = hashlib.sha256(f"{cfg.seed}:{case_id}".encode()).digest()[:8]
    return int.from_bytes(key, "little") / 2.0**64 < cfg.perturb_fraction


def _perturb(
    name: str, volumes: Mapping[str, sitk.Image], mask: np.ndarray, rng: np.random.Generator
) -> tuple[dict[str, sitk.Image], np.ndarray]:
    ref = next(iter(volumes.values()))
    if name in ("erode", "dilate"):
        op = sitk.BinaryErode if name == "erode" else sitk.BinaryDilate
        out = to_array(op(_image(mask.astype(np.uint8), ref), [1, 1, 0], sitk.sitkBall)) != 0
        return dict(volumes), out
    if name == "shift":
        out = np.zeros_like(mask)
        out[:, 1:, 1:] = mask[:, :-1, :-1]
        return dict(volumes), out
    noisy = {}
    for seq, img in volumes.items():
        arr = to_array(img).astype(np.float32)
        sd = float(arr[mask].std()) if mask.any() else float(arr.std())
        noisy[seq] = _image((arr + rng.normal(0, 0.05 * sd, arr.shape)).astype(np.float32), img)
    return noisy, mask


def _case_rows(case: Mapping[str, Any], cfg: MRIExtractConfig) -> tuple[dict[str, Any], list[dict], list[dict]]:
    """``(feature row, perturbation rows, perturbation failures)`` of one case."""
    p = _prepared(case, cfg)
    prep = p["prep"]
    feats = _features(cfg, prep.volumes, p["mask"], p["dce"], p["times"])
    row = {"mri_flags": ";".join(prep.flags), **feats}
    prows: list[dict[str, Any]] = []
    fails: list[dict[str, Any]] = []
    cid = str(case.get("case_id"))
    if perturbed(cfg, cid):
        prows.append({"case_id": cid, "perturbation": "original", **feats})
        rng = _rng(cfg, cid)
        for name in cfg.perturbations:
            try:
                vols, m = _perturb(name, prep.volumes, p["mask"], rng)
                prows.append({"case_id": cid, "perturbation": name, **_features(cfg, vols, m, p["dce"], p["times"])})
            except Exception as exc:  # a perturbation that fails is reported, the case goes on
                fails.append({"case_id": cid, "stage": f"perturbation:{name}", "error": f"{type(exc).__name__}: {exc}"})
    return row, prows, fails


def mri_case_features(case: Mapping[str, Any], cfg: MRIExtractConfig | None = None) -> dict[str, Any]:
    """One case's feature row (see the module docstring for the columns).

    Args:
        case: A row of :func:`~usher2.mri.manifest.read_mri_manifest` (absolute paths).
        cfg: What to extract; None: :class:`MRIExtractConfig` defaults.

    Returns:
        ``{"mri_flags": str, feature column: float}``.

    Raises:
        InputError: A missing or unreadable file, NaN voxels, an empty mask, a missing sequence,
            a region pyradiomics cannot measure (naming the file or field).

    Example:
        >>> row = mri_case_features(read_mri_manifest("manifest.csv").iloc[0])  # doctest: +SKIP
        >>> row["t2_radiomics_original_firstorder_Mean"]  # doctest: +SKIP
        0.83
    """
    return _case_rows(case, cfg or MRIExtractConfig())[0]


# ------------------------------------------------------------------------------ the cohort
def _path_sha256(path: Any) -> str:
    if _empty(path):
        return ""
    p = Path(str(path))
    try:
        if p.is_dir():
            h = hashlib.sha256()
            for f in sorted(x for x in p.rglob("*") if x.is_file()):
                h.update(f"{f.relative_to(p)}|{file_sha256(f)}\n".encode())
            return h.hexdigest()
        return file_sha256(p)
    except OSError:
        return ""  # the case reports the unreadable file


def _input_columns(cfg: MRIExtractConfig, columns: Sequence[str]) -> list[str]:
    cols: list[str] = []
    for seq in cfg.sequences:
        if seq == "dce" or _DCE_PHASE.match(seq):
            cols.append("dce")
        elif seq == "adc" and "adc" not in columns:
            cols += list(dwi_columns(columns).values())
        else:
            cols.append(seq)
    if cfg.kinetics and "dce" in columns:
        cols.append("dce")
    return [c for c in dict.fromkeys(cols) if c in columns]


def _cases(manifest: str | Path | pd.DataFrame, cfg: MRIExtractConfig) -> tuple[list[dict[str, Any]], str]:
    df = read_mri_manifest(manifest, sequences=cfg.sequences, check_files=False)
    if isinstance(manifest, pd.DataFrame):
        digest = hashlib.sha256(pd.util.hash_pandas_object(manifest.astype(str)).values).hexdigest()
    else:
        digest = file_sha256(manifest)
    cols = _input_columns(cfg, list(df.columns))
    cases = []
    for rec in df.to_dict("records"):
        rec = {k: (None if np.ndim(v) == 0 and pd.isna(v) else v) for k, v in rec.items()}
        rec["patient_id"] = str(rec["patient_id"])
        if "label" in rec:
            rec["label"] = None if rec["label"] is None else int(rec["label"])
        rec["input_sha256"] = {c: _path_sha256(rec.get(c)) for c in cols}
        rec["image_sha256"] = hashlib.sha256(json.dumps(rec["input_sha256"], sort_keys=True).encode()).hexdigest()
        rec["mask_sha256"] = _path_sha256(rec.get("mask"))
        cases.append(rec)
    return cases, digest


def _extract_chunk(cfg: MRIExtractConfig, cases: list[dict[str, Any]]) -> dict[str, Any]:
    rows, prows, failures = [], [], []
    for case in cases:
        try:
            row, pr, fl = _case_rows(case, cfg)
        except Exception as exc:  # a bad case is a failure row, never a crash of the cohort
            failures.append({"case_id": case["case_id"], "stage": "features", "error": f"{type(exc).__name__}: {exc}"})
            continue
        ids = {"case_id": case["case_id"], "patient_id": case["patient_id"]}
        if "label" in case:
            ids["label"] = case["label"]
        rows.append({**ids, **row})
        prows += pr
        failures += fl
    return {"rows": rows, "perturbations": prows, "failures": failures}


def _init_worker() -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def _provenance(cfg: MRIExtractConfig, cases: list[dict[str, Any]], manifest_sha: str) -> dict[str, Any]:
    import usher2

    return {
        "usher2": usher2.__version__,
        "modality": "mri",
        "settings": cfg.to_dict(),
        "settings_sha256": cfg.digest(),
        "manifest_sha256": manifest_sha,
        "radiomics": None if cfg.radiomics is False else _radiomics(cfg).provenance(),
        "deep": [_deep(cfg, spec).provenance() for spec in cfg.backbones],
        "inputs": [
            {"case_id": c["case_id"], "files_sha256": c["input_sha256"], "mask_sha256": c["mask_sha256"]} for c in cases
        ],
    }


def extract_mri_cohort(
    manifest: str | Path | pd.DataFrame,
    out: str | Path,
    cfg: MRIExtractConfig | None = None,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> ExtractResult:
    """Extract the MRI feature table of a cohort (outputs, resume and failures: module docstring).

    Args:
        manifest: An MRI manifest file or DataFrame (see :func:`~usher2.mri.manifest.read_mri_manifest`).
        out: The feature table to write (``.parquet``).
        cfg: What to extract; None: :class:`MRIExtractConfig` defaults.
        workers: Local worker processes (each single-threaded); None or 1: in this process.
        progress: ``progress(cases_done, n_cases)`` after every chunk.
        log: Receives one line per event.

    Returns:
        The :class:`~usher2.features.extract.ExtractResult`.

    Raises:
        InputError: A bad manifest (missing columns, sequences) or output path. Bad cases do not raise.
    """
    cfg = cfg or MRIExtractConfig()
    return run_extraction(
        cfg,
        manifest,
        out,
        lambda: _cases(manifest, cfg),
        functools.partial(_extract_chunk, cfg),
        lambda chunks, say: _pool_results(cfg, chunks, workers, say),
        functools.partial(_assemble, cfg),
        progress=progress,
        log=log,
    )


@contextmanager
def _pool_results(
    cfg: MRIExtractConfig, chunks: list[list[dict[str, Any]]], workers: int | None, say: Callable[[str], None]
) -> Iterator[ChunkResults | None]:
    """The chunks computed by ``workers`` single-threaded processes, as they finish; None (compute
    them in this process) for one worker or one chunk. The pool is shut down on leaving."""
    if not (workers and workers > 1 and len(chunks) > 1):
        yield None
        return
    say(f"{workers} worker processes, {len(chunks)} chunks")
    with ProcessPoolExecutor(max_workers=int(workers), initializer=_init_worker) as pool:
        futures = {pool.submit(_extract_chunk, cfg, chunk): chunk for chunk in chunks}
        yield ((futures[fut], fut.result()) for fut in as_completed(futures))


def _assemble(
    cfg: MRIExtractConfig, cases: list[dict[str, Any]], manifest_sha: str, parts: Path, out: Path, computed: int
) -> ExtractResult:
    frames, pframes, failures, order = collect_parts(parts, cases)
    has_label = any("label" in c for c in cases)
    ids = [c for c in ID_COLUMNS if c != "label" or has_label]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ids)
    table = table.sort_values("case_id", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    table = table[ids + [c for c in table.columns if c not in ids]]
    prov = _provenance(cfg, cases, manifest_sha)
    return write_extraction(out, table, failures, pframes if cfg.perturbations else None, prov, order, computed)
