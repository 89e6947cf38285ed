"""Writers for the fabricated files the io tests read back (DICOM, images)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

PATIENT_NAME = "Zqxvbrunhilde^Wolfsschanze"
PHI = {
    "PatientName": PATIENT_NAME,
    "PatientID": "PID-77319-XQ",
    "PatientBirthDate": "19370412",
    "AccessionNumber": "ACC-55821-QZ",
    "InstitutionName": "Hospital Quaggaworth",
    "ReferringPhysicianName": "Dr^Plumbbottom",
    "StudyID": "STUDY-9182",
    "OtherPatientIDs": "OPID-31337",
}


def write_dicom(
    path: Path,
    pixel_bytes: bytes | None,
    *,
    rows: int,
    cols: int,
    frames: int = 1,
    photometric: str = "MONOCHROME2",
    bits: int = 8,
    samples: int = 1,
    pixel_spacing: Sequence[float] | None = None,
    regions: Sequence[dict[str, float | int]] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> Path:
    """Write a DICOM ultrasound file (with the PHI above) around raw pixel bytes."""
    meta = FileMetaDataset()
    sop_class = UltrasoundMultiFrameImageStorage if frames > 1 else UltrasoundImageStorage
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for key, value in PHI.items():
        setattr(ds, key, value)
    ds.Modality = "US"
    ds.Manufacturer = "AcmeSound"
    ds.ManufacturerModelName = "Model-9"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if samples == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameTime = 33.3
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    if regions is not None:
        items = []
        for r in regions:
            item = Dataset()
            for key, value in r.items():
                setattr(item, key, value)
            items.append(item)
        ds.SequenceOfUltrasoundRegions = DicomSequence(items)
    if pixel_bytes is not None:
        ds.PixelData = pixel_bytes
        if transfer_syntax != ExplicitVRLittleEndian:
            ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def region(dx_cm: float, dy_cm: float, *, units: int = 3, size: tuple[int, int] = (64, 64)) -> dict[str, float | int]:
    """One SequenceOfUltrasoundRegions item covering ``size`` (rows, cols)."""
    return {
        "RegionSpatialFormat": 1,
        "RegionDataType": 1,
        "RegionLocationMinX0": 0,
        "RegionLocationMinY0": 0,
        "RegionLocationMaxX1": size[1] - 1,
        "RegionLocationMaxY1": size[0] - 1,
        "PhysicalUnitsXDirection": units,
        "PhysicalUnitsYDirection": units,
        "PhysicalDeltaX": dx_cm,
        "PhysicalDeltaY": dy_cm,
    }


def ramp(rows: int, cols: int, top: int, seed: int = 0) -> np.ndarray:
    """A seeded random image covering 0..top (both ends present)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, top + 1, size=(rows, cols))
    a.flat[0], a.flat[1] = 0, top
    return a


def grey8(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Seeded 8-bit noise with both 0 and 255 present."""
    a = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    a.flat[0], a.flat[1] = 0, 255
    return a


def write_png(path: Path, pixels: np.ndarray) -> Path:
    """Write ``pixels`` as a PNG (folders created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def read_grey_png(path: Path) -> np.ndarray:
    """A PNG's pixels, asserting it is 8-bit grey (mode L)."""
    im = Image.open(path)
    assert im.mode == "L", im.mode
    return np.asarray(im)
