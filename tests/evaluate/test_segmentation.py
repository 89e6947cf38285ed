"""Segmentation metrics and bootstrap summaries on hand-built masks with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import binary_erosion, gaussian_filter
from scipy.spatial.distance import cdist

from usher2.evaluate.segmentation import (
    assd,
    bootstrap_ci,
    dice,
    hausdorff,
    hd95,
    iou,
    segmentation_metrics,
    summarize,
    surface_distances,
)


def _square(s: int, col: int = 10, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[10 : 10 + s, col : col + s] = True
    return m


def _disc(r: float, half: int = 40) -> np.ndarray:
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    return xx**2 + yy**2 <= r**2


def _blob(rng: np.random.Generator, shape: tuple[int, int] = (40, 48)) -> np.ndarray:
    # Smoothed noise thresholded: several irregular, possibly touching-the-border components.
    return gaussian_filter(rng.standard_normal(shape), 2.5) > 0.05


def _brute_force(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    def surface(m: np.ndarray) -> np.ndarray:
        return m & ~binary_erosion(m, structure=np.ones((3, 3), bool), border_value=0)

    p = np.argwhere(surface(pred)) * np.asarray(spacing)
    t = np.argwhere(surface(truth)) * np.asarray(spacing)
    d = cdist(p, t)
    return d.min(axis=1), d.min(axis=0)


def test_a_mask_with_itself_is_a_perfect_match() -> None:
    m = _disc(12)
    assert dice(m, m) == 1.0
    assert iou(m, m) == 1.0
    assert hd95(m, m) == 0.0
    assert assd(m, m) == 0.0


@pytest.mark.parametrize(("s", "k"), [(20, 3), (16, 8), (10, 1)])
def test_shifted_square_has_closed_form_overlap_and_hausdorff_k(s: int, k: int) -> None:
    a, b = _square(s), _square(s, col=10 + k)
    # Overlap s(s-k) of two s² squares: Dice 2s(s-k)/2s², IoU s(s-k)/(s² + sk).
    assert dice(a, b) == pytest.approx(1 - k / s, abs=1e-12)
    assert iou(a, b) == pytest.approx((s - k) / (s + k), abs=1e-12)
    # The left edge of a is exactly k columns from the left edge of b and farther from all else.
    assert hausdorff(a, b) == k
    # Columns 2.0 wide: the same pixel pair is 2k apart; rows 0.5 tall only shrink the rest.
    assert hausdorff(a, b, spacing=(0.5, 2.0)) == 2 * k


def test_concentric_discs_are_r2_minus_r1_apart() -> None:
    inner, outer = _disc(20), _disc(26)
    assert abs(hd95(inner, outer) - 6) <= 1
    assert abs(assd(inner, outer) - 6) <= 1
    # Symmetric under swapping the arguments.
    assert hd95(outer, inner) == hd95(inner, outer)


def test_ellipse_area_matches_pi_a_b_in_pixels_and_in_physical_units() -> None:
    a, b = 40, 25
    yy, xx = np.mgrid[-50:51, -60:61]
    ellipse = (xx / a) ** 2 + (yy / b) ** 2 <= 1
    m = segmentation_metrics(ellipse, ellipse)
    assert m["truth_area"] == pytest.approx(math.pi * a * b, rel=0.01)
    assert m["pred_area"] == m["truth_area"]
    # Each pixel covers 0.2 x 0.3 = 0.06 mm².
    mm = segmentation_metrics(ellipse, ellipse, spacing=(0.2, 0.3))
    assert mm["truth_area"] == pytest.approx(0.06 * math.pi * a * b, rel=0.01)
    assert set(mm) == {"dice", "iou", "hd95", "assd", "pred_area", "truth_area"}


def test_disjoint_and_empty_masks_follow_the_conventions() -> None:
    a, b = _square(10, col=2), _square(10, col=40)
    assert dice(a, b) == 0.0
    assert iou(a, b) == 0.0
    # Every surface pixel of a is nearest to b's left edge (column 40) in its own row; the
    # farthest is a's left edge at column 2.
    assert hausdorff(a, b) == 38.0

    empty = np.zeros_like(a)
    assert dice(empty, empty) == 1.0
    assert iou(empty, empty) == 1.0
    assert hd95(empty, empty) == 0.0
    assert assd(empty, empty) == 0.0
    assert dice(empty, a) == 0.0
    assert iou(a, empty) == 0.0
    assert math.isnan(hd95(empty, a))
    assert math.isnan(assd(a, empty))
    assert math.isnan(hausdorff(a, empty))
    d_ae, d_ea = surface_distances(a, empty)
    assert d_ea.shape == (0,)
    assert d_ae.shape == (36,) and np.isinf(d_ae).all()  # the 10x10 square has 36 border pixels


@pytest.mark.parametrize("spacing", [None, (0.7, 1.3)])
def test_distances_match_a_brute_force_reference_on_irregular_masks(spacing: tuple[float, float] | None) -> None:
    rng = np.random.default_rng(7)
    pred, truth = _blob(rng), _blob(rng)
    assert pred.any() and truth.any() and not np.array_equal(pred, truth)
    d_pt, d_tp = _brute_force(pred, truth, spacing or (1.0, 1.0))

    got_pt, got_tp = surface_distances(pred, truth, spacing=spacing)
    np.testing.assert_allclose(got_pt, d_pt, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got_tp, d_tp, rtol=0, atol=1e-9)
    ref_hd95 = max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))
    ref_assd = np.concatenate([d_pt, d_tp]).mean()
    assert hd95(pred, truth, spacing=spacing) == pytest.approx(ref_hd95, abs=1e-9)
    assert assd(pred, truth, spacing=spacing) == pytest.approx(ref_assd, abs=1e-9)
    assert hausdorff(pred, truth, spacing=spacing) == pytest.approx(max(d_pt.max(), d_tp.max()), abs=1e-9)
    m = segmentation_metrics(pred, truth, spacing=spacing)
    assert m["hd95"] == pytest.approx(ref_hd95, abs=1e-9)
    assert m["assd"] == pytest.approx(ref_assd, abs=1e-9)


def test_3d_cubes_shifted_along_z_are_one_slice_thickness_apart() -> None:
    a = np.zeros((12, 12, 12), bool)
    a[2:8, 3:9, 3:9] = True
    b = np.roll(a, 1, axis=0)
    # Bottom face of a is one slice (3 mm) below any surface voxel of b; in-plane voxels are 0.5 mm.
    assert hausdorff(a, b, spacing=(3.0, 0.5, 0.5)) == 3.0
    assert hausdorff(a, b) == 1.0
    # Overlap 5 of 6 slices.
    assert dice(a, b) == pytest.approx(5 / 6)


def test_bootstrap_mean_skips_nan_and_the_ci_contains_it_deterministically() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(0.8, 0.1, size=60)
    values[[4, 17]] = np.nan
    mean, lo, hi = bootstrap_ci(values, n_boot=500, seed=11)
    assert mean == pytest.approx(np.mean(values[np.isfinite(values)]), abs=1e-15)
    assert lo < mean < hi
    # The half-width is about 1.96 σ/√n = 1.96 x 0.1/√58 ≈ 0.026.
    assert 0.015 < (hi - lo) / 2 < 0.04
    assert bootstrap_ci(values, n_boot=500, seed=11) == (mean, lo, hi)
    assert bootstrap_ci(values, n_boot=500, seed=12) != (mean, lo, hi)


def test_bootstrap_of_a_constant_has_zero_width() -> None:
    assert bootstrap_ci(np.full(40, 0.75), n_boot=200) == (0.75, 0.75, 0.75)


def test_grouped_bootstrap_resamples_whole_groups() -> None:
    # Two equal groups of constants 1 and 3: a resample holds {1,1}, {1,3} or {3,3} with
    # probabilities 1/4, 1/2, 1/4, so the means are 1, 2, 3 and both 2.5% tails are pure.
    values = np.array([1.0] * 10 + [3.0] * 10)
    groups = ["p1"] * 10 + ["p2"] * 10
    mean, lo, hi = bootstrap_ci(values, n_boot=1000, groups=groups)
    assert (mean, lo, hi) == (2.0, 1.0, 3.0)
    # Resampling rows instead gives means of 20 draws: 2 ± 1.96 x 1/√20 ≈ [1.56, 2.44].
    _, row_lo, row_hi = bootstrap_ci(values, n_boot=1000)
    assert 1.3 < row_lo < 1.8 and 2.2 < row_hi < 2.7


def test_grouped_bootstrap_drops_groups_whose_values_are_all_nan() -> None:
    values = np.array([1.0, 1.0, np.nan, np.nan, 3.0, 3.0])
    groups = np.array([0, 0, 1, 1, 2, 2])
    assert bootstrap_ci(values, n_boot=1000, groups=groups) == (2.0, 1.0, 3.0)


def test_summarize_reports_one_row_per_metric_with_counts() -> None:
    pred = [_square(10, col=10 + k) for k in range(4)] + [np.zeros((48, 64), bool)]
    rows = [segmentation_metrics(p, _square(10)) for p in pred]
    out = summarize(rows, n_boot=200)
    assert list(out.columns) == ["metric", "mean", "ci_low", "ci_high", "n", "n_undefined"]
    assert out["metric"].tolist() == ["dice", "iou", "hd95", "assd"]
    by = out.set_index("metric")
    # Dice 1, 0.9, 0.8, 0.7 and 0 for the empty prediction.
    assert by.loc["dice", "mean"] == pytest.approx(3.4 / 5)
    assert by.loc["dice", "n"] == 5 and by.loc["dice", "n_undefined"] == 0
    # HD95 of a k-pixel shift is k (k = 0..3); the empty prediction is undefined.
    assert by.loc["hd95", "mean"] == pytest.approx(1.5)
    assert by.loc["hd95", "n"] == 4 and by.loc["hd95", "n_undefined"] == 1
    assert (by["ci_low"] <= by["mean"]).all() and (by["mean"] <= by["ci_high"]).all()


def test_summarize_accepts_a_dataframe_and_a_group_column() -> None:
    df = pd.DataFrame({"dice": [1.0] * 5 + [3.0] * 5, "patient": ["a"] * 5 + ["b"] * 5})
    out = summarize(df, metrics=("dice",), groups="patient", n_boot=1000)
    assert out.iloc[0][["mean", "ci_low", "ci_high"]].tolist() == [2.0, 1.0, 3.0]
    empty = summarize(pd.DataFrame({"hd95": [np.nan, np.nan]}), metrics=("hd95",), n_boot=10)
    assert math.isnan(empty.loc[0, "mean"]) and empty.loc[0, "n_undefined"] == 2


@pytest.mark.parametrize(
    ("pred", "truth", "kwargs", "match"),
    [
        (np.zeros((480, 640)), np.zeros((240, 320)), {}, r"pred and truth shapes differ: \(480, 640\) vs \(240, 320\)"),
        (np.array([[0, 2], [1, 0]]), np.zeros((2, 2)), {}, r"pred must be binary.*2"),
        (np.zeros((2, 2)), np.array([[0.0, np.nan], [1, 0]]), {}, r"truth must be binary"),
        (np.zeros(5), np.zeros(5), {}, r"pred must be a 2D .* or 3D .* got shape \(5,\)"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {"spacing": (1.0, 1.0, 1.0)}, r"spacing must have one entry per .*\(2\)"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {"spacing": (1.0, 0.0)}, r"spacing must be finite and > 0.*0\.0"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {"spacing": (1.0, -2.0)}, r"spacing must be finite and > 0.*-2\.0"),
    ],
)
def test_bad_masks_and_spacing_raise_naming_the_argument(
    pred: np.ndarray, truth: np.ndarray, kwargs: dict[str, object], match: str
) -> None:
    fn = hd95 if kwargs else dice
    with pytest.raises(ValueError, match=match):
        fn(pred, truth, **kwargs)


def test_bad_bootstrap_and_summary_input_raise() -> None:
    with pytest.raises(ValueError, match=r"values has no finite entry"):
        bootstrap_ci([np.nan, np.inf])
    with pytest.raises(ValueError, match=r"groups must be .*\(3,\), got shape \(2,\)"):
        bootstrap_ci([1.0, 2.0, 3.0], groups=["a", "b"])
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 1.5"):
        bootstrap_ci([1.0, 2.0], alpha=1.5)
    with pytest.raises(ValueError, match=r"'hd95'.*not a column"):
        summarize([{"dice": 1.0}], metrics=("hd95",))


def test_one_pixel_lesions_are_handled() -> None:
    a = np.zeros((9, 9), bool)
    a[4, 4] = True
    b = np.roll(a, 2, axis=1)
    assert dice(a, a) == 1.0 and hd95(a, a) == 0.0
    assert dice(a, b) == 0.0 and hd95(a, b) == 2.0 and assd(a, b) == 2.0
