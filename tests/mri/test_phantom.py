"""Synthetic MRI phantoms: determinism, files and manifest, traits visible in the images, labels, survival."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy.special import logit
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from usher2.io.errors import InputError
from usher2.mri.phantom import (
    MRILabelModel,
    MRIPhantomConfig,
    mri_oracle_aucs,
    mri_oracle_scores,
    simulate_mri_case,
    simulate_mri_cohort,
    simulate_mri_labels,
)

TINY = MRIPhantomConfig(
    shape_zyx=(8, 32, 32), spacing_zyx_mm=(6.0, 3.0, 3.0), sequences=("t1", "t2", "dce", "adc", "dwi")
)
SMALL = MRIPhantomConfig(shape_zyx=(20, 64, 64), spacing_zyx_mm=(3.0, 1.5, 1.5))


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "simulation.json"
    }


# --- config ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape_zyx": (4, 64, 64)}, "shape_zyx"),
        ({"spacing_zyx_mm": (3.0, 0.0, 1.0)}, "spacing_zyx_mm"),
        ({"sequences": ("t1", "flair")}, "sequences"),
        ({"dce_times_s": (0.0, 60.0, 60.0)}, "dce_times_s"),
        ({"early_time_s": 500.0}, "early_time_s"),
        ({"b_values": (800.0,)}, "b_values"),
        ({"noise": -0.1}, "noise"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MRIPhantomConfig(**kwargs)


def test_config_geometry_and_keys() -> None:
    assert MRIPhantomConfig().fov_zyx_mm == (72.0, 96.0, 96.0)
    assert MRIPhantomConfig().early_index == 2  # 120 s
    assert TINY.volume_keys() == ("t1", "t2", "dce", "adc", "dwi_b0", "dwi_b800")


# --- one case ----------------------------------------------------------------------------------------


def test_case_is_deterministic_and_shaped() -> None:
    a, b = simulate_mri_case(7, SMALL), simulate_mri_case(7, SMALL)
    c = simulate_mri_case(8, SMALL)
    assert a.volumes.keys() == b.volumes.keys() == {"t1", "t2", "dce", "adc"}
    for k in a.volumes:
        np.testing.assert_array_equal(a.volumes[k], b.volumes[k])
        assert a.volumes[k].dtype == np.float32
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.traits == b.traits and a.clinical == b.clinical
    assert not np.array_equal(a.volumes["t2"], c.volumes["t2"])
    assert a.volumes["dce"].shape == (6, 20, 64, 64) and a.mask.shape == (20, 64, 64)
    assert a.mask.dtype == np.uint8 and set(np.unique(a.mask).tolist()) == {0, 1}


def test_traits_show_in_the_images() -> None:
    rows = simulate_mri_labels(30, seed=11, config=SMALL)
    voxel_mm3 = math.prod(SMALL.spacing_zyx_mm)
    got: dict[str, list[float]] = {k: [] for k in ("diam", "adc", "bright", "rim_t2", "bg_t2", "wash_in")}
    for i, row in rows.iterrows():
        case = simulate_mri_case(np.random.default_rng(100 + i), SMALL, row=row.to_dict())
        m = case.mask.astype(bool)
        t2, dce = case.volumes["t2"], case.volumes["dce"]
        got["diam"].append(2 * (3 * m.sum() * voxel_mm3 / (4 * math.pi)) ** (1 / 3))
        got["adc"].append(float(case.volumes["adc"][m].mean()))
        got["bright"].append(float(((t2 > 0.8) & ~m).sum() * voxel_mm3))  # T2-bright tissue outside the lesion
        if case.edema.any():
            got["rim_t2"].append(float(t2[case.edema].mean()))
            got["bg_t2"].append(float(t2[(dce[0] > 0.05) & ~m & ~case.edema].mean()))
        got["wash_in"].append(float((dce[2][m] / dce[0][m]).mean()))
    assert spearmanr(rows["trait_size_mm"], got["diam"])[0] > 0.8
    assert spearmanr(rows["trait_adc"], got["adc"])[0] > 0.8
    assert spearmanr(rows["trait_edema_mm"], got["bright"])[0] > 0.8
    assert spearmanr(rows["trait_peak_enhancement_pct"], got["wash_in"])[0] > 0.8
    assert np.all(np.array(got["rim_t2"]) > 1.5 * np.array(got["bg_t2"]))
    adc = np.array(got["adc"])
    restricted = rows["trait_adc"].to_numpy() < 1.0
    assert restricted.any() and (~restricted).any()
    assert adc[restricted].max() < adc[~restricted].mean()
    # No oedema, no T2-bright tissue beyond the noise.
    no_edema = rows["trait_edema_mm"].to_numpy() == 0
    assert np.all(np.array(got["bright"])[no_edema] < 10 * voxel_mm3)


# --- cohort on disk ----------------------------------------------------------------------------------


def test_cohort_files_manifest_and_bytes(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    df = simulate_mri_cohort(3, seed=4, out_dir=tmp_path / "a", config=TINY, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (3, 3)
    keys = ["t1", "t2", "dce", "adc", "dwi_b0", "dwi_b800", "mask"]
    assert list(df.columns[:9]) == ["case_id", "patient_id", *keys]
    for col in ("label", "true_prob", "dce_times_s", "age", "menopausal", "er", "pr", "grade", "ki67"):
        assert col in df
    assert {"trait_size_mm", "trait_curve_type", "trait_edema_mm", "trait_adc", "dfs_time", "dfs_event"} <= set(df)
    on_disk = pd.read_csv(tmp_path / "a" / "manifest.csv")
    pd.testing.assert_frame_equal(on_disk, df, check_dtype=False)
    assert on_disk.loc[0, "dce_times_s"] == "0;60;120;180;300;420"
    for _, row in on_disk.iterrows():
        for k in keys:
            assert (tmp_path / "a" / row[k]).is_file()
    dce = sitk.ReadImage(str(tmp_path / "a" / on_disk.loc[0, "dce"]))
    assert dce.GetSize() == (32, 32, 8, 6) and dce.GetSpacing()[:3] == (3.0, 3.0, 6.0)
    adc = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / on_disk.loc[0, "adc"])))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / on_disk.loc[0, "mask"])))
    assert adc.dtype == np.int16 and mask.dtype == np.uint8 and mask.shape == (8, 32, 32)
    # The files hold round(1000 * signal) of the in-memory case: ADC in 10^-6 mm²/s.
    assert abs(np.median(adc[mask > 0]) - 1000 * on_disk.loc[0, "trait_adc"]) < 150

    simulate_mri_cohort(3, seed=4, out_dir=tmp_path / "b", config=TINY, workers=2)
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")


def test_cohort_resumes_and_refuses_other_settings(tmp_path: Path) -> None:
    first = simulate_mri_cohort(2, seed=1, out_dir=tmp_path, config=TINY)
    before = _hashes(tmp_path)
    (tmp_path / "t2" / "mri_000001.nii.gz").unlink()  # as if killed mid-case
    again = simulate_mri_cohort(3, seed=1, out_dir=tmp_path, config=TINY)
    assert again.attrs == {"rendered": 2, "reused": 1}
    pd.testing.assert_frame_equal(again.iloc[:2], first)
    after = _hashes(tmp_path)
    assert all(after[k] == v for k, v in before.items() if k != "manifest.csv")
    with pytest.raises(InputError, match="seed 1"):
        simulate_mri_cohort(2, seed=2, out_dir=tmp_path, config=TINY)
    with pytest.raises(InputError, match="noise"):
        simulate_mri_cohort(2, seed=1, out_dir=tmp_path, config=dataclasses.replace(TINY, noise=0.05))


# --- labels, oracle, survival ------------------------------------------------------------------------


def test_label_model_by_hand() -> None:
    row = {
        "age": 63,
        "tumour_size_mm": 20.0,
        "er": 0,
        "pr": 1,
        "grade": 3,
        "ki67": 27,
        "trait_lobulation": 0.375,
        "trait_curve_type": 2,
        "trait_peak_enhancement_pct": 130.0,
        "trait_edema_mm": 1.5,
        "trait_adc": 0.9,
    }
    eta = -0.10 - 0.40 * 1.0 - 0.60 + 0.70 + 0.90 * (2 - 0.95) / 0.805 - 0.80 * (-1.0)
    got = mri_oracle_scores(pd.DataFrame([row]), "all")
    assert logit(got[0]) == pytest.approx(eta)


def test_labels_prevalence_oracle_and_traits() -> None:
    df = simulate_mri_labels(20000, seed=0)
    assert 0.28 < df["label"].mean() < 0.32
    pd.testing.assert_frame_equal(simulate_mri_labels(100, seed=0), df.iloc[:100])  # rows do not depend on n
    washout = df["trait_curve_type"] == 2
    assert washout[df.label == 1].mean() > washout[df.label == 0].mean() + 0.15
    assert df.loc[df.label == 1, "trait_adc"].mean() < df.loc[df.label == 0, "trait_adc"].mean()
    aucs = mri_oracle_aucs(df)
    assert aucs["all"] == roc_auc_score(df["label"], df["true_prob"])
    assert 0.5 < aucs["clinical"] < aucs["all"] and 0.5 < aucs["image"] < aucs["all"]
    assert aucs == pytest.approx({"clinical": 0.713, "image": 0.788, "all": 0.858}, abs=0.015)
    # A stronger model gives a higher oracle AUC.
    strong = MRIPhantomConfig(label_model=MRILabelModel(beta_trait_adc=-2.0))
    assert mri_oracle_aucs(simulate_mri_labels(20000, 0, strong), strong)["image"] > aucs["image"] + 0.03


def test_survival_follows_true_risk() -> None:
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    df = simulate_mri_labels(400, seed=3)
    high = df["true_prob"] > df["true_prob"].median()
    res = logrank_test(
        df.loc[high, "dfs_time"], df.loc[~high, "dfs_time"], df.loc[high, "dfs_event"], df.loc[~high, "dfs_event"]
    )
    assert res.p_value < 0.05
    km_high = KaplanMeierFitter().fit(df.loc[high, "dfs_time"], df.loc[high, "dfs_event"])
    km_low = KaplanMeierFitter().fit(df.loc[~high, "dfs_time"], df.loc[~high, "dfs_event"])
    assert km_high.predict(48.0) < km_low.predict(48.0)
    assert df.loc[high, "dfs_time"].median() < df.loc[~high, "dfs_time"].median()
    assert set(df["dfs_event"].unique()) == {0, 1} and df["dfs_time"].between(0.1, 84).all()
    # Survival has its own stream: turning it off leaves every other column unchanged.
    off = simulate_mri_labels(400, seed=3, config=MRIPhantomConfig(survival=False))
    pd.testing.assert_frame_equal(off, df.drop(columns=["dfs_time", "dfs_event"]))
