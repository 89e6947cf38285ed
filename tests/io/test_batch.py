"""Batch reading: bad cases become Failure records; the good ones go on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from usher2.io.batch import read_case, read_cases
from usher2.io.manifest import read_manifest


def _good(root: Path, k: int) -> str:
    img = np.full((16, 20), 40 * k, np.uint8)
    mask = np.zeros((16, 20), np.uint8)
    mask[4 : 4 + k + 1, 5:9] = 255
    Image.fromarray(img).save(root / f"g{k}.png")
    Image.fromarray(mask).save(root / f"g{k}_mask.png")
    return f"g{k},p{k},g{k}.png,g{k}_mask.png,{k % 2},{50 + k}"


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    lines = ["case_id,patient_id,image,mask,label,age"]
    lines += [_good(tmp_path, k) for k in range(3)]
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    Image.fromarray(np.zeros((16, 20), np.uint8)).save(tmp_path / "b_img.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "small_mask.png")
    lines += [
        "bad_missing,p9,nowhere.png,,1,60",
        "bad_corrupt,p9,corrupt.png,,0,61",
        "bad_shape,p9,b_img.png,small_mask.png,1,62",
    ]
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "manifest.csv"


def test_three_good_three_broken(manifest: Path) -> None:
    seen: list[tuple[str, bool]] = []
    result = read_cases(manifest, on_case=lambda case, ok: seen.append((case, ok)))
    assert [c.case_id for c in result.cases] == ["g0", "g1", "g2"]
    assert [f.case for f in result.failures] == ["bad_missing", "bad_corrupt", "bad_shape"]
    assert seen == [
        ("g0", True),
        ("g1", True),
        ("g2", True),
        ("bad_missing", False),
        ("bad_corrupt", False),
        ("bad_shape", False),
    ]
    for k, case in enumerate(result.cases):
        assert case.patient_id == f"p{k}" and case.label == k % 2
        assert case.frame.pixels[0, 0] == pytest.approx(40 * k / 255)
        assert case.mask is not None and int(case.mask.sum()) == 4 * (k + 1)
        assert case.row["age"] == 50 + k
    errors = {f.case: f.error for f in result.failures}
    assert errors["bad_missing"].startswith("InputError: ") and "nowhere.png" in errors["bad_missing"]
    assert "corrupt.png" in errors["bad_corrupt"] and "a corrupt PNG file" in errors["bad_corrupt"]
    assert "image and mask shapes differ: (16, 20) vs (8, 8)" in errors["bad_shape"]


def test_dataframe_input_and_no_masks(manifest: Path) -> None:
    df = read_manifest(manifest, check_files=False)
    result = read_cases(df.iloc[[0, 2, 5]], masks=False)
    assert [c.case_id for c in result.cases] == ["g0", "g2", "bad_shape"]
    assert all(c.mask is None for c in result.cases) and result.failures == []


def test_read_case_with_base_dir(manifest: Path) -> None:
    case = read_case({"case_id": "x", "image": "g1.png", "mask": "g1_mask.png"}, base_dir=manifest.parent)
    assert case.frame.shape == (16, 20) and case.label is None and case.patient_id == "x"
