"""The fit settings shared by ``usher2 fit`` and ``Pipeline.fit`` (issue 24: one configuration)."""

from __future__ import annotations

import pandas as pd
import pytest

from usher2.io.errors import InputError
from usher2.io.parts import write_parquet
from usher2.pipeline import PipelineConfig, fit_inputs


@pytest.fixture()
def features(tmp_path):
    path = tmp_path / "f.parquet"
    write_parquet(path, pd.DataFrame({"case_id": ["a", "b"], "radiomics_x": [1.0, 2.0]}), {"inputs": [1, 2]})
    return path


def _perturbations(path, names):
    rows = [{"case_id": c, "perturbation": p, "radiomics_x": 1.0} for c in ("a", "b") for p in ("original", *names)]
    pd.DataFrame(rows).to_parquet(path.with_name("f.perturbations.parquet"))


def test_the_defaults_follow_the_scoring_masks(features):
    _perturbations(features, ["contour-1", "erode1"])
    logged = []
    predicted = fit_inputs(features, PipelineConfig(scoring_masks="predicted"), log=logged.append)
    assert predicted.augment_perturbations == ["contour-1"] and predicted.augment_table is not None
    assert predicted.icc_perturbations == ["contour-1", "erode1"] and predicted.perturbations is not None
    assert predicted.extraction == {} and predicted.provenance == {"inputs": [1, 2]}
    given = fit_inputs(features, PipelineConfig(scoring_masks="given"), log=logged.append)
    assert given.augment_perturbations is None and given.augment_table is None
    only = fit_inputs(features, PipelineConfig(icc_perturbations=("erode1",)), log=logged.append)
    assert only.icc_perturbations == ["erode1"]
    off = fit_inputs(features, PipelineConfig(icc=False), log=logged.append)
    assert off.perturbations is None and off.icc_perturbations is None
    assert logged[-1] == "ICC filter: off"


def test_augment_needs_the_perturbation_table(features):
    with pytest.raises(InputError, match=r"perturbations\.parquet"):
        fit_inputs(features, PipelineConfig(augment=1), log=lambda _: None)


def test_predicted_masks_without_contours_are_noted(features):
    logged = []
    fit_inputs(features, PipelineConfig(scoring_masks="predicted"), log=logged.append)
    assert logged[0].startswith("note: the model will be scored on predicted masks")


def test_the_fit_extraction_carries_the_contours():
    assert PipelineConfig(masks="predicted").contours() == []  # the Python default prepares for nothing
    cfg = PipelineConfig(masks="predicted", scoring_masks="predicted", perturb=False)
    assert cfg.extract_config().perturb is False  # the test cohort: no perturbations
    fit = cfg.extract_config(fit=True)
    assert fit.perturb is True and fit.perturbations == ("contour-1",)
    given = PipelineConfig().extract_config(fit=True)  # given masks, no perturb: the extraction of before
    assert given.perturb is False and given.digest() == PipelineConfig().extract_config().digest()
