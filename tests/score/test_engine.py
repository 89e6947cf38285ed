"""FrameScorer: only the needed columns are computed, and probabilities equal ``usher2 score`` (full features)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import usher2.features.extract as extract
import usher2.score.engine as engine
from usher2.fusion.needed import needed_columns
from usher2.io.errors import InputError
from usher2.io.frames import read_frame
from usher2.score.engine import FrameScore, FrameScorer
from usher2.score.table import score_inputs


@pytest.fixture(scope="module")
def scorer(scoring_bundle) -> FrameScorer:
    return FrameScorer(scoring_bundle["bundle"], cam=None)


@pytest.fixture(scope="module")
def test_images(scoring_bundle) -> list[Path]:
    man = pd.read_csv(scoring_bundle["test"] / "manifest.csv")
    return [scoring_bundle["test"] / p for p in man["image"]]


@pytest.fixture()
def spy(monkeypatch):
    """Record the ``columns`` and the rows of every :func:`frame_features` call."""
    calls: list[tuple[list[str] | None, list]] = []
    real = extract.frame_features

    def wrapped(cfg, items, columns=None):
        rows = real(cfg, items, columns)
        calls.append((None if columns is None else list(columns), rows))
        return rows

    monkeypatch.setattr(engine, "frame_features", wrapped)
    return calls


# score_frame and ``usher2 score FILE`` run the same float32 networks (eps 1.2e-7) through different code (a batch of
# one here, the cohort extraction there): the features can differ in their last bits and the logit by a few float32
# ulps, which moves p by at most that much relative (dp/p = (1 - p) dlogit). Measured up to 2.1e-7 between batch
# compositions and 7.9e-7 between AVX-512 and AVX2 kernels on these frames; 1e-5 (~100 float32 ulps) clears those
# 10x, while a wrong column, crop or mask moves p far more.
FLOAT32_PATHS_REL = 1e-5


def _same(r: FrameScore, ref: pd.Series, *, rel: float = 0.0, atol: float = 0.0) -> None:
    assert r.no_lesion == bool(ref["no_lesion"])
    if pd.isna(ref["probability"]):
        assert r.probability is None
        return
    assert r.probability == pytest.approx(float(ref["probability"]), rel=rel, abs=atol)
    assert r.label == int(ref["label"]) and r.threshold == ref["threshold"]
    assert r.low_segmentation_confidence == bool(ref["low_segmentation_confidence"])
    assert r.mask_uncertainty == pytest.approx(float(ref["mask_uncertainty"]), rel=rel, abs=max(atol, 1e-9))
    assert r.clinical_missing == bool(ref["clinical_missing"])


def test_only_the_needed_columns_are_computed_with_the_full_values(
    scoring_bundle, scorer, test_images, spy, tmp_path, monkeypatch
):
    b = scorer.bundle
    needed = needed_columns(b.model, b.columns)
    assert scorer.needed.columns == needed and len(needed) < len(b.columns) / 4
    res = score_inputs(scoring_bundle["test"] / "manifest.csv", scoring_bundle["bundle"], tmp_path / "s.csv")
    full = pd.read_parquet(res.paths["features"]).set_index("case_id")
    ids = pd.read_csv(scoring_bundle["test"] / "manifest.csv")["case_id"].astype(str).tolist()[:6]
    spy.clear()
    monkeypatch.setattr(scorer, "_step", 4)  # two steps: the second's networks run while the first's features do
    results = scorer.score([read_frame(p) for p in test_images[:6]], heatmaps=False)
    assert len(spy) == 2
    columns = spy[0][0]
    rows = [row for cols, part in spy for row in part if cols == columns]
    assert set(columns) == set(needed) - set(scorer.clinical)
    assert scorer.groups["backbones"] == sorted({c.split("_")[1] for c in columns if c.startswith("deep_")})
    scored = [(cid, r) for cid, r in zip(ids, results, strict=True) if r.probability is not None]
    assert scored and len(rows) == len(scored)
    for (cid, r), row in zip(scored, rows, strict=True):
        assert list(row) == columns and set(r.seconds) >= {"enhance", "segment", "prepare", "features", "model"}
        # radiomics: float64 from the same pixels and mask (equal); deep: float32 values below 1 from another batch,
        # a few ulps (~1e-7) apart at most
        np.testing.assert_allclose([row[c] for c in columns], full.loc[cid, columns].to_numpy(float), atol=1e-6)


def test_one_frame_equals_usher2_score_file(scoring_bundle, scorer, test_images, tmp_path, torch_one_thread):
    """``usher2 score FILE --out X.csv`` extracts every column; the scorer only the needed ones, as a batch of one."""
    for i, path in enumerate(test_images[:5]):
        ref = score_inputs(path, scoring_bundle["bundle"], tmp_path / f"s{i}.csv").scores.iloc[0]
        _same(scorer.score_frame(read_frame(path), heatmaps=False), ref, rel=FLOAT32_PATHS_REL)


def test_a_batch_equals_usher2_score_on_the_folder(scoring_bundle, scorer, test_images, tmp_path, torch_one_thread):
    """A batch runs the enhancer/segmenter/backbone on several frames at once, ``usher2 score DIR`` frame by
    frame (and the backbone per chunk): float32 rounding in the batched convolutions, about 1e-7 here."""
    res = score_inputs(scoring_bundle["test"] / "images", scoring_bundle["bundle"], tmp_path / "dir.csv")
    ref = res.scores.set_index("case_id")
    results = scorer.score([read_frame(p) for p in test_images], heatmaps=False)
    assert len(results) == len(test_images)
    for path, r in zip(test_images, results, strict=True):
        _same(r, ref.loc[path.stem], atol=1e-6)  # |dp| <= p(1 - p) dlogit <= dlogit / 4: 1e-6 clears 7.9e-7 / 4


def test_clinical_values_are_used_and_missing_ones_flagged(scoring_bundle, scorer, test_images):
    man = pd.read_csv(scoring_bundle["test"] / "manifest.csv")
    frame = read_frame(test_images[0])
    given = {c: man.loc[0, c] for c in scorer.clinical}
    full, none = scorer.score([frame, frame], [given, None], heatmaps=False)
    assert not full.clinical_missing and (none.probability is None or none.clinical_missing)


def test_score_table_flags_checks_and_equals_predict_proba(tmp_path):
    """The one table step: probabilities equal the bundle's model, clinical values are checked
    (far outside the training range: not scored unless check_ranges=False), missing ones flagged."""
    from usher2.fusion.bundle import load_bundle
    from usher2.fusion.fit import fit_cohort
    from usher2.score.engine import score_table

    rng = np.random.default_rng(0)
    n = 40
    y = np.arange(n) % 2
    ids = [f"c{i}" for i in range(n)]
    feats = pd.DataFrame({"case_id": ids, "radiomics_a": rng.normal(size=n) + y, "radiomics_b": rng.normal(size=n)})
    manifest = pd.DataFrame({"case_id": ids, "patient_id": ids, "label": y, "age": rng.uniform(30, 80, n)})
    res = fit_cohort(feats, manifest, tmp_path / "b", family="combined", clinical=["age"], outer_folds=3, inner_folds=2)
    b = load_bundle(res.bundle)
    X = (
        feats.set_index("case_id")
        .iloc[:4]
        .assign(age=[50.0, np.nan, 5000.0, 60.0], mask_uncertainty=[0.1, 0.9, 0.1, np.nan])
    )
    out = score_table(b, X)
    ok = [0, 1, 3]
    expected = b.model.predict_proba(X.iloc[ok][list(b.columns)])[:, 1]
    np.testing.assert_allclose(out["probability"].to_numpy()[ok], expected, rtol=0, atol=0)  # the same arithmetic
    assert out["label"].tolist()[:2] == [int(expected[0] >= b.threshold), int(expected[1] >= b.threshold)]
    assert out["clinical_missing"].tolist() == [False, True, False, False]
    assert np.isnan(out["probability"].iloc[2]) and "clinical.age" in out["error"].iloc[2]
    assert out["low_segmentation_confidence"].tolist() == [False, True, False, False]  # 0.45 bits, NaN: not flagged
    lenient = score_table(b, X, check_ranges=False)
    assert lenient["error"].isna().all() and np.isfinite(lenient["probability"]).all()
    with pytest.raises(InputError, match="columns the bundle was fitted on"):
        score_table(b, X.drop(columns=["radiomics_a"]))


def test_the_two_radiomics_backends_give_the_same_probabilities(scoring_bundle, scorer, test_images, torch_one_thread):
    """The scorer's default radiomics backend is torch; pyradiomics (the reference, which computed the
    bundle's training features) scores the same frames to the same probabilities. The bundle's
    Original first-order/GLCM/shape columns agree to ~1e-12 relative (tests/features/torchrad); the
    networks run identically, so the logit moves by ~1e-12 x |coef . x| and p by less: 1e-9 clears it."""
    ref = FrameScorer(scoring_bundle["bundle"], cam=None, radiomics_backend="pyradiomics")
    assert scorer.model_info["radiomics_backend"] == {"scoring": "torch", "training": "pyradiomics"}
    assert ref.model_info["radiomics_backend"]["scoring"] == "pyradiomics"
    frames = [read_frame(p) for p in test_images[:8]]
    a, b = scorer.score(frames, heatmaps=False), ref.score(frames, heatmaps=False)
    scored = [(x, y) for x, y in zip(a, b, strict=True) if y.probability is not None]
    assert len(scored) >= 4 and all(x.probability is not None for x, _ in scored)
    for x, y in scored:
        assert x.probability == pytest.approx(y.probability, abs=1e-9) and x.label == y.label
        for c, v in y.features.items():
            assert x.features[c] == pytest.approx(v, rel=1e-9, abs=1e-9), c


def test_parameters_the_torch_backend_cannot_compute_fall_back_to_pyradiomics():
    from usher2.features.config import ExtractConfig
    from usher2.features.models import radiomics_extractor
    from usher2.features.radiomics import RadiomicsExtractor
    from usher2.features.torchrad.engine import TorchRadiomics

    params = {"imageType": {"Original": {}}, "featureClass": {"firstorder": None}, "setting": {"binWidth": 8}}
    cfg = ExtractConfig(params=params, backbones=(), radiomics_backend="torch")
    assert isinstance(radiomics_extractor(cfg), TorchRadiomics)
    normalised = {**params, "setting": {"binWidth": 8, "normalize": True}}
    cfg = ExtractConfig(params=normalised, backbones=(), radiomics_backend="torch")
    assert isinstance(radiomics_extractor(cfg), RadiomicsExtractor)
    with pytest.raises(InputError, match="radiomics_backend"):
        ExtractConfig(backbones=(), radiomics_backend="fast")
