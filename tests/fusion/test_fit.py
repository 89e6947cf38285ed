"""``usher2 fit`` as a function (usher2.fusion.fit): a separable cohort gives AUC 1.0 and a bundle of the
table's columns; the join, the augmentation copies and the robustness record follow the module's rules.

The CLI, tracking and mask-robustness variants are tested in ``tests/test_cli_fit.py``,
``tests/test_tracking.py`` and ``test_mask_robustness.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from usher2.fusion.fit import FitResult, augmentation_rows, fit_cohort, mask_robustness
from usher2.io.errors import InputError

FAST = {"family": "radiomics", "outer_folds": 3, "inner_folds": 2, "calibration": None, "selection": {"lasso_cv": 3}}


def _separable(n: int = 30) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``radiomics_a`` = 3 * label + U(0, 1): every positive above every negative; ``radiomics_b`` noise."""
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], n // 2)
    ids = [f"c{i:02d}" for i in range(n)]
    features = pd.DataFrame(
        {"case_id": ids, "radiomics_a": 3.0 * y + rng.uniform(0, 1, n), "radiomics_b": rng.normal(size=n)}
    )
    manifest = pd.DataFrame({"case_id": ids, "patient_id": ids, "label": y})
    return features, manifest


@pytest.fixture(scope="module")
def separable_fit(tmp_path_factory: pytest.TempPathFactory) -> tuple[FitResult, pd.DataFrame]:
    features, manifest = _separable()
    # two more manifest cases without a label, one feature row without a manifest case: neither is used
    extra = pd.DataFrame({"case_id": ["u1", "u2"], "patient_id": ["u1", "u2"], "label": [np.nan, np.nan]})
    features = pd.concat(
        [features, pd.DataFrame({"case_id": ["u1", "u2", "orphan"], "radiomics_a": 0.0, "radiomics_b": 0.0})]
    )
    out = tmp_path_factory.mktemp("fit") / "bundle"
    return fit_cohort(features, pd.concat([manifest, extra]), out, **FAST), manifest


def test_a_separable_cohort_gives_auc_1_and_a_threshold_between_the_classes(separable_fit) -> None:
    res, _ = separable_fit
    assert res.cv.auc["auc"] == 1.0
    assert (res.n_used, res.n_unlabelled) == (30, 2)  # the orphan feature row is in no manifest: not counted
    assert res.selected == ["radiomics_a"]
    oof = res.cv.oof
    assert len(oof) == 30 and set(oof.index) == {f"c{i:02d}" for i in range(30)}
    pos, neg = oof.loc[oof["label"] == 1, "probability"], oof.loc[oof["label"] == 0, "probability"]
    # Youden's J is 1 at any cut between the classes: the stored threshold separates them
    assert neg.max() < res.threshold <= pos.min()


def test_the_bundle_reads_the_tables_columns_and_records_the_fit(separable_fit) -> None:
    res, _ = separable_fit
    assert {"config.json", "metrics.json", "model.skops", "oof.csv"} <= {p.name for p in res.bundle.iterdir()}
    config = json.loads((res.bundle / "config.json").read_text())
    assert config["columns"] == ["radiomics_a", "radiomics_b"]
    assert (config["n_cases"], config["n_positive"], config["label"], config["clinical"]) == (30, 15, "label", [])
    assert config["threshold"] == pytest.approx(res.threshold)
    assert config["validation"]["outer_folds"] == 3 and config["validation"]["inner_folds"] == 2
    assert config["calibration"] == "none" and config["selection"] == {"lasso_cv": 3}
    metrics = json.loads((res.bundle / "metrics.json").read_text())
    assert metrics["auc"]["auc"] == 1.0 and metrics["n_unlabelled"] == 2
    assert len(pd.read_csv(res.bundle / "oof.csv")) == 30


def test_bad_joins_and_columns_are_named(tmp_path: Path) -> None:
    features, manifest = _separable(6)
    with pytest.raises(InputError, match=r"^label: expected a manifest column named 'her2'"):
        fit_cohort(features, manifest, tmp_path / "b", label="her2", **FAST)
    with pytest.raises(InputError, match=r"^case_id: expected cases shared by the manifest and the feature table"):
        fit_cohort(features.assign(case_id=[f"x{i}" for i in range(6)]), manifest, tmp_path / "b", **FAST)
    with pytest.raises(InputError, match=r"^case_id: expected a case_id column in both"):
        fit_cohort(features.drop(columns="case_id"), manifest, tmp_path / "b", **FAST)
    grade = manifest.assign(grade=["1", "2", "high", "3", None, "low"])  # None: an empty cell, imputed
    with pytest.raises(
        InputError, match=r"^clinical column 'grade': expected numbers .* got values like \['high', 'low'\]"
    ):
        fit_cohort(features, grade, tmp_path / "b", clinical=["grade"], **FAST)
    with pytest.raises(InputError, match=r"^clinical: expected a column .* named 'age'"):
        fit_cohort(features, manifest, tmp_path / "b", clinical=["age"], **FAST)
    assert not (tmp_path / "b").exists()  # refused before anything is written


def test_augmentation_rows_keeps_the_perturbed_copies_of_training_cases() -> None:
    table = pd.DataFrame(
        {
            "case_id": ["a", "a", "a", "b", "c"],
            "perturbation": ["original", "contour-1", "contour-2", "contour-1", "contour-1"],
            "radiomics_x": [1.0, 1.1, 1.2, 2.1, 3.1],
            "radiomics_y": [0.0, 0.1, 0.2, 0.3, 0.4],
        }
    )
    rows = augmentation_rows(table, ["radiomics_x"], ["a", "b"])
    assert rows.index.tolist() == ["a", "a", "b"] and rows.index.name == "case_id"
    assert rows["radiomics_x"].tolist() == [1.1, 1.2, 2.1] and list(rows.columns) == ["radiomics_x"]
    assert rows.attrs["perturbations"] == ["contour-1", "contour-2"]
    only = augmentation_rows(table, ["radiomics_x", "radiomics_y"], ["a", "b", "c"], perturbations=["contour-2"])
    assert only.index.tolist() == ["a"] and only.to_dict("records") == [{"radiomics_x": 1.2, "radiomics_y": 0.2}]
    with pytest.raises(InputError, match=r"expected every feature column the model reads, got missing \['deep_z'\]"):
        augmentation_rows(table, ["deep_z"], ["a"])
    with pytest.raises(InputError, match=r"expected case_id and perturbation columns, got missing \['perturbation'\]"):
        augmentation_rows(table.drop(columns="perturbation"), ["radiomics_x"], ["a"])
    with pytest.raises(InputError, match=r"expected perturbations \['contour-9'\] of training cases, got none"):
        augmentation_rows(table, ["radiomics_x"], ["a"], perturbations=["contour-9"])


def test_mask_robustness_names_the_variant_from_what_was_done() -> None:
    plain = mask_robustness(
        variant=None,
        training_masks="given",
        augment_rows=None,
        augment_perturbations=[],
        perturbations=None,
        icc_threshold=0.9,
    )
    assert plain == {"variant": "given", "training_masks": "given", "augmentation": None, "icc": None}
    copies = pd.DataFrame({"radiomics_x": [1.0, 2.0, 3.0]}, index=pd.Index(["a", "a", "b"], name="case_id"))
    icc = pd.DataFrame({"perturbation": ["original", "mask_predicted", "original"]})
    rec = mask_robustness(
        variant=None,
        training_masks="out-of-fold",
        augment_rows=copies,
        augment_perturbations=["contour-2", "contour-1"],
        perturbations=icc,
        icc_threshold=0.75,
    )
    assert rec["variant"] == "out-of-fold+augment+icc"
    assert rec["augmentation"] == {
        "perturbations": ["contour-1", "contour-2"],
        "rows": 3,
        "cases": 2,
        "copies_per_case": 1.5,
    }
    assert rec["icc"] == {"perturbations": ["mask_predicted", "original"], "threshold": 0.75}
    named = mask_robustness(
        variant="mine",
        training_masks="predicted",
        augment_rows=None,
        augment_perturbations=[],
        perturbations=None,
        icc_threshold=0.9,
    )
    assert named["variant"] == "mine"


def test_fit_cohort_with_sequences_uses_only_those_columns(tmp_path):
    from usher2.fusion.bundle import load_bundle
    from usher2.fusion.fit import fit_cohort

    rng = np.random.default_rng(7)
    n = 80
    y = np.tile([0, 1], n // 2)
    ids = [f"c{i}" for i in range(n)]
    feats = pd.DataFrame({"case_id": ids})
    for seq in ("t2", "adc", "dwi"):
        for j in range(3):
            feats[f"{seq}_radiomics_f{j}"] = rng.normal(size=n) + (0.8 * y if seq == "adc" else 0)
    manifest = pd.DataFrame({"case_id": ids, "patient_id": ids, "label": y})
    res = fit_cohort(feats, manifest, tmp_path / "b", family="radiomics", sequences=["t2", "adc"], outer_folds=3)
    config = load_bundle(res.bundle).config
    assert config.sequences == ("t2", "adc")
    assert config.columns == tuple(f"{s}_radiomics_f{j}" for s in ("t2", "adc") for j in range(3))
    assert all(c.startswith(("t2_", "adc_")) for c in res.selected)
