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
    ProstateLabelModel,
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
    # Worker processes run the same binary on the same CPU: the files are byte-identical (across CPUs they are not,
    # see _BREAST_IMAGE_SUMS).
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


# --- breast outputs unchanged by the prostate variant and HER2-low ----------------------------------

# From the code before ``anatomy`` and ``her2_low`` existed (these outputs reproduce the file SHA-256s pinned
# then). Only data exact by construction is hashed:
# integers, text and masks. Floats are compared with a tolerance derived from their precision, because the same
# code gives other last bits on another CPU: numpy's SIMD exp/log differ between AVX-512 and AVX2, and
# OpenBLAS picks its kernels by CPU (the ADC is a BLAS least-squares slope).
#
# Masks (uint8): SHA-256 of the decoded voxels. A voxel is inside when a float32 radius is below 1, so it could
# only flip if it sat within float32 rounding (~1e-7) of the lesion surface; these masks match across CPUs.
_BREAST_MASK_SHA256 = {
    "masks/mri_000000.nii.gz": "12893b440f57ce212fdf6b755c3f8879accbb7fe7b209f26ebdd9bb387ce86a0",
    "masks/mri_000001.nii.gz": "37cf4b1b457b81b0d7eb05ef23af71ca30573a30b331444ef8077a76c2ccd1de",
}
# Intensity volumes hold rint(1000 * float32 signal) as int16: (voxels, sum, sum of squares) of the decoded voxels.
_BREAST_IMAGE_SUMS = {
    "adc/mri_000000.nii.gz": (8192, 8022671, 11957010865),
    "adc/mri_000001.nii.gz": (8192, 6157442, 7578700798),
    "dce/mri_000000.nii.gz": (49152, 9559734, 2973480280),
    "dce/mri_000001.nii.gz": (49152, 6588000, 1301577976),
    "dwi_b0/mri_000000.nii.gz": (8192, 2701981, 1349993801),
    "dwi_b0/mri_000001.nii.gz": (8192, 1724110, 622261400),
    "dwi_b800/mri_000000.nii.gz": (8192, 893614, 133044420),
    "dwi_b800/mri_000001.nii.gz": (8192, 713998, 82836488),
    "t1/mri_000000.nii.gz": (8192, 3480060, 2251649840),
    "t1/mri_000001.nii.gz": (8192, 4734951, 4023916833),
    "t2/mri_000000.nii.gz": (8192, 2378826, 1005633952),
    "t2/mri_000001.nii.gz": (8192, 3021350, 1598511116),
}
# The cohort's manifest.csv without true_prob (ints, strings and values rounded to 1-3 decimals), then true_prob.
_BREAST_MANIFEST_SHA256 = "60230979ec6c93ee60dea489a69bf203677d286bea493c405e5cb210e6ae8ccb"
_BREAST_MANIFEST_TRUE_PROB = [0.479733449341699, 0.3448107852746753]
# simulate_mri_labels(5000, seed=2) without true_prob: SHA-256 of its pandas row hashes; then true_prob's
# mean, standard deviation and rows 0, 1, 2 and 4999.
_BREAST_LABELS_SHA256 = "8269913c69c128a98bd22ff7baa8900a2bc7de3db8d1a1c670fe9f0e6a7b6627"
_BREAST_LABELS_TRUE_PROB = {
    "mean": 0.3080530649126302,
    "std": 0.27633075689323167,
    "rows": [0.27878840636516367, 0.1902010251889831, 0.04472208453253262, 0.5817502977470735],
}
# true_prob is expit of a float64 sum of ~11 terms, one through np.log: a few ulp per term give a relative error
# below 1e-14 (1 ulp on 1 of the 5000 rows between numpy's AVX-512 and AVX2 log). 1e-12 leaves a 100x margin and
# still fails on any change of a coefficient or a draw.
_TRUE_PROB_RTOL = 1e-12


def test_breast_outputs_unchanged(tmp_path: Path) -> None:
    man = simulate_mri_cohort(2, seed=5, out_dir=tmp_path, config=TINY)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.nii.gz"))
    assert files == sorted([*_BREAST_MASK_SHA256, *_BREAST_IMAGE_SUMS])
    for rel in files:
        img = sitk.ReadImage(str(tmp_path / rel))
        assert img.GetSpacing()[:3] == (3.0, 3.0, 6.0) and img.GetOrigin()[:3] == (0.0, 0.0, 0.0), rel
        voxels = sitk.GetArrayFromImage(img)
        if rel in _BREAST_MASK_SHA256:
            assert voxels.dtype == np.uint8 and voxels.shape == (8, 32, 32), rel
            assert hashlib.sha256(np.ascontiguousarray(voxels).tobytes()).hexdigest() == _BREAST_MASK_SHA256[rel], rel
            continue
        assert voxels.dtype == np.int16, rel
        v = voxels.astype(np.int64)
        n, want_sum, want_sq = _BREAST_IMAGE_SUMS[rel]
        # A few float32 ulps (eps 1.2e-7) on signals below 4 move 1000 * signal by < 1e-3, so a voxel changes by at
        # most 1 and only when it sits that close to a half-integer: 1 of the 106,496 voxels here does between
        # AVX-512 and AVX2 OpenBLAS. Allow 1 in 1000 voxels to move by 1; a change of the image model moves these
        # sums by thousands.
        flips = n // 1000
        assert v.size == n, rel
        assert abs(int(v.sum()) - want_sum) <= flips, (rel, int(v.sum()))
        assert abs(int((v * v).sum()) - want_sq) <= flips * (2 * int(np.abs(v).max()) + 1), (rel, int((v * v).sum()))
    old = man.drop(columns=["her2_low", "her2_low_prob"])
    csv = old.drop(columns=["true_prob"]).to_csv(index=False)
    assert hashlib.sha256(csv.encode()).hexdigest() == _BREAST_MANIFEST_SHA256
    np.testing.assert_allclose(old["true_prob"], _BREAST_MANIFEST_TRUE_PROB, rtol=_TRUE_PROB_RTOL, atol=0)
    labels = simulate_mri_labels(5000, seed=2).drop(columns=["her2_low", "her2_low_prob"])
    # label is rng.random() < true_prob and dfs_* come from np.exp(eta) rounded to 0.1 month: they could only
    # differ across CPUs if a uniform draw or a time sat within ~1e-15 of the threshold, so they are hashed.
    row_hashes = pd.util.hash_pandas_object(labels.drop(columns=["true_prob"]), index=True).to_numpy().tobytes()
    assert hashlib.sha256(row_hashes).hexdigest() == _BREAST_LABELS_SHA256
    p = labels["true_prob"]
    want = _BREAST_LABELS_TRUE_PROB
    got = [p.mean(), p.std(), *p.iloc[[0, 1, 2, 4999]]]
    np.testing.assert_allclose(got, [want["mean"], want["std"], *want["rows"]], rtol=_TRUE_PROB_RTOL, atol=0)
    assert MRIPhantomConfig().sequences == ("t1", "t2", "dce", "adc")
    assert MRIPhantomConfig().label_model == MRILabelModel() and MRIPhantomConfig().anatomy == "breast"


# --- HER2-low among the negatives -------------------------------------------------------------------


def test_her2_low_only_for_negatives_and_calibrated() -> None:
    df = simulate_mri_labels(20000, seed=0)
    pos, neg = df[df.label == 1], df[df.label == 0]
    assert pos["her2_low"].isna().all() and pos["her2_low_prob"].isna().all()
    assert neg["her2_low"].isin([0.0, 1.0]).all() and neg["her2_low_prob"].between(0, 1).all()
    p, n = neg["her2_low_prob"].mean(), len(neg)
    assert abs(neg["her2_low"].mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert 0.55 < neg["her2_low"].mean() < 0.75
    er = neg["er"] == 1
    assert neg.loc[er, "her2_low"].mean() > neg.loc[~er, "her2_low"].mean() + 0.1
    plateau = neg["trait_curve_type"] == 1
    assert neg.loc[plateau, "her2_low"].mean() > neg.loc[~plateau, "her2_low"].mean() + 0.1
    pd.testing.assert_frame_equal(simulate_mri_labels(100, seed=0), df.iloc[:100])
    aucs = mri_oracle_aucs(df, task="her2_low")
    assert aucs == mri_oracle_aucs(df, task="low")
    assert aucs["all"] == roc_auc_score(neg["her2_low"], neg["her2_low_prob"])
    assert 0.5 < aucs["clinical"] < aucs["all"] and 0.5 < aucs["image"] < aucs["all"]
    assert aucs == pytest.approx({"clinical": 0.640, "image": 0.695, "all": 0.747}, abs=0.02)
    # The subset oracle is the Bayes score among the negatives: it is calibrated there.
    score = mri_oracle_scores(neg, "clinical", task="her2_low")
    assert abs(score.mean() - neg["her2_low"].mean()) < 4 * math.sqrt(p * (1 - p) / n)
    with pytest.raises(ValueError, match="task"):
        mri_oracle_aucs(df, task="er")
    with pytest.raises(ValueError, match="breast"):
        mri_oracle_aucs(df, MRIPhantomConfig(anatomy="prostate"), task="her2_low")


# --- prostate ---------------------------------------------------------------------------------------

PROSTATE = MRIPhantomConfig(anatomy="prostate", shape_zyx=(20, 64, 64), spacing_zyx_mm=(3.0, 1.5, 1.5))
PROSTATE_TINY = MRIPhantomConfig(
    anatomy="prostate", shape_zyx=(8, 32, 32), spacing_zyx_mm=(6.0, 3.0, 3.0), sequences=("t1", "t2", "adc", "dwi")
)


def test_prostate_config() -> None:
    cfg = MRIPhantomConfig(anatomy="prostate")
    assert cfg.sequences == ("t2", "adc", "dwi") and cfg.label_model == ProstateLabelModel()
    assert cfg.volume_keys() == ("t2", "adc", "dwi_b0", "dwi_b800") and cfg.to_dict()["anatomy"] == "prostate"
    with pytest.raises(ValueError, match="no DCE"):
        MRIPhantomConfig(anatomy="prostate", sequences=("t2", "dce"))
    with pytest.raises(ValueError, match="anatomy"):
        MRIPhantomConfig(anatomy="knee")
    with pytest.raises(ValueError, match="ProstateLabelModel"):
        MRIPhantomConfig(anatomy="prostate", label_model=MRILabelModel())
    with pytest.raises(ValueError, match="MRILabelModel"):
        MRIPhantomConfig(label_model=ProstateLabelModel())
    with pytest.raises(ValueError, match="beta_psa"):
        ProstateLabelModel(beta_psa=float("nan"))


def test_prostate_cohort_files_and_columns(tmp_path: Path) -> None:
    df = simulate_mri_cohort(3, seed=4, out_dir=tmp_path, config=PROSTATE_TINY)
    keys = ["t1", "t2", "adc", "dwi_b0", "dwi_b800", "mask"]
    assert list(df.columns[:8]) == ["case_id", "patient_id", *keys]
    want = ["label", "true_prob", "age", "psa", "isup", "prostate_volume_ml", "tumour_size_mm", "trait_size_mm"]
    assert set(want) | {"trait_lobulation", "trait_adc", "trait_t2_contrast", "dfs_time", "dfs_event"} <= set(df)
    assert not {"er", "menopausal", "trait_curve_type", "her2_low", "dce"} & set(df)
    assert df["isup"].between(1, 5).all() and df["isup"].dtype == np.int64
    on_disk = pd.read_csv(tmp_path / "manifest.csv")
    pd.testing.assert_frame_equal(on_disk, df, check_dtype=False)
    for _, row in on_disk.iterrows():
        for k in keys:
            assert (tmp_path / row[k]).is_file()
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / on_disk.loc[0, "mask"])))
    adc = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / on_disk.loc[0, "adc"])))
    assert mask.shape == (8, 32, 32) and mask.sum() > 0 and adc.dtype == np.int16
    before = _hashes(tmp_path)
    again = simulate_mri_cohort(3, seed=4, out_dir=tmp_path, config=PROSTATE_TINY)
    assert again.attrs["reused"] == 3 and _hashes(tmp_path) == before
    with pytest.raises(InputError, match="anatomy"):
        simulate_mri_cohort(3, seed=4, out_dir=tmp_path, config=dataclasses.replace(TINY, sequences=("t2",)))


def test_prostate_traits_show_in_the_images() -> None:
    rows = simulate_mri_labels(20, seed=11, config=PROSTATE)
    voxel_mm3 = math.prod(PROSTATE.spacing_zyx_mm)
    got: dict[str, list[float]] = {k: [] for k in ("diam", "adc", "t2", "gland")}
    for i, row in rows.iterrows():
        a = simulate_mri_case(np.random.default_rng(100 + i), PROSTATE, row=row.to_dict())
        if i == 0:
            b = simulate_mri_case(np.random.default_rng(100), PROSTATE, row=row.to_dict())
            assert all(np.array_equal(a.volumes[k], b.volumes[k]) for k in a.volumes)
            assert a.volumes.keys() == {"t2", "adc", "dwi_b0", "dwi_b800"} and not a.edema.any()
        m = a.mask.astype(bool)
        assert a.gland is not None and (m & a.gland).sum() > 0.5 * m.sum()  # the lesion sits in the gland
        got["diam"].append(2 * (3 * m.sum() * voxel_mm3 / (4 * math.pi)) ** (1 / 3))
        got["adc"].append(float(a.volumes["adc"][m].mean()))
        got["t2"].append(float(np.median(a.volumes["t2"][m])))
        got["gland"].append(float(a.gland.sum() * voxel_mm3 / 1000))
    assert spearmanr(rows["trait_size_mm"], got["diam"])[0] > 0.8
    assert spearmanr(rows["trait_adc"], got["adc"])[0] > 0.8
    assert spearmanr(rows["trait_t2_contrast"], got["t2"])[0] < -0.8  # higher contrast, darker lesion
    assert spearmanr(rows["prostate_volume_ml"], got["gland"])[0] > 0.9
    case = simulate_mri_case(3, PROSTATE)
    assert {"psa", "isup", "prostate_volume_ml"} <= set(case.clinical) and "trait_t2_contrast" in case.traits


def test_prostate_labels_calibrated_and_oracle() -> None:
    df = simulate_mri_labels(20000, seed=0, config=PROSTATE)
    p, n = df["true_prob"].mean(), len(df)
    assert abs(df["label"].mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert 0.3 < df["label"].mean() < 0.5
    assert df["psa"].between(1, 100).all() and set(df["isup"]) == {1, 2, 3, 4, 5}
    assert df.loc[df.label == 1, "trait_adc"].mean() < df.loc[df.label == 0, "trait_adc"].mean()
    pd.testing.assert_frame_equal(simulate_mri_labels(100, seed=0, config=PROSTATE), df.iloc[:100])
    aucs = mri_oracle_aucs(df, PROSTATE)
    assert aucs["all"] == roc_auc_score(df["label"], df["true_prob"])
    assert 0.5 < aucs["clinical"] < aucs["all"] and 0.5 < aucs["image"] < aucs["all"]
    assert aucs == pytest.approx({"clinical": 0.722, "image": 0.774, "all": 0.863}, abs=0.015)
    np.testing.assert_allclose(mri_oracle_scores(df.iloc[:50], "all", PROSTATE), df["true_prob"].iloc[:50])
    row = {
        "age": 73,
        "psa": 7.0,
        "isup": 3.68,
        "prostate_volume_ml": 45.0,
        "tumour_size_mm": 14.0,
        "trait_lobulation": 0.375,
        "trait_adc": 0.8,
        "trait_t2_contrast": 0.45,
    }
    eta = -0.55 + 0.25 * 1.0 + 0.90 * 1.0 - 1.10 * (-1.0)
    assert logit(mri_oracle_scores(pd.DataFrame([row]), "all", ProstateLabelModel())[0]) == pytest.approx(eta)
    with pytest.raises(KeyError, match="prostate"):
        mri_oracle_scores(df, "er", PROSTATE)
