"""ICC: all six Shrout-Fleiss forms against the Shrout & Fleiss (1979) worked example."""

from __future__ import annotations

import numpy as np
import pytest

from usher2.evaluate.agreement import icc, icc_columns

# six subjects (rows) by four judges (columns); ../shared/reference/README.md
TABLE = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)
EXPECTED = {
    "ICC(1,1)": 0.165742,
    "ICC(2,1)": 0.289764,
    "ICC(3,1)": 0.714841,
    "ICC(1,k)": 0.442797,
    "ICC(2,k)": 0.620051,
    "ICC(3,k)": 0.909316,
}


@pytest.mark.parametrize("form", sorted(EXPECTED))
def test_shrout_fleiss_forms(form):
    r = icc(TABLE, form)
    assert r["icc"] == pytest.approx(EXPECTED[form], abs=5e-7)
    assert r["F"] == pytest.approx(1.794678 if form.startswith("ICC(1") else 11.027248, abs=5e-7)


def test_vectorised_over_features_and_aliases():
    cube = np.stack([TABLE, 2 * TABLE + 3, np.ones_like(TABLE)], axis=2)  # a linear transform keeps the ICC
    values, _ = icc_columns(cube, "3,1")
    assert values[:2] == pytest.approx([EXPECTED["ICC(3,1)"]] * 2)
    assert np.isnan(values[2])  # a constant feature has no ICC
    with pytest.raises(ValueError, match="ICC form"):
        icc(TABLE, "ICC(4,1)")
