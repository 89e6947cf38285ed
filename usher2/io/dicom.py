"""DICOM ultrasound frames, single- and multi-frame, de-identified on the way in.

Only the tags in :data:`SAFE_TAGS` are copied into ``Frame.metadata``; patient identifiers
(PatientName, PatientID, PatientBirthDate, AccessionNumber, InstitutionName, ...) are never
read, so they cannot reach metadata, manifests, error messages or logs.

Grey levels: the stored values are divided by ``2**BitsStored - 1`` (255 for 8-bit, 65535 for
16-bit); MONOCHROME1 is inverted; RGB, YBR_FULL and YBR_FULL_422 are converted to RGB by pydicom
and then to BT.601 grey. Spacing comes from SequenceOfUltrasoundRegions (PhysicalDeltaY/X in cm
when PhysicalUnitsY/XDirection is 3, turned into mm) and otherwise from PixelSpacing.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.pixels
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from usher2.io.errors import InputError
from usher2.io.pixels import check_file, make_frame, rgb_to_grey
from usher2.types import Frame

SAFE_TAGS: tuple[str, ...] = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "SOPClassUID",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "PlanarConfiguration",
    "FrameTime",
    "CineRate",
    "RecommendedDisplayFrameRate",
    "ImageType",
    "BodyPartExamined",
    "Laterality",
    "ImageLaterality",
    "TransducerData",
    "TransducerType",
)
"""The allow-list of DICOM keywords copied into ``Frame.metadata``. Anything else is dropped:
an allow-list (not a block-list) so that a private or unexpected tag never leaks PHI."""

PHI_TAGS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "OtherPatientNames",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)
"""Examples of identifiers that must never leave this module (documentation and tests; the
allow-list above is what enforces it)."""

DICOM_SUFFIXES = (".dcm", ".dicom")

_MONO = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422")
_CM = 3  # PhysicalUnitsX/YDirection code for centimetres (DICOM PS3.3 C.8.5.5.1.15)


def _plain(value: Any) -> Any:
    """A DICOM value as plain Python (str, int, float or a list of them) for metadata."""
    if isinstance(value, MultiValue | list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    for base in (int, float):  # IS and DSfloat subclass these; keep the number, drop the class
        if isinstance(value, base) and not isinstance(value, bool):
            return base(value)
    return str(value)


def safe_metadata(ds: Dataset) -> dict[str, Any]:
    """The allow-listed, de-identified metadata of a DICOM dataset.

    Args:
        ds: A dataset read by pydicom.

    Returns:
        ``{keyword: value}`` for the :data:`SAFE_TAGS` present, plus ``TransferSyntaxUID``.

    Example:
        >>> from pydicom.dataset import Dataset
        >>> ds = Dataset(); ds.Modality = "US"; ds.PatientName = "Doe^Jane"
        >>> safe_metadata(ds)
        {'Modality': 'US'}
    """
    meta: dict[str, Any] = {}
    for keyword in SAFE_TAGS:
        if keyword in ds:
            value = ds[keyword].value
            if value is not None and value != "":
                meta[keyword] = _plain(value)
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and "TransferSyntaxUID" in file_meta:
        meta["TransferSyntaxUID"] = str(file_meta.TransferSyntaxUID)
    return meta


def dicom_spacing(ds: Dataset, *, source: str | Path = "dataset") -> tuple[tuple[float, float] | None, str | None]:
    """Pixel spacing ``(row_mm, col_mm)`` and where it came from.

    SequenceOfUltrasoundRegions wins when a region gives both deltas in cm (units code 3); the
    largest such region is used. Otherwise PixelSpacing (already mm). A non-positive or
    non-finite value is ignored with a warning.

    Returns:
        ``(spacing, source)`` with source ``"ultrasound_regions"``, ``"pixel_spacing"`` or None.

    Example:
        >>> from pydicom.dataset import Dataset
        >>> ds = Dataset(); ds.PixelSpacing = [0.2, 0.1]
        >>> dicom_spacing(ds)
        ((0.2, 0.1), 'pixel_spacing')
    """
    best: tuple[float, tuple[float, float]] | None = None
    for region in ds.get("SequenceOfUltrasoundRegions", None) or []:
        if region.get("PhysicalUnitsXDirection") != _CM or region.get("PhysicalUnitsYDirection") != _CM:
            continue
        dx, dy = region.get("PhysicalDeltaX"), region.get("PhysicalDeltaY")
        if dx is None or dy is None:
            continue
        x0, y0 = region.get("RegionLocationMinX0", 0) or 0, region.get("RegionLocationMinY0", 0) or 0
        x1, y1 = region.get("RegionLocationMaxX1", 0) or 0, region.get("RegionLocationMaxY1", 0) or 0
        area = float(max(x1 - x0, 0) * max(y1 - y0, 0))
        spacing = (float(dy) * 10.0, float(dx) * 10.0)
        if best is None or area > best[0]:
            best = (area, spacing)
    candidates: list[tuple[tuple[float, float], str]] = []
    if best is not None:
        candidates.append((best[1], "ultrasound_regions"))
    ps = ds.get("PixelSpacing", None)
    if ps is not None and len(ps) == 2:
        candidates.append(((float(ps[0]), float(ps[1])), "pixel_spacing"))
    for spacing, origin in candidates:
        if all(np.isfinite(s) and s > 0 for s in spacing):
            return spacing, origin
        warnings.warn(
            f"{source}: ignoring invalid pixel spacing {spacing} mm from {origin}; spacing is None",
            stacklevel=3,
        )
    return None, None


def read_dataset(path: str | Path) -> Dataset:
    """Read a DICOM file and check that its pixel data can be decoded here.

    Raises:
        InputError: Corrupt file, no pixel data, an unsupported photometric interpretation, or a
            compressed transfer syntax with no installed decoder (the error names the syntax).

    Example:
        >>> read_dataset("missing.dcm")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        usher2.io.errors.InputError: missing.dcm: expected an existing DICOM file, got no such file
    """
    p = check_file(path, what="DICOM file")
    try:
        ds = pydicom.dcmread(p, force=p.suffix.lower() in DICOM_SUFFIXES)
    except Exception as exc:  # pydicom raises many types for bad files; re-raised as one
        raise InputError(p, "a readable DICOM file", f"a corrupt or non-DICOM file ({type(exc).__name__})") from exc
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputError(
            p,
            "a DICOM image with pixel data (7FE0,0010)",
            "a dataset without pixel data (a non-image object such as a report, or a truncated file)",
        )
    if "PixelData" not in ds:
        raise InputError(p, "integer pixel data (7FE0,0010)", "float pixel data, which ultrasound never uses")
    for keyword in ("Rows", "Columns", "BitsStored", "PhotometricInterpretation"):
        if keyword not in ds:
            raise InputError(p, f"the DICOM attribute {keyword}", "a dataset without it")
    pi = str(ds.PhotometricInterpretation).strip()
    if pi not in _MONO + _COLOUR:
        raise InputError(
            p,
            f"a photometric interpretation in {', '.join(_MONO + _COLOUR)}",
            pi,
            fix="convert the file to MONOCHROME2 or RGB",
        )
    file_meta = getattr(ds, "file_meta", None)
    has_ts = file_meta is not None and "TransferSyntaxUID" in file_meta
    tsuid = UID(str(file_meta.TransferSyntaxUID)) if has_ts else None
    if tsuid is not None and tsuid.is_compressed:
        try:
            available = pydicom.pixels.get_decoder(tsuid).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise InputError(
                p,
                "a transfer syntax this installation can decode",
                f"{tsuid.name} ({tsuid}), for which no decoder is installed",
                fix="install pylibjpeg and its plugins (or gdcm), or decompress with `gdcmconv -w`",
            )
    return ds


def n_frames(ds: Dataset) -> int:
    """Number of frames in a dataset (1 when NumberOfFrames is absent)."""
    return int(ds.get("NumberOfFrames", 1) or 1)


def _to_grey(arr: np.ndarray, ds: Dataset, source: Path) -> np.ndarray:
    """One decoded frame (``(H, W)`` or ``(H, W, 3)``) as grey in [0, 1]."""
    bits = int(ds.BitsStored)
    top = float(2**bits - 1)
    pi = str(ds.PhotometricInterpretation).strip()
    values = arr.astype(np.float64)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        values = values + 2 ** (bits - 1)  # signed storage: shift to 0..2**bits - 1
    if pi in _MONO:
        if values.ndim != 2:
            raise InputError(source, f"one sample per pixel for {pi}", f"an array of shape {arr.shape}")
        grey = values / top
        return 1.0 - grey if pi == "MONOCHROME1" else grey
    if values.ndim != 3 or values.shape[-1] != 3:
        raise InputError(source, f"three samples per pixel for {pi}", f"an array of shape {arr.shape}")
    return rgb_to_grey(values) / top


def _frame_info(ds: Dataset, source: Path) -> tuple[tuple[float, float] | None, dict[str, Any]]:
    """Spacing and de-identified metadata, shared by every frame of a dataset."""
    spacing, origin = dicom_spacing(ds, source=source)
    return spacing, {**safe_metadata(ds), "format": "dicom", "spacing_source": origin}


def _frame(ds: Dataset, i: int, source: Path, spacing: tuple[float, float] | None, meta: dict[str, Any]) -> Frame:
    try:
        arr = pydicom.pixels.pixel_array(ds, index=i)
    except Exception as exc:  # decoder errors come in many types; re-raised as one, chained
        raise InputError(
            source, f"decodable pixel data for frame {i}", f"a decoding failure ({type(exc).__name__}: {exc})"
        ) from exc
    return make_frame(_to_grey(arr, ds, source), source=source, spacing=spacing, index=i, metadata=meta)


def iter_dicom_frames(path: str | Path) -> Iterator[Frame]:
    """Every frame of a DICOM file, in order.

    The file is opened and checked before the iterator is returned, so a bad file raises here
    and not at the first ``next``.

    Args:
        path: A DICOM file (with or without the 128-byte preamble when named ``*.dcm``).

    Returns:
        An iterator of ``Frame`` with ``(H, W)`` float32 pixels and ``index`` 0..N-1.

    Raises:
        InputError: See :func:`read_dataset`.

    Example:
        >>> frames = list(iter_dicom_frames("cine.dcm"))  # doctest: +SKIP
    """
    source = Path(path)
    ds = read_dataset(source)
    spacing, meta = _frame_info(ds, source)
    count = n_frames(ds)

    def frames() -> Iterator[Frame]:
        for i in range(count):
            yield _frame(ds, i, source, spacing, meta)

    return frames()


def read_dicom_frame(path: str | Path, index: int = 0) -> Frame:
    """One frame of a DICOM file.

    Args:
        path: A DICOM file.
        index: Frame number, 0..NumberOfFrames-1.

    Raises:
        InputError: See :func:`read_dataset`; also an index out of range.

    Example:
        >>> read_dicom_frame("us.dcm").shape  # doctest: +SKIP
        (480, 640)
    """
    source = Path(path)
    ds = read_dataset(source)
    count = n_frames(ds)
    if not 0 <= index < count:
        raise InputError(source, f"a frame index in 0..{count - 1}", str(index))
    spacing, meta = _frame_info(ds, source)
    return _frame(ds, index, source, spacing, meta)
