"""Threshold metrics: hand-counted confusion matrices and the Wilson interval written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from usher2.evaluate.threshold import threshold_metrics, wilson_proportion, youden_threshold
from usher2.io.errors import InputError

Y = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
S = [0.05, 0.10, 0.20, 0.30, 0.60, 0.70, 0.40, 0.50, 0.80, 0.90]


def wilson_by_hand(k: int, m: int, alpha: float = 0.05) -> tuple[float, float]:
    z = stats.norm.ppf(1 - alpha / 2)
    p = k / m
    centre = (p + z * z / (2 * m)) / (1 + z * z / m)
    half = z / (1 + z * z / m) * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m))
    return centre - half, centre + half


def test_counts_and_proportions_by_hand():
    # threshold 0.5: called positive 0.60, 0.70 (negatives) and 0.50, 0.80, 0.90 (positives); 0.50 == t counts
    m = threshold_metrics(Y, S, 0.5)
    assert (m.tn, m.fp, m.fn, m.tp) == (4, 2, 1, 3)
    assert m.confusion_matrix().tolist() == [[4, 2], [1, 3]]
    expected = {"accuracy": (7, 10), "sensitivity": (3, 4), "specificity": (4, 6), "ppv": (3, 5), "npv": (4, 5)}
    frame = m.as_frame().set_index("metric")
    for name, (k, n) in expected.items():
        p = getattr(m, name)
        assert (p.numerator, p.denominator) == (k, n)
        assert p.value == pytest.approx(k / n, abs=1e-15)
        assert (p.ci_low, p.ci_high) == pytest.approx(wilson_by_hand(k, n), abs=1e-12)
        assert frame.loc[name, "value"] == pytest.approx(k / n, abs=1e-15)
        assert frame.loc[name, ["numerator", "denominator"]].tolist() == [k, n]
    assert list(m.as_frame().columns) == ["metric", "value", "ci_low", "ci_high", "numerator", "denominator", "note"]


def test_alpha_changes_the_wilson_level():
    m = threshold_metrics(Y, S, 0.5, alpha=0.1)
    assert (m.sensitivity.ci_low, m.sensitivity.ci_high) == pytest.approx(wilson_by_hand(3, 4, 0.1), abs=1e-12)
    # Wilson at 0/m and m/m: the bounds stay inside [0, 1] and one equals the point estimate
    full = wilson_proportion(5, 5)
    assert full.ci_high == pytest.approx(1.0) and full.ci_low == pytest.approx(wilson_by_hand(5, 5)[0], abs=1e-12)


def test_empty_denominator_is_nan_with_a_note():
    m = threshold_metrics(Y, S, 0.95)  # nobody is called positive
    assert (m.tn, m.fp, m.fn, m.tp) == (6, 0, 4, 0)
    assert math.isnan(m.ppv.value) and math.isnan(m.ppv.ci_low) and m.ppv.denominator == 0
    assert "no case has score >= 0.95" in m.ppv.note
    assert m.npv.value == pytest.approx(0.6) and m.sensitivity.value == 0.0
    row = m.as_frame().set_index("metric").loc["ppv"]
    assert np.isnan(row["value"]) and "PPV is undefined" in row["note"]


def test_youden_lives_here_and_fusion_uses_the_same_function():
    from usher2.fusion.fit import youden_threshold as fit_youden

    assert fit_youden is youden_threshold
    # J at 0.5: 3/4 - 2/6 = 0.4167; at 0.4: 4/4 - 2/6 = 0.6667 (the maximum); at 0.8: 2/4 - 0 = 0.5
    assert youden_threshold(Y, S) == 0.4


@pytest.mark.parametrize(
    ("y", "s", "t", "field", "words"),
    [
        ([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], 0.5, "y", "both classes"),
        ([0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], 0.5, "y", "at least 2 cases of each class"),
        ([0, 0, 1, 1], [0.3, 0.3, 0.3, 0.3], 0.5, "score", "vary"),
        ([0, 0, 1, 1], [0.1, np.nan, 0.3, 0.4], 0.5, "score", "NaN"),
        ([0, 0, 1, 1], [0.1, 0.2, 0.3], 0.5, "score", "one value per case"),
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], float("nan"), "threshold", "finite"),
    ],
)
def test_bad_input_names_the_field(y, s, t, field, words):
    with pytest.raises(InputError, match=words) as e:
        threshold_metrics(y, s, t)
    assert e.value.where == field


def test_wilson_interval_holds_the_point_estimate_at_the_ends():
    # the Wilson interval contains k/n by construction; at k = 0 and k = n it must touch it exactly
    # (statsmodels' formula gives 2.8e-17 for 0 of 7, which broke the calibration plot's error bars)
    for n in range(1, 300):
        for k in (0, n):
            r = wilson_proportion(k, n)
            assert r.ci_low <= k / n <= r.ci_high
