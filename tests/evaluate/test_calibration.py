"""Calibration: curve vs sklearn, recalibration on designs with closed-form MLEs, Brier and Hosmer-Lemeshow."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit, logit

from usher2.evaluate.calibration import (
    brier_score,
    calibration_curve,
    calibration_slope_intercept,
    hosmer_lemeshow,
    scaled_brier_score,
)
from usher2.io.errors import InputError

Z = stats.norm.ppf(0.975)


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_curve_matches_sklearn(strategy):
    from sklearn.calibration import calibration_curve as sk_curve

    rng = np.random.default_rng(3)
    p = rng.uniform(0.01, 0.99, 300)
    y = (rng.uniform(size=300) < p).astype(int)
    c = calibration_curve(y, p, n_bins=8, strategy=strategy)
    prob_true, prob_pred = sk_curve(y, p, n_bins=8, strategy=strategy)
    assert c["observed"].to_numpy() == pytest.approx(prob_true, abs=1e-12)
    assert c["mean_predicted"].to_numpy() == pytest.approx(prob_pred, abs=1e-12)
    assert c["n"].sum() == 300 and c["bin"].tolist() == list(range(1, len(c) + 1))


def test_curve_bins_and_wilson_by_hand():
    y = [0, 0, 1, 0, 1, 1]
    p = [0.1, 0.2, 0.3, 0.6, 0.7, 0.9]
    c = calibration_curve(y, p, n_bins=2)  # median 0.45: {0.1, 0.2, 0.3} and {0.6, 0.7, 0.9}
    assert c["n"].tolist() == [3, 3] and c["events"].tolist() == [1, 2]
    assert c["mean_predicted"].tolist() == pytest.approx([0.2, 2.2 / 3], abs=1e-12)
    centre = (1 / 3 + Z**2 / 6) / (1 + Z**2 / 3)
    half = Z / (1 + Z**2 / 3) * math.sqrt(1 / 3 * 2 / 3 / 3 + Z**2 / 36)
    assert (c.loc[0, "ci_low"], c.loc[0, "ci_high"]) == pytest.approx((centre - half, centre + half), abs=1e-12)
    u = calibration_curve(y, p, n_bins=4, strategy="uniform")  # [0, .25], (.25, .5], (.5, .75], (.75, 1]
    assert u["n"].tolist() == [2, 1, 2, 1] and u["lower"].tolist() == [0.0, 0.25, 0.5, 0.75]


def test_recalibration_on_a_saturated_design():
    # Two groups of 4 with observed rates 1/4 and 3/4 (logits -ln 3, +ln 3). The model says logit - 0.5:
    # both fits are saturated, so fitted = observed: slope 1 and calibration-in-the-large 0.5 exactly.
    ln3 = math.log(3)
    p = expit(np.repeat([-ln3 - 0.5, ln3 - 0.5], 4))
    y = [1, 0, 0, 0, 1, 1, 1, 0]
    f = calibration_slope_intercept(y, p)
    assert f.slope == pytest.approx(1.0, abs=1e-8)
    assert f.intercept == pytest.approx(0.5, abs=1e-8)
    # Wald SEs from the Fisher information, each group weighing n p (1 - p) = 4 * 3/16 = 0.75:
    se_slope = math.sqrt((1 / 0.75 + 1 / 0.75) / (2 * ln3) ** 2)
    se_int = math.sqrt(1 / 1.5)
    assert (f.slope_ci_low, f.slope_ci_high) == pytest.approx((1 - Z * se_slope, 1 + Z * se_slope), abs=1e-6)
    assert (f.intercept_ci_low, f.intercept_ci_high) == pytest.approx((0.5 - Z * se_int, 0.5 + Z * se_int), abs=1e-6)
    # The same outcomes with a model saying logit +-1: slope ln 3
    g = calibration_slope_intercept(y, expit(np.repeat([-1.0, 1.0], 4)))
    assert g.slope == pytest.approx(ln3, abs=1e-8) and g.n == 8


def test_calibration_in_the_large_solves_its_score_equation():
    rng = np.random.default_rng(5)
    p = rng.uniform(0.05, 0.95, 400)
    y = (rng.uniform(size=400) < expit(logit(p) + 0.3)).astype(int)
    f = calibration_slope_intercept(y, p)
    assert np.sum(expit(f.intercept + logit(p))) == pytest.approx(y.sum(), abs=1e-6)  # expected = observed events


def test_brier_by_hand():
    y, p = [0, 1, 0, 1], [0.1, 0.8, 0.3, 0.6]
    assert brier_score(y, p) == pytest.approx((0.01 + 0.04 + 0.09 + 0.16) / 4, abs=1e-15)
    assert scaled_brier_score(y, p) == pytest.approx(1 - 0.075 / 0.25, abs=1e-12)


def hl_by_loops(y, p, g):
    """hoslem.test written differently: R's type-7 quantile formula and explicit membership loops."""
    xs = sorted(p)
    n = len(xs)
    qs = []
    for j in range(g + 1):
        h = (n - 1) * j / g
        lo = math.floor(h)
        hi = min(lo + 1, n - 1)
        qs.append(xs[lo] + (h - lo) * (xs[hi] - xs[lo]))
    breaks = sorted(set(qs))
    chi2 = 0.0
    for i in range(len(breaks) - 1):
        o = [0.0, 0.0]
        e = [0.0, 0.0]
        for yi, pi in zip(y, p, strict=True):
            if breaks[i] < pi <= breaks[i + 1] or (i == 0 and pi == breaks[0]):
                o[int(yi)] += 1
                e[1] += pi
                e[0] += 1 - pi
        chi2 += sum((o[k] - e[k]) ** 2 / e[k] for k in (0, 1))
    return chi2, len(breaks) - 1


def test_hosmer_lemeshow_hand_example():
    # g = 4 on 8 values: breaks 0.2, 0.35, 0.5, 0.65, 0.8, two cases and one event per group:
    # groups contribute 0.225 + 0.9, 0.04/1.2 + 0.04/0.8 (twice) and 0.9 + 0.225: chi2 = 29/12, df 2
    r = hosmer_lemeshow([1, 0, 1, 0, 1, 0, 1, 0], [0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.8, 0.8], g=4)
    assert r.statistic == pytest.approx(29 / 12, abs=1e-12)
    assert r.df == 2 and r.p == pytest.approx(math.exp(-29 / 24), abs=1e-12)  # chi2(2) survival is exp(-x/2)
    assert r.table["upper"].tolist() == pytest.approx([0.35, 0.5, 0.65, 0.8])
    assert r.table["n"].tolist() == [2, 2, 2, 2] and r.table["expected_1"].tolist() == pytest.approx(
        [0.4, 0.8, 1.2, 1.6]
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_hosmer_lemeshow_matches_a_loop_implementation(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, 97)
    p[:40] = np.round(p[:40], 1)  # ties on the quantiles
    y = (rng.uniform(size=97) < p).astype(int)
    r = hosmer_lemeshow(y, p)
    chi2, groups = hl_by_loops(y.tolist(), p.tolist(), 10)
    assert r.statistic == pytest.approx(chi2, rel=1e-12)
    assert r.n_groups == groups and r.df == 8 and r.table["n"].sum() == 97
    assert r.p == pytest.approx(stats.chi2.sf(chi2, 8), rel=1e-10)


def test_hosmer_lemeshow_tied_groups_keep_df_of_requested_g():
    p = np.repeat([0.2, 0.5, 0.8], 10)  # only 2 distinct intervals; R still uses df = g - 2 = 8
    y = np.tile([1, 0, 0, 0, 0, 1, 1, 1, 0, 0], 3)
    r = hosmer_lemeshow(y, p)
    chi2, groups = hl_by_loops(y.tolist(), p.tolist(), 10)
    assert r.df == 8 and r.n_groups == groups == 2 and r.statistic == pytest.approx(chi2, rel=1e-12)


def test_hosmer_lemeshow_calibrated_versus_miscalibrated():
    rng = np.random.default_rng(11)
    chi2, pvals = [], []
    for _ in range(150):
        p = rng.uniform(0.05, 0.95, 400)
        r = hosmer_lemeshow((rng.uniform(size=400) < p).astype(int), p)
        chi2.append(r.statistic)
        pvals.append(r.p)
    # predictions not fitted to these data: the statistic is about chi2 with g = 10 df (mean 10), so with
    # R's df = g - 2 the p-values are non-small on average but a little below uniform
    assert 8.5 < np.mean(chi2) < 11.5
    assert 0.3 < np.mean(pvals) < 0.6 and np.mean(np.array(pvals) < 0.05) < 0.25
    p_true = rng.uniform(0.05, 0.95, 1000)
    y = (rng.uniform(size=1000) < p_true).astype(int)
    assert hosmer_lemeshow(y, expit(2.5 * logit(p_true))).p < 1e-6  # overconfident model


@pytest.mark.parametrize(
    ("call", "field", "words"),
    [
        (lambda: calibration_slope_intercept([0, 0, 1, 1], [0.0, 0.2, 0.3, 0.9]), "p", "strictly between 0 and 1"),
        (lambda: calibration_slope_intercept([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]), "p", "separat"),
        (lambda: brier_score([0, 0, 1, 1], [0.1, 0.2, 1.3, 0.9]), "p", "between 0 and 1"),
        (lambda: brier_score([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.9]), "y", "both classes"),
        (lambda: brier_score([0, 1, 1, 1], [0.1, 0.2, 0.3, 0.9]), "y", "at least 2"),
        (lambda: hosmer_lemeshow([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5]), "p", "vary"),
        (lambda: hosmer_lemeshow([0, 0, 1, 1], [0.1, np.nan, 0.5, 0.6]), "p", "NaN"),
        (lambda: hosmer_lemeshow([0, 0, 1, 1], [0.1, 0.2, 0.5, 0.6], g=2), "g", ">= 3"),
        (lambda: calibration_curve([0, 0, 1, 1], [0.1, 0.2, 0.5, 0.6], strategy="x"), "strategy", "quantile"),
    ],
)
def test_bad_input_names_the_field(call, field, words):
    with pytest.raises(InputError, match=words) as e:
        call()
    assert e.value.where == field
