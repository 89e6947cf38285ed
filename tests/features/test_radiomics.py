"""Radiomics: true 2D extraction, parameter checks, column names, and pyradiomics' own baselines."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from usher2.features.radiomics import PREFIX, RadiomicsExtractor, load_params
from usher2.io.errors import InputError

BASELINE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "radiomics" / "pyradiomics-baseline"


def _frame() -> tuple[np.ndarray, np.ndarray]:
    """A 256 x 256 speckle-like frame with a darker elliptical lesion of about 7,500 pixels."""
    rng = np.random.default_rng(0)
    img = rng.rayleigh(60.0, (256, 256))
    yy, xx = np.mgrid[:256, :256]
    mask = ((yy - 128) / 45) ** 2 + ((xx - 128) / 53) ** 2 <= 1
    img[mask] *= 0.5
    return np.clip(img, 0, 255).astype(np.float32), mask.astype(np.uint8)


def test_true_2d_extraction_has_wavelet_log_and_2d_shape() -> None:
    img, mask = _frame()
    row = RadiomicsExtractor().extract(img, mask)
    assert all(k.startswith(PREFIX) and np.isfinite(v) for k, v in row.items())
    types = {k[len(PREFIX) :].split("_")[0] for k in row}
    assert types == {
        "original",
        "wavelet-LL",
        "wavelet-LH",
        "wavelet-HL",
        "wavelet-HH",
        "log-sigma-1-0-mm-3D",
        "log-sigma-2-0-mm-3D",
        "log-sigma-3-0-mm-3D",
    }
    assert "radiomics_original_shape2D_PixelSurface" in row and not any("_shape_" in k for k in row)
    assert row["radiomics_original_firstorder_Mean"] == pytest.approx(float(img[mask > 0].mean()), rel=1e-6)
    assert row["radiomics_original_shape2D_PixelSurface"] == pytest.approx(mask.sum(), rel=0.02)


def test_2d_glcm_has_the_4_in_plane_directions() -> None:
    from radiomics.glcm import RadiomicsGLCM

    img, mask = _frame()
    glcm = RadiomicsGLCM(sitk.GetImageFromArray(img), sitk.GetImageFromArray(mask), binWidth=8)
    glcm._initCalculation()
    assert glcm.P_glcm.shape[-1] == 4  # (0, 45, 90, 135 degrees); a 3D volume has 13


def test_spacing_makes_log_sigma_millimetres() -> None:
    img, mask = _frame()
    params = {"imageType": {"LoG": {"sigma": [1.0]}}, "featureClass": {"firstorder": None}, "setting": {"binWidth": 8}}
    ex = RadiomicsExtractor(params)
    px = ex.extract(img, mask)["radiomics_log-sigma-1-0-mm-3D_firstorder_Variance"]
    half = ex.extract(img, mask, spacing=(0.5, 0.5))["radiomics_log-sigma-1-0-mm-3D_firstorder_Variance"]
    assert half != pytest.approx(px, rel=0.05)  # sigma of 1 mm is 2 pixels at 0.5 mm: a smoother image


def test_optional_resampling_to_isotropic_spacing() -> None:
    img, mask = _frame()
    base = {"imageType": {"Original": {}}, "featureClass": {"shape2D": None}, "setting": {"binWidth": 8}}
    resampled = {**base, "setting": {"binWidth": 8, "resampledPixelSpacing": [1.0, 1.0]}}
    spacing = (0.5, 0.5)  # mm per pixel: resampling to 1 mm keeps a quarter of the pixels
    native = RadiomicsExtractor(base).extract(img, mask, spacing=spacing)
    coarse = RadiomicsExtractor(resampled).extract(img, mask, spacing=spacing)
    assert native["radiomics_original_shape2D_PixelSurface"] == pytest.approx(mask.sum() * 0.25)
    # on the 1 mm grid (a quarter of the pixels) the area in mm^2 and the contour length are kept
    assert coarse["radiomics_original_shape2D_PixelSurface"] == pytest.approx(mask.sum() * 0.25, rel=0.03)
    assert coarse["radiomics_original_shape2D_MeshSurface"] == pytest.approx(
        native["radiomics_original_shape2D_MeshSurface"], rel=0.03
    )


def test_force2d_on_a_frame_and_missing_bins_are_rejected(tmp_path: Path) -> None:
    img, mask = _frame()
    with pytest.raises(InputError, match="force2D: true on an image of size"):
        RadiomicsExtractor({"setting": {"binWidth": 8, "force2D": True}}).extract(img, mask)
    with pytest.raises(InputError, match="force2D"):
        RadiomicsExtractor({"setting": {"binWidth": 8, "force2D": True}}).extract(img[None], mask[None])
    p = tmp_path / "p.yaml"
    p.write_text("setting:\n  label: 1\n")
    with pytest.raises(InputError, match=r"p\.yaml: expected an explicit setting\.binWidth or setting\.binCount"):
        load_params(p)
    p.write_text("settings:\n  binWidth: 8\n")
    with pytest.raises(InputError, match=r"unknown keys \['settings'\]"):
        load_params(p)
    with pytest.raises(InputError, match="no such file"):
        load_params(tmp_path / "missing.yaml")


def test_bad_masks_get_clear_errors() -> None:
    img, mask = _frame()
    ex = RadiomicsExtractor({"featureClass": {"firstorder": None}, "setting": {"binWidth": 8}})
    with pytest.raises(InputError, match="mask: expected a mask with at least one region pixel, got an empty mask"):
        ex.extract(img, np.zeros_like(mask))
    with pytest.raises(InputError, match=r"mask: expected the image's shape \(256, 256\), got shape \(10, 10\)"):
        ex.extract(img, mask[:10, :10])
    one = np.zeros_like(mask)
    one[5, 5] = 1
    with pytest.raises(InputError, match="mask: expected a region pyradiomics can measure"):
        ex.extract(img, one)


def _baseline_cases() -> list[str]:
    if not BASELINE.is_dir():
        return []
    cols = {c for f in sorted(BASELINE.glob("baseline_*.csv")) for c in pd.read_csv(f, index_col=0, nrows=0).columns}
    return sorted(c for c in cols if not c.startswith("lung"))  # the lung images are not in the reference set


@pytest.mark.slow
@pytest.mark.skipif(not BASELINE.is_dir(), reason=f"{BASELINE} is absent (../shared not checked out)")
@pytest.mark.parametrize("case", _baseline_cases() or ["none"])
def test_pyradiomics_own_baselines_within_3_percent(case: str) -> None:
    expected: dict[str, float] = {}
    classes: dict[str, None] = {}
    settings = types = image = None
    for f in sorted(BASELINE.glob("baseline_*.csv")):
        df = pd.read_csv(f, index_col=0)
        if case not in df.columns or pd.isna(df.loc["diagnostics_Configuration_Settings", case]):
            continue
        classes[f.stem.removeprefix("baseline_")] = None
        settings = ast.literal_eval(df.loc["diagnostics_Configuration_Settings", case])
        types = ast.literal_eval(df.loc["diagnostics_Configuration_EnabledImageTypes", case])
        image = df.loc["diagnostics_Configuration_TestCase", case]
        col = df[case]
        for name, value in col.items():
            if not str(name).startswith("diagnostics_") and pd.notna(value):
                expected[PREFIX + str(name)] = float(value)
    if not (BASELINE / f"{image}_image.nrrd").is_file():
        pytest.skip(f"the {image} image of this baseline column is not in {BASELINE}")
    settings.setdefault("binWidth", 25)  # pyradiomics' default, on which these baselines rely
    ex = RadiomicsExtractor({"imageType": types, "featureClass": classes, "setting": settings})
    row = ex.extract(
        sitk.ReadImage(str(BASELINE / f"{image}_image.nrrd")), sitk.ReadImage(str(BASELINE / f"{image}_label.nrrd"))
    )
    missing = sorted(set(expected) - set(row))
    assert not missing, missing[:5]
    off = {
        k: (row[k], v)
        for k, v in expected.items()
        if not (abs(row[k] - v) <= 0.03 * abs(v) or (v == 0 and abs(row[k]) < 1e-9))
    }
    assert not off, f"{len(off)} of {len(expected)} values differ by 3% or more: {dict(list(off.items())[:5])}"
