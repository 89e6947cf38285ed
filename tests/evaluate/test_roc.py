"""ROC AUC, DeLong variance and DeLong's paired test against R pROC's published values on the aSAH data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from usher2.evaluate.roc import delong_test, roc_auc_ci

# pROC's own tests (DeLong method); ../shared/reference/README.md
PROC = {
    "wfns": (0.823678861788618, 0.00146991470882363, None),
    "ndka": (0.611957994579946, 0.0031908105493913, (0.501244999271703, 0.722670989888189)),
    "s100b": (0.7313685636856369, 0.00266868245717244, (0.6301182, 0.8326189)),
}


@pytest.fixture(scope="module")
def asah(shared_dir):
    path = shared_dir / "reference" / "stats" / "pROC_aSAH.csv"
    if not path.is_file():
        pytest.skip(f"reference data not available: {path}")
    d = pd.read_csv(path)
    return d, (d["outcome"] == "Poor").astype(int).to_numpy()


@pytest.mark.parametrize("marker", sorted(PROC))
def test_auc_and_delong_variance_match_proc(asah, marker):
    d, y = asah
    auc, var, ci = PROC[marker]
    r = roc_auc_ci(y, d[marker])
    assert (r.n_positive, r.n_negative) == (41, 72)
    assert r.auc == pytest.approx(auc, abs=1e-12)
    assert r.variance == pytest.approx(var, abs=1e-9)
    if ci is not None:
        assert (r.ci_low, r.ci_high) == pytest.approx(ci, abs=1e-6)


def test_delong_paired_test_matches_proc(asah):
    d, y = asah
    t = delong_test(y, d["wfns"], d["s100b"])
    assert t.z == pytest.approx(2.20898359144091, abs=1e-9)
    assert t.p == pytest.approx(0.0271757822291882, abs=1e-9)
    assert (t.ci_low, t.ci_high) == pytest.approx((0.0104061769564846, 0.174214419249478), abs=1e-9)
    assert delong_test(y, d["wfns"], d["ndka"]).z == pytest.approx(2.79777591868904, abs=1e-9)
    assert delong_test(y, d["wfns"], d["ndka"]).p == pytest.approx(0.00514557970691098, abs=1e-9)
    assert delong_test(y, d["ndka"], d["s100b"]).z == pytest.approx(-1.39077002573558, abs=1e-9)
    assert delong_test(y, d["ndka"], d["s100b"]).p == pytest.approx(0.164295175223054, abs=1e-9)


def test_bootstrap_is_seeded_and_brackets_the_auc():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    s = rng.normal(size=200) + y
    a = roc_auc_ci(y, s, method="bootstrap", n_boot=300, seed=1)
    b = roc_auc_ci(y, s, method="bootstrap", n_boot=300, seed=1)
    d = roc_auc_ci(y, s)
    assert a == b and a.ci_low < a.auc < a.ci_high
    assert a.ci_high - a.ci_low == pytest.approx(d.ci_high - d.ci_low, rel=0.25)  # both estimate the same spread
    g = roc_auc_ci(y, s, method="bootstrap", n_boot=200, groups=np.arange(200) // 2)
    assert g.ci_low < g.auc < g.ci_high


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="both classes"):
        roc_auc_ci([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="shape"):
        roc_auc_ci([0, 1, 1, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="finite"):
        roc_auc_ci([0, 1, 0, 1], [0.1, np.nan, 0.2, 0.3])
