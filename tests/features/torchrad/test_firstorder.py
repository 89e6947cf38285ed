"""The torch first-order features equal pyradiomics' (issue 25): every feature, one batch per fixture.

Tolerances: the issue's bar, 1e-6 relative with 1e-9 absolute near zero. Both sides are float64
on the same float32 grey levels (pyradiomics casts ``imageArray[mask]`` to float64 first), so
they agree to ~1e-13: only the order of the sums differs (numpy's pairwise summation vs torch's
reductions); the order statistics are the same values and numpy's own interpolation, exactly.
A near-zero Skewness (a small difference of large cubes) is covered by the absolute 1e-9, and
the constant ROI's Entropy is ``-log2(1 + eps) ~ -3e-16`` on both sides. A ROI batched with
others vs alone: 1e-12 (the same arithmetic; only padding differs).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from usher2.features.torchrad import firstorder
from usher2.features.torchrad.discretise import discretise
from usher2.io.errors import InputError

RTOL, ATOL = 1e-6, 1e-9
SETTINGS = {"binWidth": 8, "label": 1, "normalize": False, "correctMask": True}


def _batch(rois: list[tuple[str, np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (float64 of the float32 values) and masks, zero-padded into one batch."""
    h = max(img.shape[0] for _, img, _ in rois)
    w = max(img.shape[1] for _, img, _ in rois)
    image = torch.zeros(len(rois), h, w, dtype=torch.float64)
    mask = torch.zeros(len(rois), h, w, dtype=torch.bool)
    for k, (_, img, m) in enumerate(rois):
        image[k, : img.shape[0], : img.shape[1]] = torch.from_numpy(img.astype(np.float64))
        mask[k, : m.shape[0], : m.shape[1]] = torch.from_numpy(m)
    return image, mask


def _compare(rois, reference, *, features=firstorder.FEATURES, bin_count=None, shift=0) -> int:
    """Assert the features of every ROI pyradiomics accepts; returns how many it accepted."""
    settings = {}
    if bin_count is not None:
        settings["binCount"] = bin_count
    if shift:
        settings["voxelArrayShift"] = shift
    accepted = [r for r in rois if not isinstance(reference(r[1], r[2], "firstorder", **settings), InputError)]
    image, mask = _batch(accepted)
    binned, _ = discretise(image, mask, bin_width=None if bin_count else 8, bin_count=bin_count)
    ours = firstorder.compute(image, mask, binned, voxel_array_shift=shift)
    for k, (name, img, m) in enumerate(accepted):
        ref = reference(img, m, "firstorder", **settings)
        for feat in features:
            want = ref[f"original_firstorder_{feat}"]
            np.testing.assert_allclose(ours[feat][k].item(), want, rtol=RTOL, atol=ATOL, err_msg=f"{name} {feat}")
    return len(accepted)


def test_features_are_pyradiomics_enabled_by_default():
    from radiomics.firstorder import RadiomicsFirstOrder

    enabled = {name for name, deprecated in RadiomicsFirstOrder.getFeatureNames().items() if not deprecated}
    assert set(firstorder.FEATURES) == enabled


def test_equals_pyradiomics_on_simulated_rois(sim_rois, reference):
    assert _compare(sim_rois, reference) == len(sim_rois)


def test_equals_pyradiomics_on_busbra_rois(busbra_rois, reference):
    assert _compare(busbra_rois, reference) == len(busbra_rois)


def test_equals_pyradiomics_on_edge_rois(edge_rois, reference):
    assert _compare(edge_rois, reference) == len(edge_rois) - 2  # pyradiomics refuses line-1px, tiny-2px


def test_histogram_features_with_bin_count(sim_rois, edge_rois, reference):
    rois = sim_rois[:6] + edge_rois
    assert _compare(rois, reference, features=("Entropy", "Uniformity"), bin_count=16) == len(rois) - 2


def test_voxel_array_shift(sim_rois, edge_rois, reference):
    rois = sim_rois[:4] + [r for r in edge_rois if r[0] in ("constant", "ring")]
    assert _compare(rois, reference, features=("Energy", "TotalEnergy", "RootMeanSquared"), shift=300) == 6


def test_total_energy_uses_the_pixel_area(sim_rois):
    """TotalEnergy is Energy times the pixel area: pyradiomics with spacing (0.5, 0.25) mm."""
    from usher2.features.radiomics import RadiomicsExtractor

    rois = sim_rois[:3]
    image, mask = _batch(rois)
    spacing = torch.tensor([[0.5, 0.25], [0.5, 0.25], [0.5, 0.25]], dtype=torch.float64)
    ours = firstorder.compute(image, mask, names=["TotalEnergy", "Energy"], spacing=spacing)
    params = {"imageType": {"Original": {}}, "featureClass": {"firstorder": None}, "setting": SETTINGS}
    for k, (name, img, m) in enumerate(rois):
        ref = RadiomicsExtractor(params).extract(img, m.astype(np.uint8), spacing=(0.5, 0.25))
        for feat in ("TotalEnergy", "Energy"):
            want = ref[f"radiomics_original_firstorder_{feat}"]
            np.testing.assert_allclose(ours[feat][k].item(), want, rtol=RTOL, atol=ATOL, err_msg=f"{name} {feat}")
    torch.testing.assert_close(ours["TotalEnergy"], ours["Energy"] * 0.125, rtol=1e-15, atol=0)


def test_roi_alone_equals_roi_in_batch(sim_rois, edge_rois):
    rois = sim_rois[:5] + [r for r in edge_rois if r[0] not in ("line-1px", "tiny-2px")]
    image, mask = _batch(rois)
    binned, _ = discretise(image, mask, bin_width=8)
    batch = firstorder.compute(image, mask, binned)
    for k in range(len(rois)):
        alone = firstorder.compute(image[k : k + 1], mask[k : k + 1], binned[k : k + 1])
        for feat in firstorder.FEATURES:
            torch.testing.assert_close(
                alone[feat][0], batch[feat][k], rtol=1e-12, atol=1e-12, msg=f"{rois[k][0]} {feat}"
            )


def test_hand_computed_values():
    """Four pixels 1, 2, 3, 4 (the fifth and sixth outside the ROI)."""
    image = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 50.0, 60.0]]], dtype=torch.float64)
    mask = torch.tensor([[[True, True, True], [True, False, False]]])
    binned = torch.tensor([[[1, 1, 2], [2, 0, 0]]])
    out = firstorder.compute(image, mask, binned)
    assert out["Mean"].item() == 2.5 and out["Median"].item() == 2.5 and out["Range"].item() == 3.0
    assert out["Energy"].item() == 30.0 and out["Variance"].item() == 1.25
    assert out["10Percentile"].item() == pytest.approx(1.3, abs=1e-15)  # numpy: 1 + 0.3 * (2 - 1)
    assert out["Skewness"].item() == 0.0 and out["Kurtosis"].item() == pytest.approx(1.64)
    assert out["Entropy"].item() == pytest.approx(1.0) and out["Uniformity"].item() == 0.5


def test_names_select_and_check():
    image = torch.rand(2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 5, 5, dtype=torch.bool)
    assert list(firstorder.compute(image, mask, names=["Median", "Mean"])) == ["Median", "Mean"]
    with pytest.raises(InputError, match="names among"):
        firstorder.compute(image, mask, names=["Medium"])
    with pytest.raises(InputError, match="Entropy and Uniformity"):
        firstorder.compute(image, mask, names=["Entropy"])
    with pytest.raises(InputError, match="empty ROIs \\[1\\]"):
        firstorder.compute(image, mask & torch.tensor([True, False])[:, None, None], names=["Mean"])


@pytest.mark.gpu
def test_cuda_equals_cpu(sim_rois):
    image, mask = _batch(sim_rois)
    binned, _ = discretise(image, mask, bin_width=8)
    cpu = firstorder.compute(image, mask, binned)
    gpu = firstorder.compute(image.cuda(), mask.cuda(), binned.cuda())
    for feat in firstorder.FEATURES:
        torch.testing.assert_close(gpu[feat].cpu(), cpu[feat], rtol=1e-12, atol=1e-12, msg=feat)


def test_numpy_and_torch_sorts_give_the_same_features(sim_rois, edge_rois):
    """The CPU path sorts each ROI with numpy, other devices with one torch sort of the packed rows:
    the same sorted values, so the same features, bit for bit."""
    from usher2.features.torchrad.discretise import RoiPixels

    rois = sim_rois[:4] + [r for r in edge_rois if r[0] not in ("line-1px", "tiny-2px")]
    image, mask = _batch(rois)
    binned, _ = discretise(image, mask, bin_width=8)
    px = RoiPixels.from_mask(mask)
    args = (px.values(image), px, px.values(binned))
    fast = firstorder.compute_pixels(*args, numpy_sort=True)
    slow = firstorder.compute_pixels(*args, numpy_sort=False)
    for feat in firstorder.FEATURES:
        assert torch.equal(fast[feat], slow[feat]), feat
    assert all(torch.equal(fast[k], v) for k, v in firstorder.compute(image, mask, binned).items())
