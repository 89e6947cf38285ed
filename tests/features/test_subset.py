"""Subset extraction: only the requested columns, with the full extraction's values; unused image types never run."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from usher2.features.extract import ExtractConfig, frame_features
from usher2.features.lexicon import LEXICON_COLUMNS
from usher2.features.radiomics import RadiomicsExtractor, restrict_params
from usher2.io.errors import InputError

#: Default radiomics (Original + Wavelet + LoG), the three regions, lexicon and a random-weight backbone.
CFG = ExtractConfig(backbones=("resnet18=random",))


def _config() -> ExtractConfig:
    from usher2.features.deep import RandomInitWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        from usher2.features.extract import _deep

        _deep(CFG, "resnet18=random")  # built once here, quietly
    return CFG


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[tuple[np.ndarray, np.ndarray, None]]:
    """Three simulated 160-px frames with their lesion masks."""
    from usher2.simulate import SimulationConfig, simulate_cohort

    root = tmp_path_factory.mktemp("subset")
    df = simulate_cohort(3, 4242, root, config=SimulationConfig(image_size=(160, 160)), workers=1)
    out = []
    for _, r in df.iterrows():
        img = cv2.imread(str(root / r["image"]), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
        out.append((img, cv2.imread(str(root / r["mask"]), cv2.IMREAD_GRAYSCALE) > 0, None))
    return out


def _pick(columns: list[str], n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [columns[i] for i in sorted(rng.choice(len(columns), size=n, replace=False))]


def _assert_subset_equals_full(cfg: ExtractConfig, items: list, n: int = 40, seed: int = 0) -> None:
    full = frame_features(cfg, items)
    assert all(isinstance(f, dict) for f in full), full
    columns = _pick(sorted(full[0]), n, seed)
    sub = frame_features(cfg, items, columns)
    for f, s in zip(full, sub, strict=True):
        assert list(s) == columns
        np.testing.assert_allclose([s[c] for c in columns], [f[c] for c in columns], rtol=0, atol=1e-9)


def test_every_kind_of_column_equals_the_full_extraction_on_simulated_frames(frames):
    cfg = _config()
    full = frame_features(cfg, frames[:1])[0]
    kinds = {
        "lesion": [c for c in full if c.startswith(("radiomics_wavelet-", "radiomics_log-sigma-"))],
        "peritumoral": [c for c in full if c.startswith("radiomics_peritumoral_")],
        "posterior": [c for c in full if c.startswith("radiomics_posterior_")],
        "deep": [c for c in full if c.startswith("deep_resnet18_")],
    }
    assert set(LEXICON_COLUMNS) <= set(full) and all(kinds.values())
    for seed in range(3):
        _assert_subset_equals_full(cfg, frames, n=40, seed=seed)
    # one column of each kind alone, shape included
    alone = ["radiomics_original_shape2D_Elongation", "radiomics_wavelet-LL_glszm_ZoneEntropy", LEXICON_COLUMNS[4]]
    alone += [kinds["posterior"][7], kinds["deep"][3]]
    sub = frame_features(cfg, frames, alone)
    for f, s in zip(frame_features(cfg, frames), sub, strict=True):
        assert s == {c: f[c] for c in alone}


def test_restricted_params_keep_only_the_image_types_and_sigmas_in_use():
    cols = ["radiomics_original_firstorder_Mean", "radiomics_log-sigma-3-0-mm-3D_glcm_Idm"]
    p = restrict_params(None, cols)
    assert p["imageType"] == {"Original": {}, "LoG": {"sigma": [3.0]}}
    assert p["featureClass"] == {"firstorder": ["Mean"], "glcm": ["Idm"]} and p["setting"]["binWidth"] == 8
    with pytest.raises(InputError, match="image type 'square'"):
        restrict_params(None, ["radiomics_square_firstorder_Mean"])
    with pytest.raises(InputError, match="sigmas"):
        restrict_params(None, ["radiomics_log-sigma-5-0-mm-3D_firstorder_Mean"])
    with pytest.raises(InputError, match="'NoSuchFeature'"):
        restrict_params(None, ["radiomics_original_glcm_NoSuchFeature"])
    with pytest.raises(InputError, match="shape"):
        restrict_params(None, ["radiomics_wavelet-LH_shape2D_Elongation"])
    with pytest.raises(InputError, match="columns these extraction settings produce"):
        frame_features(ExtractConfig(backbones=()), [], ["clinical_age"])
    with pytest.raises(InputError, match="lexicon_orientation_sin"):
        frame_features(ExtractConfig(backbones=(), lexicon=False), [], [LEXICON_COLUMNS[0]])


def test_an_image_type_no_column_uses_is_never_filtered(frames, monkeypatch):
    import radiomics.imageoperations as ops

    img, mask, _ = frames[0]
    want = ["radiomics_original_glcm_Contrast", "radiomics_log-sigma-1-0-mm-3D_firstorder_Mean"]
    full = RadiomicsExtractor().extract(img * 255, mask)

    def boom(*args, **kwargs):
        raise AssertionError("the wavelet filter ran")

    monkeypatch.setattr(ops, "getWaveletImage", boom)
    calls = []
    log = ops.getLoGImage
    monkeypatch.setattr(ops, "getLoGImage", lambda *a, **k: calls.append(k["sigma"]) or log(*a, **k))
    sub = RadiomicsExtractor(columns=want).extract(img * 255, mask)
    assert sub == {c: full[c] for c in want} and calls == [[1.0]]


def test_failures_of_the_subset_are_per_frame(frames):
    img, mask, _ = frames[0]
    want = ["radiomics_original_firstorder_Mean", "radiomics_posterior_original_firstorder_Mean"]
    empty = np.zeros_like(mask)
    rows = frame_features(ExtractConfig(backbones=()), [(img, empty, None), (img, mask, None)], want)
    assert isinstance(rows[0], InputError) and list(rows[1]) == want


def test_real_bus_bra_rois_equal_the_full_extraction(bus_bra_root: Path):
    cfg = _config()
    items = []
    for case in ("bus_0001-l", "bus_0100-r", "bus_0500-l"):
        img = cv2.imread(str(bus_bra_root / "Images" / f"{case}.png"), cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(str(bus_bra_root / "Masks" / f"mask_{case[4:]}.png"), cv2.IMREAD_GRAYSCALE)
        if img is None or mask is None:
            pytest.skip(f"BUS-BRA case {case} is missing under {bus_bra_root}")
        items.append((img.astype(np.float32) / 255, mask > 0, None))
    _assert_subset_equals_full(cfg, items, n=60, seed=7)
