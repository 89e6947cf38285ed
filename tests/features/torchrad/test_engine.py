"""The torch radiomics engine against pyradiomics, end to end: every column of usher2's default
parameters (Original, Wavelet, LoG 1-3 mm; all classes), frames of different sizes in one batch."""

from __future__ import annotations

import numpy as np
import pytest

from usher2.features.radiomics import RadiomicsExtractor, load_params
from usher2.features.torchrad.engine import TorchRadiomics, full_columns, unsupported
from usher2.io.errors import InputError


def _close(ours: dict[str, float], ref: dict[str, float], scale: dict[str, float]) -> list[str]:
    """Columns outside the issue's bar: 1e-6 relative, or 1e-6 of the column's scale absolute for the
    filtered images (pyradiomics stores them in float32: ~3e-7 of their scale, see test_filters.py)."""
    bad = []
    for c, r in ref.items():
        o = ours[c]
        if not np.isclose(o, r, rtol=1e-6, atol=max(1e-9, 1e-6 * scale.get(c, 0.0))):
            bad.append(f"{c}: {o!r} vs {r!r}")
    return bad


def test_default_columns_are_pyradiomics_columns(sim_rois):
    _, img, mask = sim_rois[0]
    ref = RadiomicsExtractor().extract(img, mask.astype(np.uint8))
    assert set(full_columns(load_params())) == set(ref)


@pytest.mark.slow
def test_every_default_column_equals_pyradiomics_on_a_ragged_batch(sim_rois, edge_rois, torch_one_thread):
    rois = [r for r in sim_rois[:6]] + [r for r in edge_rois if r[0] in ("border", "ring", "two-blobs")]
    rois.append(("crop", sim_rois[6][1][10:110, 5:100].copy(), sim_rois[6][2][10:110, 5:100].copy()))
    rows = TorchRadiomics().extract_batch([r[1] for r in rois], [r[2] for r in rois])
    refs = [RadiomicsExtractor().extract(img, m.astype(np.uint8)) for _, img, m in rois]
    # the absolute scale of a filtered image's first-order values: its largest magnitude in the ROI
    for (name, _, _), row, ref in zip(rois, rows, refs, strict=True):
        scale = {c: abs(ref[c.replace(c.split("_")[-1], "Maximum")]) + abs(ref[c.replace(c.split("_")[-1], "Minimum")])
                 for c in ref if "_firstorder_" in c and not c.startswith("radiomics_original")}  # fmt: skip
        assert list(row) == full_columns(load_params())
        bad = _close(row, ref, scale)
        assert not bad, f"{name}: {len(bad)} columns differ, e.g. {bad[:5]}"


def test_a_subset_equals_the_full_extraction_and_errors_are_per_frame(sim_rois, edge_rois):
    cols = [
        "radiomics_original_shape2D_Elongation",
        "radiomics_original_glszm_ZoneEntropy",
        "radiomics_wavelet-HH_glcm_Idm",
        "radiomics_log-sigma-2-0-mm-3D_firstorder_Mean",
    ]
    _, img, mask = sim_rois[1]
    line = next(r for r in edge_rois if r[0] == "line-1px")
    rows = TorchRadiomics(columns=cols).extract_batch([img, line[1], img], [mask, line[2], np.zeros_like(mask)])
    ref = RadiomicsExtractor(columns=cols).extract(img, mask.astype(np.uint8))
    assert list(rows[0]) == cols
    assert not _close(rows[0], ref, {cols[3]: 255.0})
    assert isinstance(rows[1], InputError) and "fewer than 2 dimensions" in str(rows[1])
    assert isinstance(rows[2], InputError) and "empty mask" in str(rows[2])


def test_settings_the_torch_backend_does_not_compute_are_refused_by_name():
    assert unsupported(load_params()) is None
    with pytest.raises(InputError, match="setting normalize=True"):
        TorchRadiomics({"setting": {"binWidth": 8, "normalize": True}})
    with pytest.raises(InputError, match="image type Square"):
        TorchRadiomics({"imageType": {"Square": {}}, "setting": {"binWidth": 8}})


def test_minimum_roi_size_refuses_per_frame(sim_rois):
    """A frame at or under ``minimumROISize`` is refused as pyradiomics refuses it; larger ones pass."""
    _, img, mask = sim_rois[0]
    params = {**load_params(), "setting": {**load_params()["setting"], "minimumROISize": int(mask.sum())}}
    cols = ["radiomics_original_firstorder_Mean"]
    rows = TorchRadiomics(params, columns=cols).extract_batch([img, img], [mask, mask | np.roll(mask, 3, 1)])
    assert isinstance(rows[0], InputError) and "minimumROISize" in str(rows[0])
    assert rows[1][cols[0]] == pytest.approx(float(img[mask | np.roll(mask, 3, 1)].astype(float).mean()), rel=1e-12)
