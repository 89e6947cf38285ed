"""Reading MRI volumes and studies: synthetic NIfTI/NRRD/DICOM written here, and the real
ProstateX and pyradiomics-breast1 data beside the repository (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from usher2.io.errors import InputError
from usher2.mri.adc import adc_map
from usher2.mri.io import Volume, read_mask, read_study, read_volume

PHI = {
    "PatientName": "Zqxvbrunhilde^Wolfsschanze",
    "PatientID": "PID-77319-XQ",
    "PatientBirthDate": "19370412",
    "AccessionNumber": "ACC-55821-QZ",
    "InstitutionName": "Hospital Quaggaworth",
    "StudyID": "STUDY-9182",
}
# a 30° rotation about x: an oblique axial stack, like ProstateX
_C, _S = np.cos(np.pi / 6), np.sin(np.pi / 6)
ROW, COL = (1.0, 0.0, 0.0), (0.0, _C, -_S)
NORMAL = tuple(np.cross(ROW, COL))
DIRECTION = tuple(np.column_stack([ROW, COL, NORMAL]).ravel())  # SimpleITK: columns are the axes
ORIGIN = (-20.0, 10.0, 5.0)


def write_series(
    folder: Path,
    voxels: np.ndarray,
    *,
    description: str,
    spacing: tuple[float, float, float] = (0.8, 0.7, 2.5),
    series_uid: str | None = None,
    prefix: str = "im",
    **per_file: object,
) -> Path:
    """Write ``(z, y, x)`` uint16 voxels as one MR DICOM series (with PHI) on the oblique grid above.

    ``per_file`` tags (DiffusionBValue, TemporalPositionIdentifier, TriggerTime, AcquisitionTime)
    are written on every slice. ``spacing`` is ``(x, y, z)`` mm.
    """
    folder.mkdir(parents=True, exist_ok=True)
    uid = series_uid or generate_uid()
    for k, plane in enumerate(voxels.astype(np.uint16)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{prefix}-{k:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        for key, value in {**PHI, **per_file}.items():
            setattr(ds, key, value)
        ds.Modality, ds.Manufacturer, ds.MagneticFieldStrength = "MR", "AcmeMag", 3.0
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.StudyInstanceUID = uid, description, "1.2.3.4"
        ds.ImageOrientationPatient = [*ROW, *COL]
        ds.ImagePositionPatient = [float(v) for v in np.add(ORIGIN, np.multiply(k * spacing[2], NORMAL))]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # (row, column) = (y, x)
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = plane.tobytes()
        ds.save_as(path, enforce_file_format=True)
    return folder


def ramp(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, size=shape).astype(np.float32)


def write_image(path: Path, voxels: np.ndarray, spacing=(0.8, 0.7, 2.5)) -> Path:
    img = sitk.GetImageFromArray(voxels)
    img.SetSpacing(spacing)
    img.SetOrigin(ORIGIN)
    img.SetDirection(DIRECTION)
    sitk.WriteImage(img, str(path))
    return path


def assert_no_phi(vol: Volume) -> None:
    text = repr(vol.metadata)
    for key, value in PHI.items():
        assert key not in vol.metadata
        assert value not in text
    for key in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "AcquisitionTime"):
        assert key not in vol.metadata


# ---------------------------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_volume_file_keeps_voxels_and_geometry(tmp_path: Path, suffix: str) -> None:
    voxels = ramp((4, 5, 6))
    vol = read_volume(write_image(tmp_path / f"t2{suffix}", voxels))
    assert vol.sequence == "t2" and vol.shape == (4, 5, 6) and not vol.is_4d
    np.testing.assert_array_equal(vol.array, voxels)
    np.testing.assert_allclose(vol.spacing, (0.8, 0.7, 2.5), atol=1e-6)
    np.testing.assert_allclose(vol.origin, ORIGIN, atol=1e-4)
    np.testing.assert_allclose(vol.direction, DIRECTION, atol=1e-6)
    assert vol.geometry()["size"] == (6, 5, 4)
    back = sitk.GetArrayFromImage(vol.to_sitk())
    np.testing.assert_array_equal(back, voxels)


def test_a_2d_file_is_not_a_volume(tmp_path: Path) -> None:
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(ramp((5, 6))), str(path))
    with pytest.raises(InputError, match=r"slice.nii.gz: expected a 3D volume .* got a 2D image of size \(6, 5\)"):
        read_volume(path)


def test_nan_voxels_are_an_error_naming_their_count(tmp_path: Path) -> None:
    voxels = ramp((4, 5, 6))
    voxels[0, 0, :3] = np.nan
    with pytest.raises(InputError, match="3 NaN or infinite voxels of 120"):
        read_volume(write_image(tmp_path / "bad.nrrd", voxels))


def test_unknown_suffix_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"suffix '\.txt'"):
        read_volume(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="nothing at this path"):
        read_volume(tmp_path / "absent.nii")


# ---------------------------------------------------------------------------------- DICOM


def test_dicom_series_gives_the_volume_and_its_geometry_without_phi(tmp_path: Path) -> None:
    voxels = ramp((5, 6, 7)).round()
    folder = write_series(tmp_path / "t2", voxels, description="t2_tse_tra")
    vol = read_volume(folder)
    assert vol.sequence == "t2_tse_tra" and vol.shape == (5, 6, 7)
    np.testing.assert_array_equal(vol.array, voxels)
    np.testing.assert_allclose(vol.spacing, (0.8, 0.7, 2.5), atol=1e-6)
    np.testing.assert_allclose(vol.origin, ORIGIN, atol=1e-6)
    np.testing.assert_allclose(vol.direction, DIRECTION, atol=1e-6)
    assert vol.metadata["Modality"] == "MR" and vol.metadata["MagneticFieldStrength"] == 3.0
    assert vol.times is None and vol.b_values is None
    assert_no_phi(vol)


def test_slices_are_ordered_by_position_not_file_name(tmp_path: Path) -> None:
    voxels = ramp((4, 3, 3)).round()
    folder = write_series(tmp_path / "s", voxels, description="s")
    names = sorted(folder.iterdir())
    for i, p in enumerate(names):  # reverse the file names
        p.rename(folder / f"tmp-{len(names) - 1 - i:03d}.dcm")
    np.testing.assert_array_equal(read_volume(folder).array, voxels)


def test_a_folder_with_mixed_series_is_an_error_listing_them(tmp_path: Path) -> None:
    write_series(tmp_path / "study" / "a", ramp((3, 4, 4)), description="t2_tse_tra")
    write_series(tmp_path / "study" / "b", ramp((3, 4, 4)), description="ep2d_diff_ADC")
    with pytest.raises(InputError, match=r"one DICOM series, got 2 series: .*t2_tse_tra.*ep2d_diff_ADC") as info:
        read_volume(tmp_path / "study")
    assert "read_study" in str(info.value)
    study = read_study(tmp_path / "study")
    assert sorted(study) == ["ep2d_diff_ADC", "t2_tse_tra"]


def test_mapping_by_glob_regex_and_yaml(tmp_path: Path) -> None:
    root = tmp_path / "study"
    write_series(root / "4-t2", ramp((3, 4, 4)), description="t2_tse_tra")
    write_series(root / "7-adc", ramp((3, 4, 4)), description="ep2d_diff_tra_ADC")
    write_image(root / "extra.nii.gz", ramp((3, 4, 4)))
    study = read_study(root, {"t2": "*t2*", "adc": r"re:_adc$"})
    assert sorted(study) == ["adc", "t2"]
    assert study["adc"].metadata["SeriesDescription"] == "ep2d_diff_tra_ADC"
    (tmp_path / "map.yaml").write_text("T2: '4-*'\nextra: extra*\n")  # folder name and file name
    study = read_study(root, tmp_path / "map.yaml")
    assert sorted(study) == ["T2", "extra"] and study["extra"].sequence == "extra"
    with pytest.raises(InputError, match=r"sequence 'dce'.*none among: .*t2_tse_tra in 4-t2 \(3 files\)"):
        read_study(root, {"dce": "*dce*"})
    with pytest.raises(InputError, match="matched by both 'a' and 'b'"):
        read_study(root, {"a": "*t2*", "b": "*tse*"})


def test_dce_from_several_series_is_4d_with_acquisition_times(tmp_path: Path) -> None:
    root = tmp_path / "study"
    phases = [ramp((3, 4, 5), seed=i).round() for i in range(3)]
    for i, (phase, tm) in enumerate(zip(phases, ("120101", "120000", "120030.5"), strict=True)):
        write_series(root / f"dce{i}", phase, description=f"dce_phase{i}", AcquisitionTime=tm)
    dce = read_study(root, {"dce": "dce_*"})["dce"]
    assert dce.shape == (3, 3, 4, 5) and dce.is_4d and dce.grid_shape == (3, 4, 5)
    assert dce.times == (0.0, 30.5, 61.0)  # sorted by acquisition time
    np.testing.assert_array_equal(dce.array[0], phases[1])
    np.testing.assert_array_equal(dce.array[2], phases[0])


def test_dce_in_one_series_splits_by_temporal_position(tmp_path: Path) -> None:
    folder, uid = tmp_path / "dce", generate_uid()
    phases = [ramp((3, 4, 5), seed=i).round() for i in range(4)]
    for t, phase in enumerate(phases):
        write_series(
            folder, phase, description="dyn", series_uid=uid, prefix=f"t{t}",
            TemporalPositionIdentifier=t + 1, TriggerTime=t * 45000.0,
        )  # fmt: skip
    dce = read_volume(folder, sequence="dce")
    assert dce.shape == (4, 3, 4, 5) and dce.times == (0.0, 45.0, 90.0, 135.0)
    for t, phase in enumerate(phases):
        np.testing.assert_array_equal(dce.frame(t), phase)


def test_dwi_in_one_series_gives_b_values_and_the_known_adc(tmp_path: Path) -> None:
    folder, uid = tmp_path / "dwi", generate_uid()
    true_adc = np.linspace(0.5e-3, 2.5e-3, 3 * 4 * 5).reshape(3, 4, 5)
    for b in (1000.0, 0.0, 500.0):
        write_series(folder, 2000.0 * np.exp(-b * true_adc), description="ep2d_diff", series_uid=uid,
                     prefix=f"b{int(b)}", DiffusionBValue=b)  # fmt: skip
    dwi = read_volume(folder)
    assert dwi.b_values == (0.0, 500.0, 1000.0) and dwi.shape == (3, 3, 4, 5) and dwi.times is None
    adc, _ = adc_map(dwi.by_b_value())
    # uint16 storage rounds S by ≤ 0.5; at S ≥ 2000·e^−2.5 ≈ 164 that moves ADC by < 0.5/164/500 ≈ 6e-6
    np.testing.assert_allclose(adc, true_adc, atol=6e-6)


def test_dwi_from_series_per_b_value_and_an_adc_series_has_no_b_values(tmp_path: Path) -> None:
    root = tmp_path / "study"
    for b in (800.0, 50.0):
        write_series(root / f"b{int(b)}", ramp((3, 4, 4), seed=int(b)), description=f"dwi_b{int(b)}", DiffusionBValue=b)
    write_series(root / "adc", ramp((3, 4, 4)), description="adc", DiffusionBValue=800.0, ImageType=["DERIVED", "ADC"])
    study = read_study(root, {"dwi": "dwi_b*", "adc": "adc"})
    assert study["dwi"].b_values == (50.0, 800.0) and study["dwi"].shape == (2, 3, 4, 4)
    assert study["adc"].b_values is None and not study["adc"].is_4d


def test_duplicate_slices_without_a_frame_tag_are_an_error(tmp_path: Path) -> None:
    folder, uid = tmp_path / "dup", generate_uid()
    write_series(folder, ramp((3, 4, 4)), description="dup", series_uid=uid, prefix="a")
    write_series(folder, ramp((3, 4, 4)), description="dup", series_uid=uid, prefix="b")
    with pytest.raises(InputError, match="6 files at 3 slice positions in series 'dup'"):
        read_volume(folder)


# ---------------------------------------------------------------------------------- masks


def test_mask_on_one_sequence_grid_is_accepted_and_named(tmp_path: Path) -> None:
    t2 = read_volume(write_image(tmp_path / "t2.nrrd", ramp((4, 8, 8))))
    adc = read_volume(write_image(tmp_path / "adc.nrrd", ramp((4, 4, 4)), spacing=(1.6, 1.4, 2.5)))
    labels = np.zeros((4, 4, 4), np.float32)
    labels[1:3, 1:3, 1:3] = 1
    mask = read_mask(write_image(tmp_path / "mask.nrrd", labels, spacing=(1.6, 1.4, 2.5)), {"t2": t2, "adc": adc})
    assert mask.metadata["space"] == "adc" and mask.metadata["foreground_voxels"] == 8
    assert mask.sequence == "mask" and mask.same_grid(adc)


def test_mask_on_no_sequence_grid_names_both_geometries(tmp_path: Path) -> None:
    t2 = read_volume(write_image(tmp_path / "t2.nrrd", ramp((4, 8, 8))))
    labels = np.zeros((4, 4, 4), np.float32)
    labels[1, 1, 1] = 1
    path = write_image(tmp_path / "mask.nrrd", labels)
    with pytest.raises(InputError, match=r"t2: size \(8, 8, 4\).*mask geometry size \(4, 4, 4\)") as info:
        read_mask(path, t2)
    assert "nearest-neighbour" in str(info.value)


@pytest.mark.parametrize(("value", "match"), [(0.5, "non-negative integers"), (0.0, "0 foreground voxels")])
def test_mask_must_be_a_non_empty_label_volume(tmp_path: Path, value: float, match: str) -> None:
    t2 = read_volume(write_image(tmp_path / "t2.nrrd", ramp((4, 8, 8))))
    labels = np.zeros((4, 8, 8), np.float32)
    labels[2, 2, 2] = value
    with pytest.raises(InputError, match=match):
        read_mask(write_image(tmp_path / "mask.nrrd", labels), t2)


# ---------------------------------------------------------------------------------- real data

PROSTATEX = {"t2": "t2_tse_tra", "adc": "re:_ADC$", "dwi": "re:CALC_BVAL$"}


@pytest.mark.parametrize("case", ["ProstateX-0000", "ProstateX-0001"])
def test_prostatex_t2_adc_and_high_b_load_with_agreeing_geometry(shared_dir: Path, case: str) -> None:
    """Measured: T2 (19, 384, 384) at 0.5 × 0.5 × 3 mm; ADC and computed b = 1000 DWI (19, 128, 84) at
    2 × 2 × 3 mm. All three share the oblique direction and the 19 slice planes; ADC and DWI share
    one grid; in-plane the T2 field of view is 192 × 192 mm and the DWI 168 × 256 mm, centred within
    1 mm, so their overlap is 7/8 of the T2 box and 3/4 of the DWI box."""
    study = read_study(shared_dir / "data" / "mri" / "prostatex" / case, PROSTATEX)
    t2, adc, dwi = study["t2"], study["adc"], study["dwi"]
    assert t2.shape == (19, 384, 384) and adc.shape == dwi.shape == (19, 128, 84)
    np.testing.assert_allclose(t2.spacing, (0.5, 0.5, 3.0), atol=1e-6)
    np.testing.assert_allclose(adc.spacing, (2.0, 2.0, 3.0), atol=1e-6)
    assert adc.same_grid(dwi) and not t2.same_grid(adc)
    assert dwi.b_values == (1000.0,) and adc.b_values is None
    np.testing.assert_allclose(t2.direction, adc.direction, atol=1e-6)

    d = np.asarray(t2.direction).reshape(3, 3)

    def box(v: Volume) -> tuple[np.ndarray, np.ndarray]:  # voxel-edge box in the shared oblique frame
        lo = d.T @ np.asarray(v.origin) - np.asarray(v.spacing) / 2
        return lo, lo + np.asarray(v.geometry()["size"]) * np.asarray(v.spacing)

    (t_lo, t_hi), (a_lo, a_hi) = box(t2), box(adc)
    np.testing.assert_allclose([t_lo[2], t_hi[2]], [a_lo[2], a_hi[2]], atol=1e-3)  # the same slab
    np.testing.assert_allclose(t_hi - t_lo, (192.0, 192.0, 57.0), atol=1e-3)
    np.testing.assert_allclose(a_hi - a_lo, (168.0, 256.0, 57.0), atol=1e-3)
    assert np.all(np.abs((t_lo + t_hi) / 2 - (a_lo + a_hi) / 2) < 1.0)
    overlap = np.prod(np.minimum(t_hi, a_hi) - np.maximum(t_lo, a_lo))
    assert overlap / np.prod(t_hi - t_lo) == pytest.approx(7 / 8, abs=1e-6)
    assert overlap / np.prod(a_hi - a_lo) == pytest.approx(3 / 4, abs=1e-6)
    # stored ADC is in 1e-6 mm²/s: prostate tissue medians of about 1.1e-3 mm²/s
    assert 0.8e-3 < np.median(adc.array[adc.array > 0]) * 1e-6 < 1.5e-3
    for vol in (t2, adc, dwi):
        assert vol.metadata["Modality"] == "MR"
        assert not {"PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID"} & set(vol.metadata)


def test_pyradiomics_breast1_loads_with_its_label(shared_dir: Path) -> None:
    root = shared_dir / "data" / "mri" / "pyradiomics-breast1"
    image = read_volume(root / "breast1_image.nrrd", sequence="t1")
    assert image.shape == (21, 120, 45)
    np.testing.assert_allclose(image.spacing, (0.664062, 0.664062, 2.1), atol=1e-6)
    mask = read_mask(root / "breast1_label.nrrd", image)
    assert mask.metadata["space"] == "t1" and mask.same_grid(image)
    assert set(np.unique(mask.array)) == {0.0, 1.0} and mask.metadata["foreground_voxels"] == 143
    study = read_study(root, {"t1": "*image*"})
    assert list(study) == ["t1"] and study["t1"].same_grid(image)
