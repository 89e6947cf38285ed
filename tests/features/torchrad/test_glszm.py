"""The torch GLSZM equals pyradiomics' (issue 25): every feature, one batch per fixture.

Tolerances: the issue's bar, 1e-6 relative with 1e-9 absolute near zero (both paths are float64
and agree to ~1e-14: they differ only in the order of the sums), and 1e-12 for a ROI batched
with others vs alone (the same zones, summed in a different order) and for the torch path vs the
numpy one (the same zones, summed in a different order).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from usher2.features.torchrad import glszm
from usher2.io.errors import InputError

from .test_glrlm import binned_batch, compare


def test_features_are_pyradiomics_enabled_by_default():
    from radiomics.glszm import RadiomicsGLSZM

    enabled = {name for name, deprecated in RadiomicsGLSZM.getFeatureNames().items() if not deprecated}
    assert set(glszm.FEATURES) == enabled


def test_equals_pyradiomics_on_simulated_rois(sim_rois, reference):
    assert compare(glszm, "glszm", sim_rois, reference) == len(sim_rois)


def test_equals_pyradiomics_on_busbra_rois(busbra_rois, reference):
    assert compare(glszm, "glszm", busbra_rois, reference) == len(busbra_rois)


def test_equals_pyradiomics_on_edge_rois(edge_rois, reference):
    refused = [name for name, img, mask in edge_rois if isinstance(reference(img, mask, "glszm"), InputError)]
    assert refused == ["line-1px", "tiny-2px"]
    assert compare(glszm, "glszm", edge_rois, reference) == len(edge_rois) - 2


def test_zones_are_8_connected_as_in_pyradiomics(reference):
    # a 9 x 11 checkerboard: the squares of one colour touch only at corners, so 8-connectivity
    # makes 2 zones (50 and 49 pixels), 4-connectivity would make 99
    image = (np.indices((9, 11)).sum(0) % 2 * 100.0).astype(np.float32)
    mask = np.ones((9, 11), bool)
    ours = glszm.compute(binned_batch([("checker", image, mask)]))
    assert ours["ZonePercentage"].item() == pytest.approx(2 / 99, rel=1e-15)
    assert ours["LargeAreaEmphasis"].item() == pytest.approx((50**2 + 49**2) / 2, rel=1e-15)
    assert compare(glszm, "glszm", [("checker", image, mask)], reference) == 1


def test_zone_labels_equal_scipy_connected_components():
    rng = np.random.default_rng(5)
    binned = rng.integers(0, 4, (3, 40, 50))
    # a one-pixel-wide snake (rows joined at alternate ends): one zone of 980 pixels, the worst
    # case for label propagation
    snake = np.full((40, 50), 2)
    snake[::2, 1:-1] = 1
    snake[1::4, -2] = 1
    snake[3::4, 1] = 1
    binned = np.concatenate([binned, snake[None]])
    labels = glszm.zone_labels(torch.from_numpy(binned)).numpy()  # the torch path's labelling
    for b in range(binned.shape[0]):
        for level in range(1, binned[b].max() + 1):
            components, n = ndimage.label(binned[b] == level, structure=np.ones((3, 3)))
            for c in range(1, n + 1):
                assert len(np.unique(labels[b][components == c])) == 1, (b, level, c)
            ours = labels[b][binned[b] == level]
            assert len(np.unique(ours)) == n, (b, level)


def test_a_roi_alone_equals_the_roi_in_a_batch(sim_rois, edge_rois):
    rois = sim_rois + edge_rois
    batched = glszm.compute(binned_batch(rois))
    for k, roi in enumerate(rois):
        alone = glszm.compute(binned_batch([roi]))
        for feat in glszm.FEATURES:
            torch.testing.assert_close(batched[feat][k : k + 1], alone[feat], rtol=1e-12, atol=1e-12)


def test_names_select_features_and_unknown_names_are_refused(sim_rois):
    binned = binned_batch(sim_rois[:3])
    full = glszm.compute(binned)
    some = glszm.compute(binned, ["ZoneEntropy", "ZoneVariance"])
    assert list(some) == ["ZoneEntropy", "ZoneVariance"]
    torch.testing.assert_close(some["ZoneEntropy"], full["ZoneEntropy"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="available"):
        glszm.compute(binned, ["RunEntropy"])


def test_an_empty_roi_is_refused():
    binned = torch.zeros(2, 3, 3, dtype=torch.int64)
    binned[1, 1, 1] = 1
    with pytest.raises(ValueError, match=r"ROI\(s\) \[0\]"):
        glszm.compute(binned)


@pytest.mark.gpu
def test_cuda_equals_cpu(sim_rois):
    binned = binned_batch(sim_rois)
    cpu = glszm.compute(binned)
    gpu = glszm.compute(binned.cuda())
    for feat in glszm.FEATURES:
        assert gpu[feat].device.type == "cuda"
        torch.testing.assert_close(gpu[feat].cpu(), cpu[feat], rtol=1e-12, atol=1e-12)


def test_torch_path_equals_numpy_path(sim_rois, edge_rois):
    # the CPU labels zones with scikit-image, other devices with the torch union-find; on the CPU
    # both can be asked for. The zones are the same (checked exactly, as sorted lists); the
    # features differ only in the order of the float64 sums: 1e-12
    binned = binned_batch(sim_rois + edge_rois)
    fast = glszm.compute(binned)
    slow = glszm.compute(binned, backend="torch")
    for feat in glszm.FEATURES:
        torch.testing.assert_close(slow[feat], fast[feat], rtol=1e-12, atol=1e-12)
    ours = sorted(zip(*(v.tolist() for v in glszm.zones_np(binned)), strict=True))
    assert ours == sorted(zip(*(v.tolist() for v in glszm.zones(binned)), strict=True))


def test_numpy_zones_equal_scipy_connected_components():
    # the CPU path (scikit-image's labelling) on the batch of the test above, snake included
    rng = np.random.default_rng(5)
    snake = np.full((40, 50), 2)
    snake[::2, 1:-1] = 1
    snake[1::4, -2] = 1
    snake[3::4, 1] = 1
    binned = np.concatenate([rng.integers(0, 4, (3, 40, 50)), snake[None]])
    want = []
    for b in range(binned.shape[0]):
        for level in range(1, binned[b].max() + 1):
            components, _ = ndimage.label(binned[b] == level, structure=np.ones((3, 3)))
            want += [(b, level, int(a)) for a in np.bincount(components.ravel())[1:]]
    ours = zip(*(v.tolist() for v in glszm.zones_np(torch.from_numpy(binned))), strict=True)
    assert sorted(ours) == sorted(want)
    assert (3, 1, 980) in want  # the snake is one zone
