"""Importers: BUS-BRA on the real data (skipped without it), BUSI on a fabricated tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from usher2.io.errors import InputError
from usher2.io.frames import read_frame, read_mask
from usher2.io.importers import import_bus_bra, import_busi
from usher2.io.manifest import read_manifest


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_bus_bra_manifest(bus_bra_root: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / "out" / f"bus_bra{suffix}"
    df = import_bus_bra(bus_bra_root, out)
    data = pd.read_csv(bus_bra_root / "bus_data.csv")
    assert len(df) == 1875 and df["case_id"].is_unique
    assert df["patient_id"].nunique() == 1064
    assert sorted(df["fold"].unique()) == [1, 2, 3, 4, 5]
    assert (df.groupby("patient_id")["fold"].nunique() == 1).all()  # no patient in two folds
    counts = data["Pathology"].value_counts()
    assert int(df["label"].sum()) == counts["malignant"] == 607
    assert int((df["label"] == 0).sum()) == counts["benign"] == 1268
    assert {"birads", "device", "side", "histology"} <= set(df.columns)
    assert not df["image"].str.startswith("/").any()  # relative to the manifest
    assert all(Path(p).is_file() for p in df["image_path"]) and all(Path(p).is_file() for p in df["mask_path"])
    back = read_manifest(out)  # checks every file again
    assert back["case_id"].tolist() == df["case_id"].tolist()
    if suffix == ".csv":
        return
    sizes = data.set_index("ID")
    for row in df.sample(12, random_state=0).itertuples():
        frame = read_frame(row.image_path)
        mask = read_mask(row.mask_path, frame.shape, case=row.case_id)
        assert frame.shape == (sizes.loc[row.case_id, "Height"], sizes.loc[row.case_id, "Width"])
        assert mask.shape == frame.shape and mask.any()


def test_bus_bra_layout_error_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "bus_data.csv").write_text("ID,Case\n")
    with pytest.raises(InputError, match=r"got no 5-fold-cv\.csv in it"):
        import_bus_bra(tmp_path, tmp_path / "m.csv")
    with pytest.raises(InputError, match="no such directory"):
        import_bus_bra(tmp_path / "absent", tmp_path / "m.csv")


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _busi(root: Path) -> None:
    img = np.full((20, 24), 90, np.uint8)
    top, bottom = np.zeros((20, 24), np.uint8), np.zeros((20, 24), np.uint8)
    top[2:6, 2:6] = 255
    bottom[10:14, 10:16] = 255
    _png(root / "benign" / "benign (1).png", img)
    _png(root / "benign" / "benign (1)_mask.png", top)
    _png(root / "benign" / "benign (1)_mask_1.png", bottom)  # a second lesion: merged
    _png(root / "malignant" / "malignant (1).png", np.dstack([img] * 3))
    _png(root / "malignant" / "malignant (1)_mask.png", np.dstack([bottom] * 3))  # RGB masks occur in BUSI
    _png(root / "normal" / "normal (1).png", img)
    _png(root / "normal" / "normal (1)_mask.png", np.zeros((20, 24), np.uint8))


def test_busi_tree(tmp_path: Path) -> None:
    root = tmp_path / "Dataset_BUSI_with_GT"
    _busi(root)
    out = tmp_path / "work" / "busi.csv"
    df = import_busi(root, out)
    assert df["case_id"].tolist() == ["benign_1", "malignant_1", "normal_1"]
    assert (df["patient_id"] == df["case_id"]).all()
    assert df["label"].isna().tolist() == [False, False, True]
    assert df["label"].iloc[:2].tolist() == [0, 1]
    assert df["busi_class"].tolist() == ["benign", "malignant", "normal"]
    merged_path = tmp_path / "work" / "busi_masks" / "benign" / "benign (1).png"
    assert df.loc[0, "mask"] == "busi_masks/benign/benign (1).png"
    assert df.loc[0, "mask_path"] == str(merged_path.resolve())
    merged = np.asarray(Image.open(merged_path))
    assert set(np.unique(merged)) == {0, 255} and int((merged > 0).sum()) == 16 + 24  # logical OR
    assert pd.isna(df.loc[2, "mask"])  # normal: no lesion, no mask, no error
    assert not (tmp_path / "work" / "busi_masks" / "normal").exists()
    back = read_manifest(out)
    assert back["case_id"].tolist() == df["case_id"].tolist()
    assert read_mask(back.loc[1, "mask_path"], (20, 24)).sum() == 24


def test_busi_errors(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(InputError, match=r"class folders benign/, malignant/, normal/, got none of them"):
        import_busi(tmp_path, tmp_path / "m.csv")
    root = tmp_path / "busi"
    _busi(root)
    (root / "malignant" / "malignant (1)_mask.png").unlink()
    _png(root / "benign" / "benign (2).png", np.zeros((20, 24), np.uint8))
    _png(root / "benign" / "benign (2)_mask.png", np.zeros((20, 24), np.uint8))
    with pytest.raises(InputError) as info:
        import_busi(root, tmp_path / "out" / "m.csv")
    msg = str(info.value)
    assert "2 problem(s)" in msg
    assert "malignant/malignant (1).png: no mask" in msg
    assert "benign/benign (2).png: mask is empty (0 foreground pixels) in case benign_2" in msg
    assert not (tmp_path / "out" / "m.csv").exists()
