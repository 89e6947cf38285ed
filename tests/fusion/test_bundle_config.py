"""The bundle settings record: version 2 strict, version 1 migrated, newer refused (usher2.fusion.bundle_config)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from usher2.fusion.bundle_config import FORMAT, FORMAT_V1, V1_DEFAULTS, BundleConfig, migrate
from usher2.io.errors import InputError

# A version-1 config.json as the first 0.1 builds wrote it: no clinical ranges, no mask-robustness
# record, no segmentation confidence, no sequences.
V1 = {
    "format": FORMAT_V1,
    "family": "radiomics",
    "classifier": "lr",
    "fusion": "early",
    "calibration": "sigmoid",
    "label": "label",
    "clinical": [],
    "columns": ["radiomics_a", "radiomics_b"],
    "threshold": 0.42,
    "best_params": {"classifier__C": 0.1},
    "selected_features": ["radiomics_a"],
    "extraction": {"settings": {"backbones": [], "lexicon": False}},
}


def test_a_version_1_config_is_migrated_with_the_documented_defaults():
    cfg = BundleConfig.from_dict(V1)
    assert cfg.format == FORMAT
    assert cfg.columns == ("radiomics_a", "radiomics_b") and cfg.threshold == 0.42
    for name in set(V1_DEFAULTS) - set(V1):  # every field version 1 did not write: its documented default
        assert getattr(cfg, name) == (
            tuple(V1_DEFAULTS[name]) if isinstance(V1_DEFAULTS[name], list) else V1_DEFAULTS[name]
        )
    assert migrate(V1)["format"] == FORMAT and migrate(V1)["clinical_ranges"] == {}


def test_the_written_object_round_trips_and_is_json():
    cfg = BundleConfig.from_dict(V1)
    doc = json.loads(json.dumps(cfg.to_dict()))
    assert doc["format"] == FORMAT and next(iter(doc)) == "format"
    assert BundleConfig.from_dict(doc) == cfg
    # numpy values from a fit become JSON numbers
    assert BundleConfig.from_dict({**V1, "n_cases": np.int64(40)}).n_cases == 40


def test_a_version_2_config_must_have_every_field_and_no_unknown_one():
    doc = BundleConfig.from_dict(V1).to_dict()
    with pytest.raises(InputError, match=r"unknown fields \['regions'\].*newer usher2"):
        BundleConfig.from_dict({**doc, "regions": ["lesion"]})
    del doc["clinical_ranges"]
    with pytest.raises(InputError, match=r"every field of a usher2-bundle/2 config, got missing \['clinical_ranges'\]"):
        BundleConfig.from_dict(doc)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"format": "usher2-bundle/3"},
            r"format: expected bundle format usher2-bundle/2 .*got 'usher2-bundle/3'.*newer",
        ),
        ({"clinical": "age"}, r"clinical: expected a list of column names, got 'age'"),
        ({"extraction": []}, r"extraction: expected a JSON object, got \[\]"),
        ({"mask_robustness": 3}, r"mask_robustness: expected a JSON object or null, got 3"),
        ({"columns": ["a", "a"]}, r"columns: expected distinct column names, got 'a' twice"),
    ],
)
def test_bad_fields_are_named(change, message):
    with pytest.raises(InputError, match=message):
        BundleConfig.from_dict({**V1, **change})


def test_the_record_is_frozen_and_dict_reading_is_deprecated():
    cfg = BundleConfig.from_dict(V1)
    with pytest.raises(AttributeError):
        cfg.threshold = 0.9  # type: ignore[misc]
    with pytest.warns(DeprecationWarning, match="read its attributes"):
        assert cfg["threshold"] == 0.42
    with pytest.warns(DeprecationWarning):
        assert cfg.get("family") == "radiomics"
    assert cfg.extraction_settings == {"backbones": [], "lexicon": False}
