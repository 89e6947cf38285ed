"""Reading MRI volumes and studies: NIfTI, NRRD and DICOM series, de-identified on the way in.

A :class:`Volume` holds a float32 array in numpy order, ``(z, y, x)`` for one volume or
``(t, z, y, x)`` for a 4D one (DCE phases, or DWI b-values), with the SimpleITK geometry of one
3D frame: ``spacing``, ``origin`` and ``direction`` in ``(x, y, z)`` order, millimetres, LPS.

Conventions:

- **DICOM series.** Files are grouped by SeriesInstanceUID (read, never returned). Inside a series
  the slices are ordered by their position along the slice normal. When a slice position occurs
  more than once, the series is 4D and is split into frames by, in this order, the diffusion
  b-value, TemporalPositionIdentifier, TriggerTime or AcquisitionTime.
- **Times** (DCE) are seconds from the first frame, from AcquisitionTime (the earliest slice of a
  frame), else TriggerTime (ms). With neither, ``times`` is None and the frames keep their order.
- **b-values** (DWI, s/mm²) come from DiffusionBValue (0018,9087), else Siemens (0019,100C), else
  GE (0043,1039). A series whose ImageType says ``ADC`` is a derived map, not a DWI: it has no
  b-values. ``times`` and ``b_values`` have one entry per frame (a 3D volume is one frame).
- **Metadata** is an allow-list (:data:`MRI_SAFE_TAGS`, the approach of
  :func:`usher2.io.dicom.safe_metadata`): patient identifiers, dates, UIDs and institution
  names are never copied. Absolute times of day are used only to compute relative ``times``.
- **NaN or infinite voxels** are an :class:`~usher2.io.errors.InputError` naming their count (no
  silent NaN downstream); replace them before reading if they are meaningful.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset

from usher2.io.config import read_mapping
from usher2.io.dicom import DICOM_SUFFIXES, plain_value
from usher2.io.errors import InputError

__all__ = [
    "MRI_SAFE_TAGS",
    "VOLUME_SUFFIXES",
    "Volume",
    "read_mask",
    "read_study",
    "read_volume",
]

MRI_SAFE_TAGS: tuple[str, ...] = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "MagneticFieldStrength",
    "SeriesDescription",
    "SeriesNumber",
    "ProtocolName",
    "SequenceName",
    "ScanningSequence",
    "SequenceVariant",
    "MRAcquisitionType",
    "ImageType",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
    "SliceThickness",
    "SpacingBetweenSlices",
    "BodyPartExamined",
    "Laterality",
    "ContrastBolusAgent",
    "PhotometricInterpretation",
    "BitsStored",
    "RescaleSlope",
    "RescaleIntercept",
)
"""The DICOM keywords copied into ``Volume.metadata``; anything else is dropped."""

VOLUME_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
"""File suffixes read as one volume by SimpleITK."""

_GEOMETRY_TOL = 1e-3  # mm for spacing/origin, and cosines for direction; DICOM stores ~6 digits


@dataclass(frozen=True)
class Volume:
    """One MRI sequence: voxels and the geometry that places them in the patient.

    Attributes:
        array: float32 voxels, ``(z, y, x)`` or ``(t, z, y, x)`` (frames: DCE phases or b-values).
        spacing: Voxel size in mm, ``(x, y, z)``.
        origin: Centre of the first voxel in mm (LPS), ``(x, y, z)``.
        direction: Row-major 3x3 direction cosines, 9 numbers.
        sequence: The sequence name (``"t2"``, ``"adc"``, a SeriesDescription, a file stem...).
        times: Seconds from the first frame, one per frame (DCE), or None.
        b_values: s/mm², one per frame (DWI), or None.
        metadata: De-identified metadata only (see :data:`MRI_SAFE_TAGS`).
        source: The file or folder read.

    Example:
        >>> v = Volume(np.zeros((2, 3, 4), np.float32), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
        >>> v.shape, v.is_4d, v.to_sitk().GetSize()
        ((2, 3, 4), False, (4, 3, 2))
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    sequence: str = ""
    times: tuple[float, ...] | None = None
    b_values: tuple[float, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def is_4d(self) -> bool:
        return self.array.ndim == 4

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` of one frame."""
        return tuple(self.array.shape[-3:])  # type: ignore[return-value]

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` of a 4D volume (or the volume itself when 3D, for ``i == 0``)."""
        if not self.is_4d:
            if i != 0:
                raise IndexError(f"a 3D volume has one frame, got index {i}")
            return self.array
        return self.array[i]

    def by_b_value(self) -> dict[float, np.ndarray]:
        """``{b: (z, y, x) array}`` for a DWI volume, the input of :func:`usher2.mri.adc.adc_map`."""
        if self.b_values is None:
            raise InputError(self.source or self.sequence, "a DWI volume with b-values", "no b-values")
        return {b: self.frame(i) for i, b in enumerate(self.b_values)}

    def geometry(self) -> dict[str, tuple]:
        """Grid of one frame: ``size`` (x, y, z), ``spacing``, ``origin``, ``direction``."""
        z, y, x = self.grid_shape
        return {"size": (x, y, z), "spacing": self.spacing, "origin": self.origin, "direction": self.direction}

    def same_grid(self, other: Volume, tol: float = _GEOMETRY_TOL) -> bool:
        """Whether both volumes have the same voxel grid (size exact; the rest within ``tol``)."""
        if self.grid_shape != other.grid_shape:
            return False
        return all(
            np.allclose(getattr(self, k), getattr(other, k), rtol=0, atol=tol)
            for k in ("spacing", "origin", "direction")
        )

    def to_sitk(self, frame: int = 0) -> sitk.Image:
        """One 3D frame as a SimpleITK image with this geometry."""
        img = sitk.GetImageFromArray(self.frame(frame))
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img


def _describe_geometry(v: Volume) -> str:
    g = v.geometry()
    r = lambda t: "(" + ", ".join(f"{float(a):.4g}" for a in t) + ")"  # noqa: E731
    return f"size {g['size']}, spacing {r(g['spacing'])}, origin {r(g['origin'])}, direction {r(g['direction'])}"


def _check_finite(arr: np.ndarray, where: str | Path) -> None:
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise InputError(
            where,
            "finite voxel values",
            f"{bad} NaN or infinite voxels of {arr.size}",
            fix="replace them (e.g. with 0) before reading",
        )


def _from_sitk(img: sitk.Image, where: str | Path) -> tuple[np.ndarray, tuple, tuple, tuple]:
    """``(array, spacing, origin, direction)`` of a 3D image, or of each frame of a 4D one."""
    dim = img.GetDimension()
    size = img.GetSize()
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(where, "a scalar volume", f"{img.GetNumberOfComponentsPerPixel()} components per voxel")
    if dim == 2 or (dim >= 3 and size[2] == 1):
        raise InputError(where, "a 3D volume (x, y, z)", f"a 2D image of size {size[:2]}", fix="give a 3D volume")
    if dim not in (3, 4):
        raise InputError(where, "a 3D or 4D volume", f"{dim} dimensions")
    arr = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
    spacing = tuple(float(s) for s in img.GetSpacing()[:3])
    origin = tuple(float(o) for o in img.GetOrigin()[:3])
    d = np.asarray(img.GetDirection(), float).reshape(dim, dim)[:3, :3]
    direction = tuple(float(c) for c in d.ravel())
    _check_finite(arr, where)
    return arr, spacing, origin, direction


def _is_volume_file(p: Path) -> bool:
    return p.name.lower().endswith(VOLUME_SUFFIXES)


def _is_dicom_file(p: Path) -> bool:
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    if p.suffix or not p.is_file():
        return False
    with p.open("rb") as fh:  # suffix-less DICOM (PACS exports): recognise by the preamble magic
        head = fh.read(132)
    return head[128:132] == b"DICM"


# ---------------------------------------------------------------------------------- DICOM headers


def _b_value(ds: Dataset) -> float | None:
    if "DiffusionBValue" in ds:
        return float(ds.DiffusionBValue)
    for tag in ((0x0019, 0x100C), (0x0043, 0x1039)):
        if tag in ds:
            raw = ds[tag].value
            if isinstance(raw, bytes):
                raw = raw.decode("ascii", "ignore").strip("\0 ").split("\\")[0]
            elif isinstance(raw, Sequence) and not isinstance(raw, str):
                raw = raw[0]
            try:
                b = float(raw)
            except (TypeError, ValueError):
                continue
            return b % 1e9 if tag[0] == 0x0043 else b  # GE adds 1e9 to flag the value
    return None


def _seconds(tm: Any) -> float | None:
    """DICOM TM (``HHMMSS.frac``) as seconds of the day."""
    s = str(tm).strip().replace(":", "")
    if len(s) < 2:
        return None
    try:
        hh, mm, ss = int(s[0:2]), int(s[2:4] or 0), float(s[4:] or 0)
    except ValueError:
        return None
    return hh * 3600 + mm * 60 + ss


@dataclass
class _Slice:
    path: Path
    position: float
    b: float | None
    temporal: int | None
    trigger: float | None
    acq: float | None


@dataclass
class _Series:
    uid: str
    description: str
    folder: str
    header: Dataset
    slices: list[_Slice] = field(default_factory=list)

    @property
    def is_adc(self) -> bool:
        return any("ADC" in str(t).upper() for t in (self.header.get("ImageType") or []))


def _scan_dicom(files: Sequence[Path], root: Path) -> dict[str, _Series]:
    series: dict[str, _Series] = {}
    for p in files:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises many types for a bad file; re-raised as one
            raise InputError(p, "a readable DICOM file", f"{type(exc).__name__}: {exc}") from exc
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise InputError(p, "an MR image slice with ImagePositionPatient/ImageOrientationPatient", "neither tag")
        uid = str(ds.get("SeriesInstanceUID", "")) or str(p.parent)
        if uid not in series:
            folder = str(p.parent.relative_to(root)) if p.parent != root else root.name
            series[uid] = _Series(uid, str(ds.get("SeriesDescription", "")), folder, ds)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        trig = ds.get("TriggerTime", None)
        temporal = ds.get("TemporalPositionIdentifier", None)
        acq = _seconds(ds.AcquisitionTime) if ds.get("AcquisitionTime") else None
        series[uid].slices.append(
            _Slice(
                p,
                float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)),
                _b_value(ds),
                int(temporal) if temporal not in (None, "") else None,
                float(trig) if trig not in (None, "") else None,
                acq,
            )
        )
    return series


@dataclass
class _Frame:
    image: sitk.Image
    b: float | None
    time: float | None  # seconds of the day, or TriggerTime seconds


def _read_series(s: _Series) -> list[_Frame]:
    """The frames of one series, each a 3D SimpleITK image."""
    n_pos = len({round(sl.position, 3) for sl in s.slices})
    groups: list[list[_Slice]] = [s.slices]
    if n_pos < len(s.slices):
        for key in ("b", "temporal", "trigger", "acq"):
            by: dict[Any, list[_Slice]] = defaultdict(list)
            for sl in s.slices:
                by[getattr(sl, key)].append(sl)
            sizes = {len({round(x.position, 3) for x in g}) == len(g) == n_pos for g in by.values()}
            if None not in by and len(by) > 1 and sizes == {True}:
                groups = [by[k] for k in sorted(by)]
                break
        else:
            raise InputError(
                s.folder,
                "one file per slice position, or frames told apart by b-value, TemporalPositionIdentifier, "
                "TriggerTime or AcquisitionTime",
                f"{len(s.slices)} files at {n_pos} slice positions in series {s.description!r}",
            )
    frames = []
    for g in groups:
        g = sorted(g, key=lambda sl: sl.position)
        if len(g) < 2:
            raise InputError(s.folder, "a 3D series (at least 2 slices)", f"1 slice in series {s.description!r}")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(sl.path) for sl in g])
        try:
            img = reader.Execute()
        except RuntimeError as exc:  # ITK reports unreadable pixel data as RuntimeError
            msg = str(exc).strip().splitlines()[-1]
            raise InputError(s.folder, f"readable pixel data in series {s.description!r}", msg) from exc
        acq = [sl.acq for sl in g if sl.acq is not None]
        time = min(acq) if acq else (g[0].trigger / 1000.0 if g[0].trigger is not None else None)
        frames.append(_Frame(img, None if s.is_adc else g[0].b, time))
    return frames


def _metadata(ds: Dataset) -> dict[str, Any]:
    meta: dict[str, Any] = {"format": "dicom"}
    for keyword in MRI_SAFE_TAGS:
        if keyword in ds:
            value = ds[keyword].value
            if value is not None and value != "":
                meta[keyword] = plain_value(value)
    return meta


def _volume_from_frames(frames: list[_Frame], name: str, source: str | Path, meta: dict[str, Any]) -> Volume:
    parts = [_from_sitk(f.image, source) for f in frames]
    first = parts[0]
    for p in parts[1:]:
        same = p[0].shape == first[0].shape and all(
            np.allclose(p[i], first[i], rtol=0, atol=_GEOMETRY_TOL) for i in (1, 2, 3)
        )
        if not same:
            raise InputError(source, f"frames of {name!r} on one voxel grid", "frames with different geometries")
    bs = [f.b for f in frames]
    ts = [f.time for f in frames]
    if len(frames) > 1:
        if all(b is not None for b in bs) and len(set(bs)) == len(bs):
            order = sorted(range(len(frames)), key=lambda i: bs[i])
        elif all(t is not None for t in ts):
            order = sorted(range(len(frames)), key=lambda i: ts[i])
        else:
            order = list(range(len(frames)))
        parts, bs, ts = [parts[i] for i in order], [bs[i] for i in order], [ts[i] for i in order]
        arr = np.stack([p[0] for p in parts])
    else:
        arr = first[0]
    b_values = tuple(float(b) for b in bs) if all(b is not None for b in bs) else None
    times = None
    if b_values is None and len(frames) > 1:
        if all(t is not None for t in ts):
            times = tuple(float(t - ts[0]) for t in ts)
        else:
            warnings.warn(f"{source}: {len(frames)} frames without acquisition times; times is None", stacklevel=3)
    return Volume(arr, first[1], first[2], first[3], name, times, b_values, meta, str(source))


def _series_list(series: Mapping[str, _Series]) -> str:
    return "; ".join(
        f"{s.description or '(no description)'} in {s.folder} ({len(s.slices)} files)" for s in series.values()
    )


# ---------------------------------------------------------------------------------- public API


def read_volume(
    path: str | Path,
    *,
    sequence: str | None = None,
    times: Sequence[float] | None = None,
    b_values: Sequence[float] | None = None,
) -> Volume:
    """Read one volume: a NIfTI/NRRD/MetaImage file or a folder holding one DICOM series.

    Args:
        path: A file with a suffix in :data:`VOLUME_SUFFIXES`, or a folder of DICOM files of one
            series (a 4D series gives a 4D volume, see the module docstring).
        sequence: Name to give the volume; default the SeriesDescription or the file stem.
        times: Seconds per frame for a 4D file (NIfTI/NRRD carry no reliable frame times).
        b_values: s/mm² per frame for a 4D DWI file.

    Returns:
        A :class:`Volume` with float32 voxels.

    Raises:
        InputError: Missing path, unknown format, a 2D image, NaN voxels, a folder with no DICOM
            files or with several series (the message lists them), frames that do not match
            ``times``/``b_values``.

    Example:
        >>> import tempfile, SimpleITK as sitk
        >>> f = Path(tempfile.mkdtemp()) / "t2.nii.gz"
        >>> sitk.WriteImage(sitk.Image(4, 3, 2, sitk.sitkFloat32), str(f))
        >>> v = read_volume(f)
        >>> v.sequence, v.shape
        ('t2', (2, 3, 4))
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "an existing file or folder", "nothing at this path")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and _is_dicom_file(f))
        if not files:
            raise InputError(p, "a folder of DICOM files (.dcm)", "no DICOM files", fix="or give a NIfTI/NRRD file")
        series = _scan_dicom(files, p)
        if len(series) > 1:
            raise InputError(
                p,
                "one DICOM series",
                f"{len(series)} series: {_series_list(series)}",
                fix="give one series' folder, or use read_study to split them",
            )
        (s,) = series.values()
        vol = _volume_from_frames(_read_series(s), sequence or s.description or p.name, p, _metadata(s.header))
    elif _is_volume_file(p):
        try:
            img = sitk.ReadImage(str(p))
        except RuntimeError as exc:
            raise InputError(p, "a readable NIfTI/NRRD/MetaImage volume", str(exc).strip().splitlines()[-1]) from exc
        arr, spacing, origin, direction = _from_sitk(img, p)
        name = sequence or re.sub(r"\.(nii\.gz|nii|nrrd|nhdr|mha|mhd)$", "", p.name, flags=re.I)
        fmt = "nifti" if ".nii" in p.name.lower() else p.suffix.lower().lstrip(".")
        vol = Volume(arr, spacing, origin, direction, name, None, None, {"format": fmt}, str(p))
    else:
        raise InputError(p, f"a volume file ({', '.join(VOLUME_SUFFIXES)}) or a DICOM folder", f"suffix {p.suffix!r}")
    n_frames = vol.array.shape[0] if vol.is_4d else 1
    for label, values in (("times", times), ("b_values", b_values)):
        if values is not None:
            if len(values) != n_frames:
                raise InputError(p, f"{n_frames} {label} (one per frame)", f"{len(values)}")
            vol = replace(vol, **{label: tuple(float(v) for v in values)})
    return vol


def _load_mapping(mapping: Mapping[str, str | Sequence[str]] | str | Path) -> dict[str, list[str]]:
    if isinstance(mapping, str | Path):
        mapping = read_mapping(mapping, "a YAML mapping sequence -> pattern")
    out: dict[str, list[str]] = {}
    for name, pat in mapping.items():
        pats = [pat] if isinstance(pat, str) else list(pat)
        if not pats or not all(isinstance(x, str) and x for x in pats):
            raise InputError("mapping", f"a pattern string (or list of them) for {name!r}", repr(pat))
        out[str(name)] = pats
    return out


def _matches(pattern: str, texts: Sequence[str]) -> bool:
    if pattern.startswith("re:"):
        rx = re.compile(pattern[3:], re.IGNORECASE)
        return any(rx.search(t) for t in texts)
    return any(fnmatch.fnmatch(t.lower(), pattern.lower()) for t in texts)


def read_study(
    folder: str | Path, mapping: Mapping[str, str | Sequence[str]] | str | Path | None = None
) -> dict[str, Volume]:
    """Read every sequence of a study folder: ``{sequence name: Volume}``.

    DICOM files anywhere under ``folder`` are split by SeriesInstanceUID; volume files
    (NIfTI/NRRD) are one sequence each. Without a mapping a sequence is named by its
    SeriesDescription (or folder name, or file stem for volume files); series sharing a
    description are joined as below.

    With a mapping ``{name: pattern}`` only mapped sequences are returned. A pattern is a glob
    (case-insensitive) or, prefixed ``re:``, a regular expression (``re.search``,
    case-insensitive); it is matched against the SeriesDescription and the folder name (for
    volume files: the file name). Several series under one name are joined into a 4D volume:
    by b-value when each has a distinct one (DWI), else by acquisition time (DCE).

    Args:
        folder: The study folder.
        mapping: A dict or a YAML file path, ``{sequence name: pattern or [patterns]}``.

    Returns:
        ``{sequence name: Volume}`` in name order.

    Raises:
        InputError: No readable series; a mapped name that matches nothing or a series matched by
            two names (each message lists the series found); series under one name on different
            grids.

    Example:
        >>> study = read_study("ProstateX-0000", {"t2": "*t2*", "adc": "*ADC*"})  # doctest: +SKIP
        >>> sorted(study)  # doctest: +SKIP
        ['adc', 't2']
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(root, "a study folder", "not a folder" if root.exists() else "nothing at this path")
    files = sorted(f for f in root.rglob("*") if f.is_file())
    series = _scan_dicom([f for f in files if _is_dicom_file(f)], root)
    vol_files = [f for f in files if _is_volume_file(f)]
    if not series and not vol_files:
        raise InputError(root, "DICOM series or NIfTI/NRRD volumes", "none")
    # (name-to-match texts, loader) per item
    items: list[tuple[list[str], str, Any]] = []
    for s in series.values():
        items.append(([s.description, s.folder, Path(s.folder).name], s.description or Path(s.folder).name, s))
    for f in vol_files:
        stem = re.sub(r"\.(nii\.gz|nii|nrrd|nhdr|mha|mhd)$", "", f.name, flags=re.I)
        items.append(([f.name, stem], stem, f))
    found = "; ".join(
        [_series_list(series)] * bool(series)
        + [", ".join(str(f.relative_to(root)) for f in vol_files)] * bool(vol_files)
    )
    groups: dict[str, list[Any]] = defaultdict(list)
    if mapping is None:
        for _, default, obj in items:
            groups[default].append(obj)
    else:
        pats = _load_mapping(mapping)
        owner: dict[int, str] = {}
        for name, plist in pats.items():
            hits = [i for i, (texts, _, _) in enumerate(items) if any(_matches(p, texts) for p in plist)]
            if not hits:
                raise InputError(root, f"a series matching {plist} for sequence {name!r}", f"none among: {found}")
            for i in hits:
                if i in owner:
                    raise InputError(
                        root,
                        "each series matched by one sequence pattern",
                        f"{items[i][1]!r} matched by both {owner[i]!r} and {name!r}",
                        fix="make the patterns more specific",
                    )
                owner[i] = name
                groups[name].append(items[i][2])
    out: dict[str, Volume] = {}
    for name in sorted(groups):
        objs = groups[name]
        if len(objs) == 1 and isinstance(objs[0], Path):
            out[name] = read_volume(objs[0], sequence=name)
            continue
        if any(isinstance(o, Path) for o in objs):
            raise InputError(root, f"one volume file, or DICOM series only, for {name!r}", "a mix of both")
        frames = [fr for s in objs for fr in _read_series(s)]
        where = objs[0].folder if len(objs) == 1 else root
        out[name] = _volume_from_frames(
            frames, name, root / where if len(objs) == 1 else root, _metadata(objs[0].header)
        )
    return out


def read_mask(path: str | Path, reference: Volume | Mapping[str, Volume]) -> Volume:
    """Read a lesion mask and check it lies on the grid of one of the sequences.

    Args:
        path: A mask volume file or DICOM series folder (see :func:`read_volume`).
        reference: One volume, or ``{name: Volume}`` as returned by :func:`read_study`; the mask
            must share the voxel grid of (at least) one of them.

    Returns:
        A 3D :class:`Volume` named ``"mask"`` with integer labels (float32 array; 0 is
        background) and ``metadata["space"]``: the name of the first sequence whose grid it shares.

    Raises:
        InputError: A 4D mask, non-integer or negative values, no foreground voxel, or a grid
            that matches no sequence (the message gives the mask's and each sequence's geometry).

    Example:
        >>> mask = read_mask("lesion.nrrd", read_study("case"))  # doctest: +SKIP
        >>> mask.metadata["space"]  # doctest: +SKIP
        't2'
    """
    p = Path(path)
    mask = read_volume(p, sequence="mask")
    if mask.is_4d:
        raise InputError(p, "a 3D label volume", f"a 4D volume of shape {mask.shape}")
    a = mask.array
    if np.any(a < 0) or np.any(a != np.round(a)):
        raise InputError(
            p, "a label volume (non-negative integers)", f"values in [{a.min():g}, {a.max():g}], not all integers"
        )
    n_fg = int(np.count_nonzero(a))
    if n_fg == 0:
        raise InputError(p, "a mask with foreground voxels", "0 foreground voxels")
    refs = {reference.sequence or "reference": reference} if isinstance(reference, Volume) else dict(reference)
    if not refs:
        raise InputError(p, "at least one reference sequence", "none")
    for name, ref in refs.items():
        if mask.same_grid(ref):
            return Volume(
                a, ref.spacing, ref.origin, ref.direction, "mask", None, None,
                {**mask.metadata, "space": name, "foreground_voxels": n_fg}, str(p),
            )  # fmt: skip
    described = "; ".join(f"{n}: {_describe_geometry(r)}" for n, r in refs.items())
    raise InputError(
        p,
        f"a mask on the grid of one sequence ({described})",
        f"mask geometry {_describe_geometry(mask)}",
        fix="resample the mask onto one sequence with nearest-neighbour interpolation",
    )
