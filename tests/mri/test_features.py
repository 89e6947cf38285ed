"""The MRI feature table: names, derivable values, kinetics, failures, resume, ADC from DWI, deep, ICC."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from usher2.mri.features import MRIExtractConfig, extract_mri_cohort, mri_case_features
from usher2.mri.manifest import read_mri_manifest
from usher2.mri.phantom import MRIPhantomConfig, simulate_mri_cohort

FAST = {"spacing": (1.0, 1.0, 3.0), "register": False}  # the phantom's own grid: no upsampling


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mri")
    cfg = MRIPhantomConfig(shape_zyx=(12, 48, 48), sequences=("t1", "t2", "dce", "adc", "dwi"), noise=0.01)
    simulate_mri_cohort(5, 3, out, config=cfg)
    return out / "manifest.csv"


def test_columns_are_named_per_sequence_and_kinetics_match_the_phantom(cohort: Path, tmp_path: Path) -> None:
    cfg = MRIExtractConfig(sequences=("t2", "adc", "dce_p3"), spacing=(1.0, 1.0, 3.0))  # registration on
    res = extract_mri_cohort(cohort, tmp_path / "f.parquet", cfg)
    t = res.table
    assert res.failures.empty and len(t) == 5
    assert list(t.columns[:4]) == ["case_id", "patient_id", "label", "mri_flags"]
    feats = t.columns[4:]
    for seq in ("t2", "adc", "dce_p3"):
        assert f"{seq}_radiomics_original_firstorder_Mean" in feats
        assert f"{seq}_radiomics_original_shape_MeshVolume" in feats
        assert f"{seq}_radiomics_original_glcm_Contrast" in feats
        assert f"{seq}_radiomics_peritumoral_original_firstorder_Mean" in feats
    dice = t[[f"{seq}_radiomics_morphology_EllipsoidDice" for seq in ("t2", "adc", "dce_p3")]]
    assert (dice.nunique(axis=1) == 1).all() and dice.gt(0.5).all().all() and dice.le(1).all().all()  # one mask
    assert all(c.startswith(("t2_radiomics_", "adc_radiomics_", "dce_p3_radiomics_", "dce_kinetics_")) for c in feats)
    truth = pd.read_csv(cohort)["trait_curve_type"].to_numpy()
    assert (t["dce_kinetics_curve_type"].to_numpy() == truth).mean() >= 0.8
    assert Path(res.paths["provenance"]).is_file() and Path(res.paths["failures"]).is_file()
    again = extract_mri_cohort(cohort, tmp_path / "f.parquet", cfg)  # resume: nothing recomputed
    assert again.computed == 0
    pd.testing.assert_frame_equal(again.table, t)


def test_values_are_derivable_from_a_constant_ellipsoid(tmp_path: Path) -> None:
    z, y, x = np.mgrid[:24, :64, :64].astype(float)
    lesion = ((z - 12) / 6) ** 2 + ((y - 32) / 10) ** 2 + ((x - 30) / 8) ** 2 <= 1
    body = 100.0 + np.random.default_rng(0).normal(0, 5, z.shape)
    vol = np.where(lesion, 500.0, body).astype(np.float32)
    for name, arr in (("t2", vol), ("mask", lesion.astype(np.uint8))):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((1.0, 1.0, 1.0))
        sitk.WriteImage(img, str(tmp_path / f"{name}.nii.gz"))
    case = read_mri_manifest(
        pd.DataFrame({"case_id": ["c"], "t2": ["t2.nii.gz"], "mask": ["mask.nii.gz"]}), base=tmp_path
    ).iloc[0]
    cfg = MRIExtractConfig(sequences=("t2",), spacing=None, normalise=False, peritumoral_mm=2.0)
    row = mri_case_features(case, cfg)
    assert row["t2_radiomics_original_firstorder_Mean"] == pytest.approx(500.0, rel=1e-6)
    true_volume = 4 / 3 * math.pi * 6 * 10 * 8
    assert row["t2_radiomics_original_shape_VoxelVolume"] == pytest.approx(true_volume, rel=0.03)
    assert row["t2_radiomics_original_shape_MeshVolume"] == pytest.approx(true_volume, rel=0.05)
    assert row["t2_radiomics_peritumoral_original_firstorder_Mean"] == pytest.approx(100.0, abs=2.0)
    assert row["t2_radiomics_morphology_EllipsoidDice"] == pytest.approx(1.0, abs=0.03)  # an ellipsoid fits itself
    off = mri_case_features(case, MRIExtractConfig(sequences=("t2",), spacing=None, normalise=False, morphology=False))
    assert not any("morphology" in k for k in off)
    assert row["mri_flags"] == ""


def test_bad_cases_are_reported_and_the_others_go_on(cohort: Path, tmp_path: Path) -> None:
    df = read_mri_manifest(cohort)
    df.loc[1, "t2"] = str(tmp_path / "missing.nii.gz")
    empty = sitk.ReadImage(df.loc[2, "mask"]) * 0
    sitk.WriteImage(empty, str(tmp_path / "empty.nii.gz"))
    df.loc[2, "mask"] = str(tmp_path / "empty.nii.gz")
    nan = sitk.GetArrayFromImage(sitk.ReadImage(df.loc[3, "adc"])).astype(np.float32)
    nan[0, 0, 0] = np.nan
    img = sitk.GetImageFromArray(nan)
    img.CopyInformation(sitk.ReadImage(df.loc[3, "adc"]))
    sitk.WriteImage(img, str(tmp_path / "nan.nrrd"))
    df.loc[3, "adc"] = str(tmp_path / "nan.nrrd")
    res = extract_mri_cohort(df, tmp_path / "f.parquet", MRIExtractConfig(sequences=("t2", "adc"), **FAST))
    assert res.table["case_id"].tolist() == [df.loc[0, "case_id"], df.loc[4, "case_id"]]
    assert res.failed_cases == sorted(df.loc[1:3, "case_id"])
    errors = dict(zip(res.failures["case_id"], res.failures["error"], strict=True))
    assert "missing.nii.gz" in errors[df.loc[1, "case_id"]]
    assert "empty mask" in errors[df.loc[2, "case_id"]]
    assert "NaN" in errors[df.loc[3, "case_id"]]
    assert pd.read_csv(res.paths["failures"]).shape == (3, 3)


def test_runs_are_deterministic_and_workers_agree(cohort: Path, tmp_path: Path) -> None:
    cfg = MRIExtractConfig(sequences=("t2", "dce"), chunk_size=2, **FAST)
    a = extract_mri_cohort(cohort, tmp_path / "a.parquet", cfg).table
    b = extract_mri_cohort(cohort, tmp_path / "b.parquet", cfg, workers=2).table
    pd.testing.assert_frame_equal(a, b)
    assert "dce_radiomics_original_firstorder_Mean" in a  # the subtraction image


def test_adc_from_dwi_matches_the_manifest_adc(cohort: Path) -> None:
    df = read_mri_manifest(cohort)
    cfg = MRIExtractConfig(sequences=("adc",), normalise=False, peritumoral_mm=0, kinetics=False, **FAST)
    given = mri_case_features(df.iloc[0], cfg)
    fitted = mri_case_features(df.drop(columns=["adc"]).iloc[0], cfg)
    key = "adc_radiomics_original_firstorder_Median"
    assert fitted[key] == pytest.approx(given[key], rel=0.03)


def test_deep_25d_columns(cohort: Path) -> None:
    df = read_mri_manifest(cohort)
    cfg = MRIExtractConfig(
        sequences=("t2", "adc"),
        backbones=("resnet18=random",),
        deep_sequences=("t2",),
        deep_input_size=32,
        peritumoral_mm=0,
        **FAST,
    )
    row = mri_case_features(df.iloc[0], cfg)
    deep = [c for c in row if "_deep_" in c]
    assert deep == [f"t2_deep_resnet18_{i}" for i in range(512)]
    assert np.isfinite([row[c] for c in deep]).all()
    assert row == mri_case_features(df.iloc[0], cfg)


def test_perturbation_table(cohort: Path, tmp_path: Path) -> None:
    df = read_mri_manifest(cohort).iloc[:2]
    cfg = MRIExtractConfig(sequences=("t2",), perturbations=("erode", "dilate", "shift", "noise"), **FAST)
    res = extract_mri_cohort(df, tmp_path / "f.parquet", cfg)
    p = res.perturbations
    assert p is not None and len(p) == 2 * 5
    assert set(p["perturbation"]) == {"original", "erode", "dilate", "shift", "noise"}
    feats = [c for c in res.table.columns if c not in ("case_id", "patient_id", "label", "mri_flags")]
    assert list(p.columns) == ["case_id", "perturbation", *feats]
    orig = p[p["perturbation"] == "original"].set_index("case_id")[feats]
    pd.testing.assert_frame_equal(orig, res.table.set_index("case_id")[feats], check_names=False)
    assert Path(res.paths["perturbations"]).is_file()


def test_perturbations_of_a_share_of_the_cases(cohort: Path, tmp_path: Path) -> None:
    from usher2.mri.features import perturbed

    df = read_mri_manifest(cohort)
    cfg = MRIExtractConfig(sequences=("t2",), perturbations=("noise",), perturb_fraction=0.5, radiomics=None, **FAST)
    chosen = [c for c in df["case_id"] if perturbed(cfg, c)]
    assert 0 < len(chosen) < len(df)  # seed 0 picks some of the five phantoms, not all
    res = extract_mri_cohort(df, tmp_path / "f.parquet", cfg)
    assert len(res.table) == len(df)
    assert sorted(res.perturbations["case_id"].unique()) == sorted(chosen)
    assert len(res.perturbations) == 2 * len(chosen)
    assert MRIExtractConfig(perturbations=("noise",)).digest() != cfg.digest()
    # settings at their "off" value stay out of the digest, so runs from before they existed resume
    plain = MRIExtractConfig(morphology=False)
    assert "morphology" not in plain.to_dict() and "perturb_fraction" not in plain.to_dict()
    assert MRIExtractConfig().digest() != plain.digest()
    assert MRIExtractConfig(radiomics=False, backbones=("resnet18=random",)).to_dict().get("morphology") is None
    with pytest.raises(Exception, match="perturb_fraction"):
        MRIExtractConfig(perturbations=("noise",), perturb_fraction=0)
