"""The cohort on disk: layout, determinism, workers, frames per patient and resume."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from usher2.io.errors import InputError
from usher2.simulate import SimulationConfig, oracle_aucs, simulate_cohort

SMALL = SimulationConfig(image_size=(64, 64), fov_mm=(40.0, 40.0))


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png"))}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("cohort")
    return out, simulate_cohort(6, seed=5, out=out, config=SMALL, workers=1)


def test_layout_and_manifest(cohort) -> None:
    out, df = cohort
    on_disk = pd.read_csv(out / "manifest.csv")
    pd.testing.assert_frame_equal(on_disk, df, check_dtype=False)
    for col in (
        "case_id",
        "patient_id",
        "image",
        "mask",
        "clean",
        "label",
        "true_prob",
        "spacing_mm",
        "age",
        "tumour_size_mm",
        "ln_status",
        "er",
        "pr",
        "grade",
        "ki67",
        "trait_size_mm",
        "trait_aspect_ratio",
        "trait_orientation_deg",
        "trait_lobulation",
        "trait_spiculation",
        "trait_echogenicity_db",
        "trait_heterogeneity",
        "trait_posterior",
        "trait_halo_mm",
        "trait_calcifications",
    ):
        assert col in df.columns, col
    assert not df.isna().any().any()
    assert df["case_id"].is_unique and len(df) == 6
    assert (df["spacing_mm"] == 40.0 / 64).all()
    for _, row in df.iterrows():
        img = cv2.imread(str(out / row["image"]), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(out / row["mask"]), cv2.IMREAD_UNCHANGED)
        clean = cv2.imread(str(out / row["clean"]), cv2.IMREAD_UNCHANGED)
        assert img.shape == mask.shape == clean.shape == (64, 64)
        assert img.dtype == np.uint8 and img.ndim == 2
        assert set(np.unique(mask).tolist()) <= {0, 255} and (mask == 255).any()
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["seed"] == 5 and meta["n"] == 6
    assert SimulationConfig.from_dict(meta["config"]) == SMALL


def test_oracle_all_on_manifest(cohort) -> None:
    _, df = cohort
    from sklearn.metrics import roc_auc_score

    if df["label"].nunique() == 2:
        assert oracle_aucs(df)["all"] == roc_auc_score(df["label"], df["true_prob"])


def test_workers_and_seed(cohort, tmp_path: Path) -> None:
    out, _ = cohort
    calls: list[tuple[int, int]] = []
    simulate_cohort(6, seed=5, out=tmp_path / "w2", config=SMALL, workers=2, progress=lambda d, t: calls.append((d, t)))
    assert _files(tmp_path / "w2") == _files(out)  # same binary and CPU in the workers: byte-identical PNGs
    assert calls[-1] == (6, 6) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    simulate_cohort(6, seed=6, out=tmp_path / "s6", config=SMALL, workers=1)
    other = _files(tmp_path / "s6")
    assert other.keys() == _files(out).keys()
    assert all(other[k] != v for k, v in _files(out).items() if k.startswith("images/"))


def test_frames_per_patient_share_patient(tmp_path: Path) -> None:
    cfg = SimulationConfig(image_size=(64, 64), frames_per_patient=2)
    df = simulate_cohort(3, seed=1, out=tmp_path, config=cfg, workers=1)
    assert len(df) == 6 and df["patient_id"].nunique() == 3
    per_patient = df.groupby("patient_id")[["label", "true_prob", "age", "er", "tumour_size_mm"]].nunique()
    assert (per_patient == 1).all().all()
    a, b = (cv2.imread(str(tmp_path / p), cv2.IMREAD_UNCHANGED) for p in df["image"].iloc[:2])
    assert not np.array_equal(a, b)  # a new view and new speckle, the same lesion


def test_resume_and_config_mismatch(tmp_path: Path) -> None:
    out = tmp_path / "c"
    df = simulate_cohort(4, seed=2, out=out, config=SMALL, workers=1)
    before = _files(out)
    for key in ("image", "mask", "clean"):
        (out / df[key].iloc[2]).unlink()
    (out / df["image"].iloc[1]).unlink()  # a half-finished case is rendered again too
    (out / "manifest.csv").unlink()
    calls: list[tuple[int, int]] = []
    again = simulate_cohort(4, seed=2, out=out, config=SMALL, workers=1, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 4), (3, 4), (4, 4)]
    assert _files(out) == before
    pd.testing.assert_frame_equal(again, df)
    with pytest.raises(InputError, match="seed 3"):
        simulate_cohort(4, seed=3, out=out, config=SMALL, workers=1)
    with pytest.raises(InputError, match="image_size"):
        simulate_cohort(4, seed=2, out=out, config=SimulationConfig(image_size=(96, 96)), workers=1)


def test_config_validation_messages() -> None:
    with pytest.raises(ValueError, match=r"frames_per_patient must be an integer in \[1, 64\], got 0"):
        SimulationConfig(frames_per_patient=0)
    with pytest.raises(ValueError, match="square pixels"):
        SimulationConfig(image_size=(64, 128), fov_mm=(40.0, 40.0))
    with pytest.raises(ValueError, match=">= 6"):
        SimulationConfig(axial_oversample=2)
