"""The classifier zoo in the family pipelines, and family column selection (also per MRI sequence)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from usher2.evaluate.roc import roc_auc_ci
from usher2.fusion.models import CLASSIFIERS, build_model, family_columns


def _data(n: int = 120) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], n // 2)
    X = pd.DataFrame(rng.normal(size=(n, 12)), columns=[f"radiomics_f{i}" for i in range(12)])
    X.index = [f"c{i}" for i in range(n)]
    X["radiomics_f0"] += 1.5 * y
    X["deep_bb_0"] = rng.normal(size=n) + y
    X["age"] = rng.normal(size=n) + 0.5 * y
    return X, y


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_classifier_fits_in_the_combined_pipeline(name):
    X, y = _data()
    model, grid = build_model(family_columns(X.columns, "combined", clinical=["age"]), name)
    assert grid and all(k.startswith("classifier__") for k in grid)
    model.set_params(**{k: v[0] for k, v in grid.items()}).fit(X, y)
    if hasattr(model, "predict_proba"):
        score = model.predict_proba(X)[:, 1]
        assert ((score >= 0) & (score <= 1)).all()
    else:  # SVC: calibrated into probabilities by the CV wrapper
        score = model.decision_function(X)
    assert roc_auc_ci(y, score).auc > 0.75  # training fit of a clear planted signal


def test_family_columns_by_prefix_backbone_and_sequence():
    cols = ["t2_radiomics_a", "adc_radiomics_a", "t2_deep_r50_0", "radiomics_b", "deep_us_0", "deep_r50_1", "psa"]
    # without sequences a family takes the ultrasound columns and every MRI sequence's
    assert family_columns(cols, "radiomics")["radiomics"] == ["t2_radiomics_a", "adc_radiomics_a", "radiomics_b"]
    assert family_columns(cols, "deep")["deep"] == ["t2_deep_r50_0", "deep_us_0", "deep_r50_1"]
    assert family_columns(cols, "radiomics", sequences=["t2"])["radiomics"] == ["t2_radiomics_a"]
    assert family_columns(cols, "dlr", sequences=["t2", "adc"])["radiomics"] == ["t2_radiomics_a", "adc_radiomics_a"]
    assert family_columns(cols, "deep:r50")["deep"] == ["t2_deep_r50_0", "deep_r50_1"]
    assert family_columns(cols, "clinical", clinical=["psa"]) == {"radiomics": [], "deep": [], "clinical": ["psa"]}


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_selection_settings_reach_both_blocks(fusion):
    from usher2.io.errors import InputError

    X, y = _data()
    X["noise"] = np.random.default_rng(1).normal(size=len(X))  # a clinical column unrelated to y
    cols = family_columns(X.columns, "combined", clinical=["age", "noise"])

    def clinical_kept(selection):
        model, _ = build_model(cols, fusion=fusion, selector_params=selection)
        model.fit(X, y)
        select = None if fusion == "late" else model.named_steps["select"]
        block = model.clinical_model_ if fusion == "late" else select.named_transformers_["clinical"]
        return list(np.asarray(["age", "noise"])[block.named_steps["univariate"].support_])

    assert clinical_kept(None) == ["age"]  # the default p < 0.05 drops the noise column
    assert clinical_kept({"clinical_alpha": 1.0}) == ["age", "noise"]  # 1 keeps every clinical column
    n_imaging = 12 if fusion == "late" else 13  # late: the Radscore's source; early: radiomics + deep
    for alpha, expected in ((1.0, n_imaging), (1e-300, 1)):  # p < 1: all; none that small: its one best column
        model, _ = build_model(cols, fusion=fusion, selector_params={"alpha": alpha})
        model.fit(X, y)
        block = (
            model.source_models_["radiomics"]
            if fusion == "late"
            else model.named_steps["select"].named_transformers_["imaging"]
        )
        assert block.named_steps["univariate"].support_.sum() == expected
    with pytest.raises(InputError, match="unknown keys \\['lassocv'\\]"):
        build_model(cols, fusion=fusion, selector_params={"lassocv": 3})


def test_the_classifier_registry_is_consistent():
    # one entry per classifier: what it builds is the type it declares, and its grid names real parameters
    from usher2.fusion.bundle import TRUSTED_TYPES
    from usher2.fusion.models import CLASSIFIER_SPECS

    assert tuple(s.name for s in CLASSIFIER_SPECS) == CLASSIFIERS
    for spec in CLASSIFIER_SPECS:
        est = spec.build(0)
        assert type(est).__name__ == spec.fitted_type
        assert set(spec.grid) <= set(est.get_params())
        assert spec.reads in ("coefficients", "sklearn-trees", "xgboost", "lightgbm", "all")
        assert set(spec.trusted_types) <= set(TRUSTED_TYPES)
