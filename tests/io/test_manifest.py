"""Manifests: validation that reports every problem at once, resolved paths, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from usher2.io.errors import InputError
from usher2.io.manifest import ManifestError, Problem, read_manifest, write_manifest


def _cohort(root: Path, n: int = 3) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k in range(n):
        Image.fromarray(np.full((16, 16), 10 * k, np.uint8)).save(root / "images" / f"c{k}.png")
        m = np.zeros((16, 16), np.uint8)
        m[4:8, 4:8] = 255
        Image.fromarray(m).save(root / "masks" / f"c{k}.png")
    return root


def test_read_valid_manifest_resolves_paths(tmp_path: Path) -> None:
    root = _cohort(tmp_path / "cohort")
    (root / "manifest.csv").write_text(
        "case_id,image,mask,label,age,site\n"
        "c0,images/c0.png,masks/c0.png,1,54,A\n"
        "c1,images/c1.png,,0,61.5,B\n"
        "c2,images/c2.png,masks/c2.png,,47,A\n"
    )
    df = read_manifest(root / "manifest.csv", clinical=["age"])
    assert list(df.columns[:5]) == ["case_id", "patient_id", "image", "mask", "label"]
    assert df["patient_id"].tolist() == ["c0", "c1", "c2"]  # defaults to case_id
    assert df["image"].tolist() == ["images/c0.png", "images/c1.png", "images/c2.png"]  # kept as written
    assert df.loc[0, "image_path"] == str((root / "images" / "c0.png").resolve())
    assert df.loc[0, "mask_path"] == str((root / "masks" / "c0.png").resolve())
    assert pd.isna(df.loc[1, "mask"]) and pd.isna(df.loc[1, "mask_path"])
    assert str(df["label"].dtype) == "Int64" and df["label"].isna().tolist() == [False, False, True]
    assert df["age"].dtype == np.float64 and df["age"].sum() == pytest.approx(162.5)
    assert df["site"].tolist() == ["A", "B", "A"]
    assert df.attrs["manifest_dir"] == str(root.resolve())


def test_ids_keep_leading_zeros_and_patient_id_is_text(tmp_path: Path) -> None:
    root = _cohort(tmp_path)
    (root / "m.csv").write_text("case_id,patient_id,image\n007,0042,images/c0.png\n")
    df = read_manifest(root / "m.csv")
    assert df.loc[0, "case_id"] == "007" and df.loc[0, "patient_id"] == "0042"


def test_every_problem_is_reported_in_one_error(tmp_path: Path) -> None:
    root = _cohort(tmp_path)
    (root / "bad.csv").write_text(
        "case_id,image,mask,label,age,ki67\n"
        "c0,images/c0.png,masks/c0.png,1,54,10\n"  # row 1: fine
        "c1,images/missing.png,,0,61,20\n"  # row 2: image missing
        "c0,images/c2.png,masks/gone.png,2,,30\n"  # row 3: duplicate id, mask missing, label 2, age NaN
        ",images/c1.png,,yes,old,\n"  # row 4: empty id, label 'yes', age 'old', ki67 empty
    )
    with pytest.raises(ManifestError) as info:
        read_manifest(root / "bad.csv", clinical=["age", "ki67", "bmi"])
    err = info.value
    assert isinstance(err, InputError)
    got = {(p.row, p.column) for p in err.problems}
    assert got == {
        (None, "bmi"),
        (2, "image"),
        (3, "case_id"),
        (3, "mask"),
        (3, "label"),
        (3, "age"),
        (4, "case_id"),
        (4, "label"),
        (4, "age"),
        (4, "ki67"),
    }
    msg = str(err)
    assert msg.startswith(f"{root / 'bad.csv'}: expected a valid manifest")
    assert "10 problem(s)" in msg
    assert "row 3, column 'case_id': duplicate case_id 'c0' (first in row 1)" in msg
    assert "row 2, column 'image': file not found: 'images/missing.png'" in msg
    assert "row 3, column 'label': expected 0, 1 or empty, got '2'" in msg
    assert "row 4, column 'age': expected a number, got non-numeric 'old'" in msg
    assert "row 3, column 'age': expected a number, got a missing value (NaN/empty)" in msg
    assert "column 'bmi': requested clinical column is missing" in msg


def test_missing_required_and_reserved_columns(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("id,picture,image_path\na,b.png,/x\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path / "m.csv")
    assert {(p.row, p.column) for p in info.value.problems} == {
        (None, "case_id"),
        (None, "image"),
        (None, "image_path"),
    }
    assert "required column is missing (columns found: ['id', 'picture', 'image_path'])" in str(info.value)


def test_parquet_wrong_types_and_labels(tmp_path: Path) -> None:
    root = _cohort(tmp_path)
    df = pd.DataFrame(
        {
            "case_id": [1.5, 2.0, 3.0],  # floats are not ids
            "image": ["images/c0.png", "images/c1.png", "images/c2.png"],
            "label": [0.0, 1.0, 0.5],
        }
    )
    df.to_parquet(root / "m.parquet")
    with pytest.raises(ManifestError) as info:
        read_manifest(root / "m.parquet")
    got = [(p.row, p.column) for p in info.value.problems]
    assert got == [(1, "case_id"), (2, "case_id"), (3, "case_id"), (3, "label")]
    assert "expected text, got float 1.5" in str(info.value)


def test_parquet_with_stored_index_keeps_every_value(tmp_path: Path) -> None:
    # A Parquet file written with its index (e.g. a filtered DataFrame) must not misalign rows.
    root = _cohort(tmp_path)
    df = pd.DataFrame({"case_id": ["c1", "c2"], "image": ["images/c1.png", "images/c2.png"]}, index=[10, 11])
    df.to_parquet(root / "m.parquet")
    got = read_manifest(root / "m.parquet")
    assert got.index.tolist() == [0, 1]
    assert got["case_id"].tolist() == ["c1", "c2"]
    assert got["image_path"].tolist() == [str((root / "images" / f"c{k}.png").resolve()) for k in (1, 2)]


def test_check_files_false_skips_file_checks(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("case_id,image\na,nowhere.png\n")
    with pytest.raises(ManifestError):
        read_manifest(tmp_path / "m.csv")
    df = read_manifest(tmp_path / "m.csv", check_files=False)
    assert df.loc[0, "image_path"] == str((tmp_path / "nowhere.png").resolve())


def test_bad_manifest_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_manifest(tmp_path / "absent.csv")
    (tmp_path / "m.xlsx").write_text("x")
    with pytest.raises(InputError, match=r"\.csv or \.parquet, got suffix '\.xlsx'"):
        read_manifest(tmp_path / "m.xlsx")
    (tmp_path / "m.parquet").write_text("not parquet")
    with pytest.raises(InputError, match=r"m\.parquet: expected a readable PARQUET manifest"):
        read_manifest(tmp_path / "m.parquet")
    (tmp_path / "head.csv").write_text("case_id,image\n")
    with pytest.raises(ManifestError, match="the manifest has no rows"):
        read_manifest(tmp_path / "head.csv")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_read_round_trip_and_relocation(tmp_path: Path, suffix: str) -> None:
    root = _cohort(tmp_path / "cohort")
    (root / "manifest.csv").write_text(
        "case_id,patient_id,image,mask,label,age\nc0,p0,images/c0.png,masks/c0.png,1,54\nc1,p0,images/c1.png,,,61\n"
    )
    df = read_manifest(root / "manifest.csv", clinical=["age"])
    moved = tmp_path / "elsewhere" / "deep" / f"copy{suffix}"
    assert write_manifest(df, moved) == moved
    assert [p.name for p in moved.parent.iterdir()] == [moved.name]  # no temporary left behind
    back = read_manifest(moved, clinical=["age"])
    assert back["image"].tolist() == ["../../cohort/images/c0.png", "../../cohort/images/c1.png"]
    assert back["image_path"].tolist() == df["image_path"].tolist()
    assert back["mask_path"].isna().tolist() == [False, True]
    assert back["label"].isna().tolist() == [False, True] and int(back.loc[0, "label"]) == 1
    assert "image_path" not in (pd.read_csv(moved) if suffix == ".csv" else pd.read_parquet(moved)).columns


def test_write_manifest_refuses_bad_targets(tmp_path: Path) -> None:
    df = pd.DataFrame({"case_id": ["a"], "image": ["a.png"]})
    with pytest.raises(InputError, match=r"suffix '\.txt'"):
        write_manifest(df, tmp_path / "m.txt")
    with pytest.raises(InputError, match=r"missing \['image'\]"):
        write_manifest(df[["case_id"]], tmp_path / "m.csv")
    assert not list(tmp_path.iterdir())


def test_problem_str() -> None:
    assert str(Problem(3, "label", "bad")) == "row 3, column 'label': bad"
    assert str(Problem(None, None, "no rows")) == "file: no rows"
