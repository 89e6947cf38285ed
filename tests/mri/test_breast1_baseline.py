"""pyradiomics' own breast1 baseline through usher2.mri's reader and the usher2 radiomics extractor."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

from usher2.features.radiomics import PREFIX, RadiomicsExtractor
from usher2.mri import read_mask, read_volume


def test_breast1_within_pyradiomics_3_percent(shared_dir: Path) -> None:
    base = shared_dir / "reference" / "radiomics" / "pyradiomics-baseline"
    if not (base / "breast1_image.nrrd").is_file():
        pytest.skip(f"{base / 'breast1_image.nrrd'} is absent")
    expected: dict[str, float] = {}
    classes: dict[str, None] = {}
    settings = types = None
    for f in sorted(base.glob("baseline_*.csv")):
        df = pd.read_csv(f, index_col=0)
        if "breast1" not in df.columns or pd.isna(df.loc["diagnostics_Configuration_Settings", "breast1"]):
            continue
        classes[f.stem.removeprefix("baseline_")] = None
        settings = ast.literal_eval(df.loc["diagnostics_Configuration_Settings", "breast1"])
        types = ast.literal_eval(df.loc["diagnostics_Configuration_EnabledImageTypes", "breast1"])
        for name, value in df["breast1"].items():
            if not str(name).startswith("diagnostics_") and pd.notna(value):
                expected[PREFIX + str(name)] = float(value)
    assert settings is not None and expected
    settings.setdefault("binWidth", 25)
    image = read_volume(base / "breast1_image.nrrd", sequence="t1")
    mask = read_mask(base / "breast1_label.nrrd", image)
    row = RadiomicsExtractor({"imageType": types, "featureClass": classes, "setting": settings}).extract(
        image.to_sitk(), mask.to_sitk()
    )
    missing = sorted(set(expected) - set(row))
    assert not missing, missing[:5]
    off = {
        k: (row[k], v)
        for k, v in expected.items()
        if not (abs(row[k] - v) <= 0.03 * abs(v) or (v == 0 and abs(row[k]) < 1e-9))
    }
    assert not off, f"{len(off)} of {len(expected)} values differ by 3% or more: {dict(list(off.items())[:5])}"
