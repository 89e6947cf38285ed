"""The MRI manifest: path resolution, defaults, available and derived sequences, missing files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from usher2.io.errors import InputError
from usher2.mri.manifest import read_mri_manifest


def _write(tmp_path: Path, columns: dict[str, list[str]]) -> Path:
    for col, values in columns.items():
        if col in ("case_id", "patient_id", "dce_times_s", "label"):
            continue
        for v in values:
            if v:
                (tmp_path / v).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / v).write_bytes(b"x")
    f = tmp_path / "manifest.csv"
    pd.DataFrame(columns).to_csv(f, index=False)
    return f


def test_paths_resolve_and_patient_defaults_to_case(tmp_path: Path) -> None:
    f = _write(
        tmp_path,
        {
            "case_id": ["a", "b"],
            "t2": ["t2/a.nii.gz", "t2/b.nii.gz"],
            "mask": ["m/a.nii.gz", "m/b.nii.gz"],
            "dce_times_s": ["0;60;120", ""],
        },
    )
    df = read_mri_manifest(f, sequences=["t2"])
    assert df["patient_id"].tolist() == ["a", "b"]
    assert df.loc[0, "t2"] == str(tmp_path / "t2" / "a.nii.gz")
    assert Path(df.loc[1, "mask"]).is_absolute()
    assert df.loc[0, "dce_times_s"] == (0.0, 60.0, 120.0) and df.loc[1, "dce_times_s"] is None


def test_a_missing_sequence_is_named_with_the_columns_present(tmp_path: Path) -> None:
    f = _write(tmp_path, {"case_id": ["a"], "t2": ["t2/a.nii.gz"], "mask": ["m/a.nii.gz"]})
    with pytest.raises(InputError, match=r"no column for \['t1'\].*columns present.*'t2'"):
        read_mri_manifest(f, sequences=["t2", "t1"])


def test_adc_from_dwi_and_dce_phases_are_available(tmp_path: Path) -> None:
    f = _write(
        tmp_path,
        {
            "case_id": ["a"],
            "dwi_b0": ["d/0.nii.gz"],
            "dwi_b800": ["d/800.nii.gz"],
            "dce": ["dce/a.nii.gz"],
            "mask": ["m/a.nii.gz"],
        },
    )
    df = read_mri_manifest(f, sequences=["adc", "dce_p3", "dce"])
    assert df.loc[0, "dwi_b800"] == str(tmp_path / "d" / "800.nii.gz")
    one = _write(tmp_path / "one", {"case_id": ["a"], "dwi_b0": ["d/0.nii.gz"], "mask": ["m/a.nii.gz"]})
    with pytest.raises(InputError, match="adc"):
        read_mri_manifest(one, sequences=["adc"])
    with pytest.raises(InputError, match="dce_p2"):
        read_mri_manifest(one, sequences=["dce_p2"])


def test_missing_file_names_file_and_row(tmp_path: Path) -> None:
    f = _write(tmp_path, {"case_id": ["a", "b"], "t2": ["t2/a.nii.gz", "t2/b.nii.gz"], "mask": ["m/a.nii.gz", ""]})
    (tmp_path / "t2" / "b.nii.gz").unlink()
    with pytest.raises(InputError, match=r"b\.nii\.gz.*row 1, case 'b'"):
        read_mri_manifest(f, sequences=["t2"])
    df = read_mri_manifest(f, sequences=["t2"], check_files=False)  # empty cells are allowed per row
    assert df.loc[1, "mask"] is None


def test_required_columns_and_unique_ids() -> None:
    with pytest.raises(InputError, match="mask"):
        read_mri_manifest(pd.DataFrame({"case_id": ["a"], "t2": ["x"]}), check_files=False)
    with pytest.raises(InputError, match="duplicates"):
        read_mri_manifest(pd.DataFrame({"case_id": ["a", "a"], "mask": ["x", "y"]}), check_files=False)
