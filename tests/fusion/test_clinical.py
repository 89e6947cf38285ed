"""Clinical values (usher2.fusion.clinical): training ranges, the margin, and refusals that name the field."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from usher2.fusion.clinical import CLINICAL_MARGIN, check_clinical, clinical_ranges
from usher2.io.errors import InputError


def test_clinical_ranges_skip_non_finite_values() -> None:
    df = pd.DataFrame({"age": [40.0, 71.0, np.nan], "er": [0.0, 1.0, 1.0], "none": [np.nan] * 3})
    assert clinical_ranges(df) == {"age": {"min": 40.0, "max": 71.0}, "er": {"min": 0.0, "max": 1.0}}


def test_values_inside_outside_and_beyond_the_margin() -> None:
    ranges = {"age": {"min": 30.0, "max": 80.0}, "er": {"min": 0.0, "max": 1.0}}
    assert CLINICAL_MARGIN == 0.5
    values, outside = check_clinical({"age": "50", "er": 1}, ["age", "er"], ranges)
    assert values == {"age": 50.0, "er": 1.0} and outside == []
    values, outside = check_clinical({"age": 104.9, "er": ""}, ["age", "er"], ranges)
    assert values["age"] == 104.9 and math.isnan(values["er"]) and outside == ["age"]  # 80 + 0.5 * 50 = 105
    with pytest.raises(InputError, match=r"clinical\.er: expected a value near the training range 0-1 .* above 1\.5"):
        check_clinical({"er": 1.6}, ["er"], ranges)


def test_bad_values_name_the_field_and_the_case() -> None:
    with pytest.raises(InputError, match=r"case bus_7: clinical\.age: expected a number .*, got non-numeric text"):
        check_clinical({"age": "old"}, ["age"], where="case bus_7")
    with pytest.raises(InputError, match="got a boolean"):
        check_clinical({"er": True}, ["er"])
    with pytest.raises(InputError, match="got infinity"):
        check_clinical({"age": float("inf")}, ["age"])
    assert check_clinical(None, [])[0] == {}
