"""DICOM ultrasound frames, single- and multi-frame, de-identified on the way in.

Only the tags in :data:`SAFE_TAGS` are copied into ``Frame.metadata``; patient identifiers
(PatientName, PatientID, PatientBirthDate, AccessionNumber, InstitutionName, ...) are never
read, so they cannot reach metadata, manifests, error messages or logs.

Grey levels: the stored values are divided by ``2**BitsStored - 1`` (255 for 8-bit, 65535 for
16-bit); MONOCHROME1 is inverted; RGB, YBR_FULL and YBR_FULL_422 are converted to RGB by pydicom
and then to BT.601 grey. Spacing comes from SequenceOfUltrasoundRegions (PhysicalDeltaY/X in cm
when PhysicalUnitsY/XDirection is 3, turned into mm) and otherwise from PixelSpacing.

Size: the header (everything before the pixel data) is read first, and Rows x Columns (and, for
native and deflated pixel data, which is held decoded in memory, x SamplesPerPixel x
NumberOfFrames) is checked against :class:`~usher2.io.limits.PixelLimits` before the pixel data
is read. A deflated file is inflated as a stream: only its header, and then a count of the
remaining bytes, before pydicom reads it whole. A compressed (JPEG, JPEG 2000) frame's own
dimensions are checked before it is decoded.

Errors never echo a value read from the file (a PhotometricInterpretation or NumberOfFrames can
hold anything, a patient name included): they name the tag and what was expected. Sizes read as
numbers are reported. pydicom's own value validation on reading would warn and log such values
verbatim (``Invalid value for VR CS: '<the value>'``), so importing this module turns it off for
the process (``pydicom.config.settings.reading_validation_mode = IGNORE``): usher2 reads only the
allow-listed tags and checks each of them itself.
"""

from __future__ import annotations

import io
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.encaps
import pydicom.filereader
import pydicom.pixels
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from usher2.io.errors import InputError
from usher2.io.limits import DecodedSizeError, PixelLimits, resolve_limits
from usher2.io.pixels import check_file, make_frame, rgb_to_grey
from usher2.types import Frame

# No value read from a file may reach a log or a warning (see the module docstring).
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

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
_OTHER_PI = ("PALETTE COLOR", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "HSV", "ARGB", "CMYK", "XYB")
_CM = 3  # PhysicalUnitsX/YDirection code for centimetres (DICOM PS3.3 C.8.5.5.1.15)
_PIXEL_TAGS = {0x7FE00010: "PixelData", 0x7FE00009: "DoubleFloatPixelData", 0x7FE00008: "FloatPixelData"}
_NOT_SHOWN = "(not shown: a DICOM value can hold patient data)"

MAX_DEFLATED_HEADER = 32 * 2**20
"""Most bytes a deflated dataset may inflate to before its pixel data (ultrasound headers take a
few KB; the cap keeps a header made of one huge element from becoming the bomb instead)."""

_INFLATE_STEP = 1 << 20  # output bytes per zlib call: a 64 KB zero block must not inflate to 64 MB at once


def plain_value(value: Any) -> Any:
    """A DICOM value as plain Python (str, int, float or a list of them) for metadata."""
    if isinstance(value, MultiValue | list | tuple):
        return [plain_value(v) for v in value]
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
                meta[keyword] = plain_value(value)
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


class _Inflater(io.RawIOBase):
    """A seekable, read-only view of a raw deflate stream that inflates only as far as it is read.

    pydicom inflates a deflated dataset whole before parsing it; reading the header through this
    view instead costs only the header, and at most ``cap`` bytes.
    """

    def __init__(self, compressed: bytes, *, cap: int, source: Path) -> None:
        super().__init__()
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._pending = compressed
        self._buf = bytearray()
        self._pos = 0
        self._cap = cap
        self._source = source

    def _step(self, max_length: int) -> bytes:
        """Up to ``max_length`` more inflated bytes (b"" at the end of the stream)."""
        if self._z.eof:
            return b""
        try:
            if self._pending:
                out = self._z.decompress(self._pending, max_length)
                self._pending = self._z.unconsumed_tail
                return out
            return self._z.flush()
        except zlib.error as exc:
            raise InputError(self._source, "a complete deflate stream", "a corrupt one", fix=_EXPORT_AGAIN) from exc

    def _fill(self, end: int) -> None:
        while len(self._buf) < end:
            if len(self._buf) >= self._cap:
                raise DecodedSizeError(
                    self._source,
                    f"a deflated dataset of at most {self._cap:,} bytes before its pixel data",
                    "more than that",
                    fix="decompress it (e.g. `gdcmconv --raw`) and check what it holds",
                )
            out = self._step(_INFLATE_STEP)
            if not out and (self._z.eof or not self._pending):
                return
            self._buf += out

    def read(self, size: int | None = -1) -> bytes:
        end = self._cap + 1 if size is None or size < 0 else self._pos + size
        self._fill(end)
        with memoryview(self._buf) as view:  # one copy, not a bytearray slice and then bytes
            out = bytes(view[self._pos : end])
        self._pos += len(out)
        return out

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos}.get(whence)
        if base is None:  # pydicom never seeks from the end; that would inflate everything
            raise io.UnsupportedOperation("seek from the end of a deflate stream")
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def remaining(self, at_most: int) -> int:
        """Count the inflated bytes after the current position, stopping once over ``at_most``."""
        n = max(len(self._buf) - self._pos, 0)
        self._buf = bytearray()  # the header has been parsed; what follows is only counted
        while n <= at_most:
            out = self._step(_INFLATE_STEP)
            if not out and (self._z.eof or not self._pending):
                break
            n += len(out)
        return n


_EXPORT_AGAIN = "export or copy the file again"


def _read_header(p: Path, force: bool) -> tuple[Dataset, str | None, _Inflater | None]:
    """The dataset up to its pixel data, the pixel data element found, and (deflated) the open stream."""
    found: list[str] = []

    def at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
        name = _PIXEL_TAGS.get(int(tag))
        if name is not None and not found:
            found.append(name)
        return name is not None

    with p.open("rb") as fh:
        pydicom.filereader.read_preamble(fh, force)
        meta = FileMetaDataset(
            pydicom.filereader.read_dataset(fh, False, True, stop_when=lambda tag, vr, n: tag >> 16 != 2)
        )
        if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            fh.seek(0)
            return pydicom.filereader.read_partial(fh, stop_when=at_pixels, force=force), _first(found), None
        stream = _Inflater(fh.read(), cap=MAX_DEFLATED_HEADER, source=p)
    header = pydicom.filereader.read_dataset(stream, False, True, stop_when=at_pixels)
    header.file_meta = meta
    return header, _first(found), stream


def _first(found: list[str]) -> str | None:
    return found[0] if found else None


def _count(ds: Dataset, keyword: str, source: Path, *, default: int | None = None, least: int = 0) -> int:
    """An integer attribute (Rows, NumberOfFrames, ...), without echoing a value that is not one."""
    value = ds.get(keyword, None)
    if value is None or value == "":
        if default is None:
            raise InputError(source, f"the DICOM attribute {keyword}", "a dataset without it")
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = None
    if n is None or n < least or (isinstance(value, float) and n != value):
        raise InputError(
            source, f"the DICOM attribute {keyword} as a whole number >= {least}", f"another value {_NOT_SHOWN}"
        )
    return n


def _transfer_syntax(ds: Dataset, source: Path) -> UID | None:
    """The dataset's transfer syntax, checked to be a known one this installation can decode."""
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is None or "TransferSyntaxUID" not in file_meta:
        return None
    tsuid = UID(str(file_meta.TransferSyntaxUID))
    try:
        known = tsuid.is_transfer_syntax
    except ValueError:
        known = False
    if not known:
        raise InputError(
            source,
            "a standard transfer syntax in (0002,0010) TransferSyntaxUID",
            f"an unknown UID {_NOT_SHOWN}",
            fix="convert the file to Explicit VR Little Endian, e.g. `gdcmconv --raw`",
        )
    if tsuid.is_compressed:
        try:
            available = pydicom.pixels.get_decoder(tsuid).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise InputError(
                source,
                "a transfer syntax this installation can decode",
                f"{tsuid.name} ({tsuid}), for which no decoder is installed",
                fix="install pylibjpeg and its plugins (or gdcm), or decompress with `gdcmconv -w`",
            )
    return tsuid


def _check_header(ds: Dataset, pixels: str | None, source: Path, limits: PixelLimits) -> None:
    """Everything :func:`read_dataset` checks before the pixel data is read."""
    if pixels is None:
        raise InputError(
            source,
            "a DICOM image with pixel data (7FE0,0010)",
            "a dataset without pixel data (a non-image object such as a report, or a truncated file)",
        )
    if pixels != "PixelData":
        raise InputError(source, "integer pixel data (7FE0,0010)", "float pixel data, which ultrasound never uses")
    if "PhotometricInterpretation" not in ds:
        raise InputError(source, "the DICOM attribute PhotometricInterpretation", "a dataset without it")
    pi = str(ds.PhotometricInterpretation).strip()
    if pi not in _MONO + _COLOUR:
        # a defined term of the standard is named; anything else may be free text, so it is not
        got = f"{pi}, which this reader does not convert" if pi in _OTHER_PI else f"another value {_NOT_SHOWN}"
        raise InputError(
            source,
            f"a photometric interpretation in {', '.join(_MONO + _COLOUR)} (PhotometricInterpretation, (0028,0004))",
            got,
            fix="convert the file to MONOCHROME2 or RGB",
        )
    rows = _count(ds, "Rows", source, least=1)
    cols = _count(ds, "Columns", source, least=1)
    _count(ds, "BitsStored", source, least=1)
    samples = _count(ds, "SamplesPerPixel", source, default=1, least=1)
    frames = n_frames(ds, source=source)
    tsuid = _transfer_syntax(ds, source)
    limits.check_frame(source, rows, cols, what="a DICOM frame")
    if tsuid is None or not tsuid.is_compressed:  # native pixel data is held decoded, every frame at once
        limits.check_file(source, rows, cols, samples=samples, frames=frames)


def _native_bytes(ds: Dataset, source: Path) -> int:
    """Bytes of native pixel data the header declares (even, as DICOM values are)."""
    rows, cols = _count(ds, "Rows", source), _count(ds, "Columns", source)
    samples = _count(ds, "SamplesPerPixel", source, default=1, least=1)
    allocated = _count(ds, "BitsAllocated", source, default=8, least=1)
    bits = rows * cols * samples * n_frames(ds, source=source) * allocated
    n = (bits + 7) // 8
    return n + n % 2


def read_dataset(path: str | Path, *, limits: PixelLimits | None = None) -> Dataset:
    """Read a DICOM file and check that its pixel data can be decoded here, within the size limit.

    The header is read and checked first; the pixel data only once the declared size is within
    ``limits`` (see the module docstring).

    Args:
        path: A DICOM file.
        limits: The decoded-size limit; None: :func:`~usher2.io.limits.default_limits`.

    Raises:
        InputError: Corrupt file, no pixel data, an unsupported photometric interpretation, or a
            compressed transfer syntax with no installed decoder (the error names the syntax).
        DecodedSizeError: Rows x Columns, or the whole native pixel data, over the limit; a
            deflated file that inflates to more than its header declares.

    Example:
        >>> read_dataset("missing.dcm")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        usher2.io.errors.InputError: missing.dcm: expected an existing DICOM file, got no such file
    """
    p = check_file(path, what="DICOM file")
    lim = resolve_limits(limits)
    force = p.suffix.lower() in DICOM_SUFFIXES
    try:
        header, pixels, stream = _read_header(p, force)
    except InputError:
        raise
    except Exception as exc:  # pydicom raises many types for bad files; re-raised as one
        raise InputError(p, "a readable DICOM file", f"a corrupt or non-DICOM file ({type(exc).__name__})") from exc
    _check_header(header, pixels, p, lim)
    if stream is not None:
        expected = _native_bytes(header, p)
        allowed = expected + 12 + 2**20  # the element's own header, and room for trailing padding
        if stream.remaining(allowed) > allowed:
            raise DecodedSizeError(
                p,
                f"deflated pixel data of the {expected:,} bytes its header declares (Rows x Columns x "
                "SamplesPerPixel x NumberOfFrames x BitsAllocated / 8)",
                f"more than {allowed:,} bytes after inflating",
                fix="the file is damaged or crafted; export it again",
            )
    try:
        return pydicom.dcmread(p, force=force)
    except Exception as exc:  # pydicom raises many types for bad files; re-raised as one
        raise InputError(p, "a readable DICOM file", f"a corrupt or non-DICOM file ({type(exc).__name__})") from exc


def n_frames(ds: Dataset, *, source: str | Path = "dataset") -> int:
    """Number of frames in a dataset (1 when NumberOfFrames is absent or 0).

    Raises:
        InputError: NumberOfFrames is not a whole number (its value is not shown).

    Example:
        >>> from pydicom.dataset import Dataset
        >>> ds = Dataset(); ds.NumberOfFrames = 12
        >>> n_frames(ds)
        12
    """
    return max(_count(ds, "NumberOfFrames", Path(source), default=1), 1)


def _to_grey(arr: np.ndarray, ds: Dataset, source: Path) -> np.ndarray:
    """One decoded frame (``(H, W)`` or ``(H, W, 3)``) as float32 grey in [0, 1].

    Integer levels (at most 16 bits) are exact in float32, and one float32 division of them equals
    the float64 quotient rounded to float32, so no float64 copy of the frame is made.
    """
    bits = _count(ds, "BitsStored", source, least=1)
    top = float(2**bits - 1)
    pi = str(ds.PhotometricInterpretation).strip()
    values = arr
    if _count(ds, "PixelRepresentation", source, default=0) == 1:
        values = arr.astype(np.int32) + 2 ** (bits - 1)  # signed storage: shift to 0..2**bits - 1
    if pi in _MONO:
        if values.ndim != 2:
            raise InputError(source, f"one sample per pixel for {pi}", f"an array of shape {arr.shape}")
        if pi == "MONOCHROME1":
            values = np.subtract(top, values, dtype=np.float32)
        return np.divide(values, top, dtype=np.float32)
    if values.ndim != 3 or values.shape[-1] != 3:
        raise InputError(source, f"three samples per pixel for {pi}", f"an array of shape {arr.shape}")
    return rgb_to_grey(values, scale=top)


def _check_compressed_frame(ds: Dataset, i: int, count: int, source: Path, limits: PixelLimits) -> None:
    """Check a JPEG / JPEG 2000 frame's own dimensions before it is decoded.

    Rows x Columns was checked already, but the decoder decodes the codestream's dimensions,
    which a crafted file can set far larger. Codestreams Pillow cannot identify (JPEG-LS, RLE...)
    are left to their decoder, which allocates Rows x Columns.
    """
    try:
        data = pydicom.encaps.get_frame(ds.PixelData, i, number_of_frames=count)
    except Exception:  # a broken encapsulation is reported by the decoder itself
        return
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG", "JPEG2000")) as im:
            width, height = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodedSizeError(
            source, f"a compressed frame {i} within Pillow's decompression-bomb guard", f"a larger one ({exc})"
        ) from exc
    except Exception:  # not a codestream Pillow identifies
        return
    limits.check_frame(source, height, width, what=f"a compressed DICOM frame ({i})")


def _frame_info(ds: Dataset, source: Path) -> tuple[tuple[float, float] | None, dict[str, Any]]:
    """Spacing and de-identified metadata, shared by every frame of a dataset."""
    spacing, origin = dicom_spacing(ds, source=source)
    return spacing, {**safe_metadata(ds), "format": "dicom", "spacing_source": origin}


def _frame(
    ds: Dataset,
    i: int,
    source: Path,
    spacing: tuple[float, float] | None,
    meta: dict[str, Any],
    limits: PixelLimits,
) -> Frame:
    tsuid = _transfer_syntax(ds, source)
    if tsuid is not None and tsuid.is_compressed:
        _check_compressed_frame(ds, i, n_frames(ds, source=source), source, limits)
    try:
        arr = pydicom.pixels.pixel_array(ds, index=i)
    except Exception as exc:  # decoder errors come in many types; re-raised as one, chained
        raise InputError(
            source, f"decodable pixel data for frame {i}", f"a decoding failure ({type(exc).__name__}: {exc})"
        ) from exc
    grey = _to_grey(arr, ds, source)
    return make_frame(grey, source=source, spacing=spacing, index=i, metadata=meta, copy=False)


def iter_dicom_frames(path: str | Path, *, limits: PixelLimits | None = None) -> Iterator[Frame]:
    """Every frame of a DICOM file, in order.

    The file is opened and checked before the iterator is returned, so a bad file raises here
    and not at the first ``next``.

    Args:
        path: A DICOM file (with or without the 128-byte preamble when named ``*.dcm``).
        limits: The decoded-size limit; None: :func:`~usher2.io.limits.default_limits`.

    Returns:
        An iterator of ``Frame`` with ``(H, W)`` float32 pixels and ``index`` 0..N-1.

    Raises:
        InputError: See :func:`read_dataset`.

    Example:
        >>> frames = list(iter_dicom_frames("cine.dcm"))  # doctest: +SKIP
    """
    source = Path(path)
    lim = resolve_limits(limits)
    ds = read_dataset(source, limits=lim)
    spacing, meta = _frame_info(ds, source)
    count = n_frames(ds, source=source)

    def frames() -> Iterator[Frame]:
        for i in range(count):
            yield _frame(ds, i, source, spacing, meta, lim)

    return frames()


def read_dicom_frame(path: str | Path, index: int = 0, *, limits: PixelLimits | None = None) -> Frame:
    """One frame of a DICOM file.

    Args:
        path: A DICOM file.
        index: Frame number, 0..NumberOfFrames-1.
        limits: The decoded-size limit; None: :func:`~usher2.io.limits.default_limits`.

    Raises:
        InputError: See :func:`read_dataset`; also an index out of range.

    Example:
        >>> read_dicom_frame("us.dcm").shape  # doctest: +SKIP
        (480, 640)
    """
    source = Path(path)
    lim = resolve_limits(limits)
    ds = read_dataset(source, limits=lim)
    count = n_frames(ds, source=source)
    if not 0 <= index < count:
        raise InputError(source, f"a frame index in 0..{count - 1}", str(index))
    spacing, meta = _frame_info(ds, source)
    return _frame(ds, index, source, spacing, meta, lim)
