"""Issue 23: fitting for predicted masks (augmented copies, ICC on chosen perturbations), the
record in the bundle, the calibrated low-confidence flag, contour errors and stored probability maps."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin

from usher2.features.extract import ExtractConfig, contour_error, contour_seed, predicted_masks
from usher2.fusion.bundle import load_bundle
from usher2.fusion.confidence import calibrate_confidence, confidence_threshold
from usher2.fusion.cv import nested_cv
from usher2.fusion.fit import fit_cohort
from usher2.fusion.models import build_model, family_columns
from usher2.fusion.selection import LassoSelector, UnivariateFilter
from usher2.io.errors import InputError

FAST = {"lasso_cv": 3}  # the selection of these small cohorts: 3 LASSO folds keep each test to seconds


def _cohort(n: int = 120, p: int = 12, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(features with case_id, manifest, long table of original + contour-1 rows); two frames per patient."""
    rng = np.random.default_rng(seed)
    ids = [f"c{i:03d}" for i in range(n)]
    y = np.tile([0, 1], n // 2)
    feats = {f"radiomics_f{j}": rng.normal(size=n) + (1.2 * y if j < 2 else 0.0) for j in range(p)}
    feats["deep_bb_0"] = rng.normal(size=n) + 0.5 * y
    F = pd.DataFrame({"case_id": ids, **feats})
    M = pd.DataFrame({"case_id": ids, "patient_id": [f"p{i // 2}" for i in range(n)], "label": y})
    M["age"] = rng.normal(50, 8, n)
    copy = F.copy()
    cols = [c for c in F.columns if c != "case_id"]
    copy[cols] = copy[cols] + rng.normal(scale=0.3, size=(n, len(cols)))
    # one feature that a contour error scrambles: the ICC filter must drop it
    copy["radiomics_f5"] = rng.normal(size=n)
    long = pd.concat([F.assign(perturbation="original"), copy.assign(perturbation="contour-1")], ignore_index=True)
    return F, M, long


class Spy(TransformerMixin, BaseEstimator):
    """Pass-through recording the index of every fit (class-level log, shared by clones)."""

    log: list[list[str]] = []  # noqa: RUF012 - deliberately shared

    def fit(self, X, y=None):
        Spy.log.append([str(i) for i in X.index])
        return self

    def transform(self, X):
        return X

    def get_feature_names_out(self, input_features=None):
        return np.asarray(input_features, dtype=object)


def test_copies_stay_with_their_patient_and_are_never_evaluated():
    F, M, long = _cohort()
    X = F.set_index("case_id")
    y = M["label"].to_numpy()
    groups = M["patient_id"].to_numpy()
    copies = long[long["perturbation"] == "contour-1"].set_index("case_id")[X.columns]
    Xa = pd.concat([X, copies])
    ya = np.r_[y, y]
    ga = np.r_[groups, groups]
    aug = np.r_[np.zeros(len(X), bool), np.ones(len(copies), bool)]
    model, grid = build_model(family_columns(X.columns, "dlr"), "lr", selector_params=FAST)
    model.named_steps["select"].transformers[0][1].steps.insert(0, ("spy", Spy()))
    Spy.log.clear()
    res = nested_cv(model, grid, Xa, ya, ga, outer_folds=3, inner_folds=2, calibration=None, augmented=aug, seed=1)
    # evaluated on unperturbed rows only, each exactly once
    assert res.oof.index.is_unique and sorted(res.oof.index) == sorted(X.index)
    pid = dict(zip(X.index, groups, strict=True))
    for k in range(3):
        test = set(res.oof.index[res.oof["fold"] == k])
        fold = res.folds[k]
        assert fold["n_test"] == len(test) and fold["n_train_copies"] == fold["n_train"] - (len(X) - len(test))
    # every fit saw a case's copy exactly when it saw the case, and never a test patient's row
    test_patients = [{pid[c] for c in res.oof.index[res.oof["fold"] == k]} for k in range(3)]
    for seen in Spy.log:
        counts = pd.Series(seen).value_counts()
        assert (counts == 2).all(), "a case without its copy (or a copy without its case) in a training part"
        assert any(not {pid[c] for c in seen} & t for t in test_patients)


def test_duplicated_index_groups_the_lasso_folds_and_the_univariate_test():
    rng = np.random.default_rng(3)
    n = 80
    y = np.tile([0, 1], n // 2)
    X = pd.DataFrame({"a": rng.normal(size=n) + y, "b": rng.normal(size=n)}, index=[f"c{i}" for i in range(n)])
    twice = pd.concat([X, X])
    # the univariate p-values of an exact copy equal those of the cases alone (each case counts once)
    one = UnivariateFilter().fit(X, y).pvalues_
    two = UnivariateFilter().fit(twice, np.r_[y, y]).pvalues_
    np.testing.assert_allclose(one, two)
    # the LASSO's penalty folds keep a case and its copy together: no fold scores a row whose copy it trained on
    sel = LassoSelector(cv=5).fit(twice, np.r_[y, y])
    assert sel.get_support()[0]


def test_fit_records_the_variant_and_the_calibrated_flag(tmp_path):
    F, M, long = _cohort(n=80)
    cal = calibrate_confidence(np.linspace(0.1, 0.6, 20), np.r_[np.full(15, 0.9), np.full(5, 0.2)])
    ids = list(F["case_id"][:20])
    res = fit_cohort(
        F,
        M,
        tmp_path / "b",
        family="dlr",
        test_ids=ids,
        inner_folds=2,
        selection=FAST,
        augment=long,
        perturbations=long,
        icc_perturbations=["contour-1"],
        segmentation_confidence=cal,
    )
    b = load_bundle(res.bundle)
    rec = b.config.mask_robustness
    assert rec["variant"] == "given+augment+icc" and rec["training_masks"] == "given"
    # copies of the 60 training cases only: the test cases' rows are never trained on
    assert rec["augmentation"] == {"perturbations": ["contour-1"], "rows": 60, "cases": 60, "copies_per_case": 1.0}
    assert rec["icc"]["perturbations"] == ["contour-1", "original"]
    assert json.loads((res.bundle / "metrics.json").read_text())["mask_robustness"] == rec
    assert "radiomics_f5" not in res.selected  # scrambled by the contour error: ICC ~ 0
    assert sorted(res.cv.oof.index) == sorted(ids) and b.config.n_cases == 80
    assert res.cv.folds[0]["n_train"] == 120 and res.cv.folds[0]["n_train_copies"] == 60
    assert confidence_threshold(b.config, 0.45) == pytest.approx(cal.threshold)
    # a fixed test split's one fold model is the final model: the bundle gives the same probabilities
    p = b.predict_proba(F.set_index("case_id").loc[ids])
    np.testing.assert_allclose(p, res.cv.oof.loc[ids, "probability"].to_numpy())


def test_augmentation_table_errors_name_the_problem(tmp_path):
    F, M, long = _cohort(n=40)
    with pytest.raises(InputError, match="contour-9"):
        fit_cohort(F, M, tmp_path / "x", family="dlr", augment=long, augment_perturbations=["contour-9"])
    with pytest.raises(InputError, match="mask_predicted"):
        fit_cohort(F, M, tmp_path / "y", family="dlr", perturbations=long, icc_perturbations=["mask_predicted"])


def test_calibrated_threshold_on_a_derived_case():
    # 100 frames: uncertainty 0.01..1.00; the masks above 0.70 are bad (Dice 0.3), the rest good (0.9)
    u = np.arange(1, 101) / 100
    d = np.where(u > 0.70, 0.3, 0.9)
    # the default rule, recall 0.8 of the 30 bad masks: the 24 most uncertain (0.77..1.00) flagged -> threshold 0.76
    rec = calibrate_confidence(u, d)
    assert rec.threshold == pytest.approx(0.76) and rec.n_flagged == 24 and rec.recall == 0.8
    assert rec.bad_rate_unflagged == pytest.approx(6 / 76) and rec.bad_rate_flagged == 1.0
    assert calibrate_confidence(u, d, recall=1.0).threshold == pytest.approx(0.70)
    strict = calibrate_confidence(u, d, recall=None, max_bad_rate=0.0)
    assert strict.threshold == pytest.approx(0.70) and strict.n_flagged == 30 and strict.dice_unflagged == 0.9
    # allowing 5% bad among unflagged: k good + b bad with b / (70 + b) <= 0.05 -> b = 3 -> threshold 0.73
    loose = calibrate_confidence(u, d, recall=None, max_bad_rate=0.05)
    assert loose.threshold == pytest.approx(0.73) and loose.bad_rate_unflagged == pytest.approx(3 / 73)
    # both conditions: the largest threshold meeting both is the smaller of the two
    assert calibrate_confidence(u, d, recall=0.8, max_bad_rate=0.05).threshold == pytest.approx(0.73)
    # a mean-Dice condition: (70 * 0.9 + b * 0.3) / (70 + b) >= 0.88 -> b <= 2
    assert calibrate_confidence(u, d, recall=None, min_dice=0.88).threshold == pytest.approx(0.72)
    # the recall does not depend on how common bad masks are: the same bad masks among 4x the good ones
    u4 = np.r_[np.repeat(u[u <= 0.70], 4), u[u > 0.70]]
    d4 = np.where(u4 > 0.70, 0.3, 0.9)
    assert calibrate_confidence(u4, d4).threshold == pytest.approx(0.76)
    with pytest.warns(UserWarning, match="flags nearly every frame"):
        assert calibrate_confidence(u, np.full(100, 0.1), recall=None, max_bad_rate=0.05).threshold == 0.01
    with pytest.raises(InputError, match=r"at least 5 masks with Dice < 0\.5"):
        calibrate_confidence(u, np.where(u > 0.97, 0.3, 0.9))
    with pytest.raises(InputError, match="at least one of recall"):
        calibrate_confidence(u, d, recall=None)
    with pytest.raises(InputError, match="one Dice per uncertainty"):
        calibrate_confidence(u, d[:50])


def test_contour_error_is_seeded_scaled_and_named():
    m = np.zeros((200, 200), bool)
    cv2.ellipse(m.view(np.uint8), (100, 90), (40, 25), 0, 0, 360, 1, -1)
    big = np.zeros((400, 400), bool)
    cv2.ellipse(big.view(np.uint8), (200, 180), (80, 50), 0, 0, 360, 1, -1)

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    seeds = [contour_seed(f"case{i}", "contour-1") for i in range(25)]
    small_d = [dice(contour_error(m, s), m) for s in seeds]
    big_d = [dice(contour_error(big, s), big) for s in seeds]
    assert 0.7 < np.mean(small_d) < 0.9 and abs(np.mean(small_d) - np.mean(big_d)) < 0.05  # relative scale
    assert np.array_equal(contour_error(m, seeds[0]), contour_error(m, seeds[0]))
    assert contour_seed("a", "contour-1") != contour_seed("a", "contour-2")
    cfg = ExtractConfig(perturb=True, perturbations=("contour-1", "mask"))
    assert cfg.perturbation_names() == ("contour-1", "mask") and cfg.digest() != ExtractConfig(perturb=True).digest()
    assert ExtractConfig(perturbations=("contour-1",)).digest() == ExtractConfig().digest()  # ignored without perturb
    with pytest.raises(InputError, match="contour-<k>"):
        ExtractConfig(perturb=True, perturbations=("contour-0",))
    with pytest.raises(InputError, match="NAME=PATH"):
        ExtractConfig(segmenter="unet=")


def test_predicted_masks_threshold_stored_maps(tmp_path):
    given = np.zeros((60, 80), np.uint8)
    given[20:40, 20:60] = 255
    cv2.imwrite(str(tmp_path / "m.png"), given)
    prob = np.zeros((30, 40), np.uint8)  # half the size: resized to the mask
    prob[10:20, 10:25] = 230  # p 0.9 over 3/4 of the lesion's width
    (tmp_path / "probs").mkdir()
    cv2.imwrite(str(tmp_path / "probs" / "a.png"), prob)
    cv2.imwrite(str(tmp_path / "probs" / "b.png"), np.zeros((30, 40), np.uint8))
    manifest = pd.DataFrame(
        {"case_id": ["a", "b", "c"], "mask_path": [str(tmp_path / "m.png")] * 3, "image_path": ["x"] * 3}
    )
    t = predicted_masks(manifest, tmp_path / "probs", tmp_path / "out").set_index("case_id")
    assert list(t.index) == ["a", "b"]  # no map for c
    assert t.loc["a", "dice"] == pytest.approx(2 * 600 / (600 + 800), abs=0.03)
    assert cv2.imread(t.loc["a", "mask"], cv2.IMREAD_GRAYSCALE).max() == 255
    assert t.loc["b", "no_lesion"] and t.loc["b", "mask"] == "" and t.loc["b", "dice"] == 0.0
    with pytest.raises(InputError, match="probability maps"):
        predicted_masks(manifest, tmp_path / "out" / "nothing", tmp_path / "o2")


def test_cli_fit_augment_and_score_with_other_segmenter_weights(tmp_path):
    """End to end on 24 simulated frames: contour copies extracted, ``fit --augment 1`` records them, and
    ``score --segmenter-weights`` predicts the masks with the named file."""
    from typer.testing import CliRunner

    from usher2.cli import app
    from usher2.features.extract import extract_cohort
    from usher2.simulate import SimulationConfig, simulate_cohort
    from usher2.weights import default_weights_dir

    sim = simulate_cohort(24, 931, tmp_path / "c", config=SimulationConfig(image_size=(96, 96)), workers=1)
    manifest = tmp_path / "c" / "balanced.csv"  # 4 of 24 are HER2+: too few for folds; any balanced label will do
    sim.assign(label=np.arange(len(sim)) % 2).to_csv(manifest, index=False)
    params = {
        "imageType": {"Original": {}},
        "featureClass": {"shape2D": None, "firstorder": None},
        "setting": {"binWidth": 16},
    }
    cfg = ExtractConfig(
        params=params, backbones=(), regions=("lesion",), lexicon=False, perturb=True, perturbations=("contour-1",)
    )
    extract_cohort(manifest, tmp_path / "f.parquet", cfg)
    runner = CliRunner()
    args = ["fit", str(manifest), "--features", str(tmp_path / "f.parquet"), "--out", str(tmp_path / "b")]
    args += ["--model", "radiomics", "--augment", "1", "--no-icc", "--outer-folds", "2", "--inner-folds", "2"]
    args += ["--no-track"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "augmentation: 1 contour copies" in result.output and "ICC filter: off" in result.output
    rec = load_bundle(tmp_path / "b").config.mask_robustness
    assert rec["variant"] == "given+augment" and rec["augmentation"]["rows"] == 24 and rec["icc"] is None
    weights = default_weights_dir() / "segmenter_unet.safetensors"
    args = ["score", str(manifest), "--bundle", str(tmp_path / "b"), "--out", str(tmp_path / "s.csv")]
    result = runner.invoke(app, [*args, "--segmenter-weights", str(weights)])
    assert result.exit_code in (0, 1), result.output  # a frame with no lesion found is a result, not a failure
    meta = json.loads((tmp_path / "s.json").read_text())
    assert meta["segmenter"] == f"unet={weights.resolve()}" and meta["low_confidence_threshold"] == 0.45
    assert meta["mask_robustness"] == rec
    result = runner.invoke(app, [*args[:-1], str(tmp_path / "t.csv"), "--segmenter-weights", str(tmp_path / "no")])
    assert result.exit_code == 2 and "no such file" in result.output
