"""Kaplan-Meier by hand, log-rank against R survdiff's values, and score groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from usher2.evaluate.survival import kaplan_meier, logrank_test, score_groups
from usher2.io.errors import InputError

T = [10, 20, 30, 10, 20, 50]
G = [1, 1, 1, 0, 0, 0]


def test_logrank_matches_r_survdiff():
    r = logrank_test(T, G)
    assert (r.statistic, r.p) == pytest.approx((0.254237, 0.614107), abs=1e-6)
    assert r.df == 1 and r.n_groups == 2
    c = logrank_test(T, G, events=[1, 0, 1, 1, 0, 1])
    assert (c.statistic, c.p) == pytest.approx((0.384615, 0.535143), abs=1e-6)


def test_logrank_three_groups_has_two_df():
    r = logrank_test(T, ["a", "a", "b", "b", "c", "c"])
    assert r.df == 2 and r.p == pytest.approx(stats.chi2.sf(r.statistic, 2), abs=1e-12)


def test_kaplan_meier_by_hand():
    km = kaplan_meier(T, [1, 0, 1, 1, 0, 1])
    assert km["time"].tolist() == [0, 10, 20, 30, 50]
    assert km["survival"].tolist() == pytest.approx([1, 2 / 3, 2 / 3, 1 / 3, 0], abs=1e-12)
    assert km["at_risk"].tolist() == [6, 6, 4, 2, 1]
    assert km["censored"].tolist() == [0, 0, 2, 0, 0] and km["events"].tolist() == [0, 2, 0, 1, 1]
    # exponential Greenwood at t = 30: V = (2/(6*4) + 1/(2*1)) / log(1/3)^2; CI = S^exp(+-z sqrt(V))
    s = 1 / 3
    v = (2 / 24 + 1 / 2) / math.log(s) ** 2
    z = stats.norm.ppf(0.975)
    row = km[km["time"] == 30].iloc[0]
    assert row["ci_low"] == pytest.approx(s ** math.exp(z * math.sqrt(v)), abs=1e-9)
    assert row["ci_high"] == pytest.approx(s ** math.exp(-z * math.sqrt(v)), abs=1e-9)


def test_kaplan_meier_by_group():
    km = kaplan_meier(T, None, G)
    assert set(km["group"]) == {0, 1}
    g1 = km[km["group"] == 1]
    assert g1["survival"].tolist() == pytest.approx([1, 2 / 3, 1 / 3, 0], abs=1e-12)  # 3 cases, all die


def test_score_groups():
    assert score_groups([0.2, 0.5, 0.9, 0.49], threshold=0.5).tolist() == ["low", "high", "high", "low"]
    q = score_groups([5, 1, 4, 2, 3, 6], quantiles=3)  # cuts at 2.667 and 4.333
    assert q.tolist() == ["Q3", "Q1", "Q2", "Q1", "Q2", "Q3"]
    assert score_groups([1, 2, 3, 4], quantiles=[0.5]).tolist() == ["Q1", "Q1", "Q2", "Q2"]


@pytest.mark.parametrize(
    ("call", "field", "words"),
    [
        (lambda: logrank_test(T, [1] * 6), "groups", "at least two groups"),
        (lambda: logrank_test([10, -1, 30, 10, 20, 50], G), "durations", ">= 0"),
        (lambda: logrank_test(T, G, events=[1, 2, 1, 1, 0, 1]), "events", "0/1"),
        (lambda: kaplan_meier([10, np.nan], [1, 1]), "durations", "finite"),
        (lambda: score_groups([1, 1, 1, 2], quantiles=4), "score", "non-empty quantile groups"),
        (lambda: score_groups([1, 2, 3], threshold=0.5, quantiles=2), "score_groups", "exactly one"),
    ],
)
def test_bad_input_names_the_field(call, field, words):
    with pytest.raises(InputError, match=words) as e:
        call()
    assert e.value.where == field
