"""The torch GLRLM equals pyradiomics' (issue 25): every feature, one batch per fixture.

Tolerances: the issue's bar, 1e-6 relative with 1e-9 absolute near zero (both paths are float64
and agree to ~1e-14: they differ only in the order of the sums), and 1e-12 for a ROI batched
with others vs alone (the same runs, summed in a different order) and for the torch path vs the
numpy one (the same matrices, summed in a different order).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from radiomics import imageoperations

from usher2.features.torchrad import glrlm
from usher2.features.torchrad._zones import size_matrix
from usher2.io.errors import InputError

RTOL, ATOL = 1e-6, 1e-9


def binned_batch(rois: list[tuple[str, np.ndarray, np.ndarray]]) -> torch.Tensor:
    """pyradiomics' own discretisation (binWidth 8) of each ROI on its bounding box (as pyradiomics
    crops it), zero-padded into one ``(B, H, W)`` batch of ragged ROIs."""
    crops = []
    for _, img, mask in rois:
        ys, xs = np.nonzero(mask)
        box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        binned, _ = imageoperations.binImage(img[box], mask[box], binWidth=8)
        crops.append(np.where(mask[box], binned, 0))
    out = np.zeros((len(crops), max(c.shape[0] for c in crops), max(c.shape[1] for c in crops)), np.int64)
    for k, c in enumerate(crops):
        out[k, : c.shape[0], : c.shape[1]] = c
    return torch.from_numpy(out)


def compare(module, feature_class: str, rois, reference) -> int:
    """Assert every feature of ``module`` on every ROI pyradiomics accepts, all ROIs in one batch;
    returns how many ROIs pyradiomics accepted."""
    ours = module.compute(binned_batch(rois))
    checked = 0
    for k, (name, img, mask) in enumerate(rois):
        ref = reference(img, mask, feature_class)
        if isinstance(ref, InputError):
            continue
        checked += 1
        for feat in module.FEATURES:
            want = ref[f"original_{feature_class}_{feat}"]
            np.testing.assert_allclose(ours[feat][k].item(), want, rtol=RTOL, atol=ATOL, err_msg=f"{name} {feat}")
    return checked


def test_features_are_pyradiomics_enabled_by_default():
    from radiomics.glrlm import RadiomicsGLRLM

    enabled = {name for name, deprecated in RadiomicsGLRLM.getFeatureNames().items() if not deprecated}
    assert set(glrlm.FEATURES) == enabled


def test_equals_pyradiomics_on_simulated_rois(sim_rois, reference):
    assert compare(glrlm, "glrlm", sim_rois, reference) == len(sim_rois)


def test_equals_pyradiomics_on_busbra_rois(busbra_rois, reference):
    assert compare(glrlm, "glrlm", busbra_rois, reference) == len(busbra_rois)


def test_equals_pyradiomics_on_edge_rois(edge_rois, reference):
    refused = [name for name, img, mask in edge_rois if isinstance(reference(img, mask, "glrlm"), InputError)]
    assert refused == ["line-1px", "tiny-2px"]
    assert compare(glrlm, "glrlm", edge_rois, reference) == len(edge_rois) - 2


def test_a_roi_alone_equals_the_roi_in_a_batch(sim_rois, edge_rois):
    rois = sim_rois + edge_rois
    batched = glrlm.compute(binned_batch(rois))
    for k, roi in enumerate(rois):
        alone = glrlm.compute(binned_batch([roi]))
        for feat in glrlm.FEATURES:
            torch.testing.assert_close(batched[feat][k : k + 1], alone[feat], rtol=1e-12, atol=1e-12)


def test_horizontal_runs_are_pyradiomics_docstring_example():
    # pyradiomics' GLRLM docstring: this 5 x 5 image and its matrix P(i, j | 0 degrees)
    image = torch.tensor(
        [[5, 2, 5, 4, 4], [3, 3, 3, 1, 3], [2, 1, 1, 1, 3], [4, 2, 2, 2, 3], [3, 5, 3, 3, 2]]
    ).unsqueeze(0)
    expected = [[1, 0, 1, 0, 0], [3, 0, 1, 0, 0], [4, 1, 1, 0, 0], [1, 1, 0, 0, 0], [3, 0, 0, 0, 0]]
    group, level, length = glrlm.runs(image)
    horizontal = group == 0
    matrix = torch.zeros(5, 5, dtype=torch.int64)
    matrix.index_put_((level[horizontal] - 1, length[horizontal] - 1), torch.ones_like(level[horizontal]), True)
    assert matrix.tolist() == expected
    # every direction covers every pixel exactly once
    assert torch.bincount(group, weights=length.double()).tolist() == [25.0] * 4


def test_a_pixel_outside_the_roi_ends_a_run():
    _, level, length = glrlm.runs(torch.tensor([[[1, 1, 0, 1]]]))
    assert sorted(zip(level.tolist(), length.tolist(), strict=True)) == [(1, 1)] * 10 + [(1, 2)]


def test_names_select_features_and_unknown_names_are_refused(sim_rois):
    binned = binned_batch(sim_rois[:3])
    full = glrlm.compute(binned)
    some = glrlm.compute(binned, ["RunEntropy", "RunVariance"])
    assert list(some) == ["RunEntropy", "RunVariance"]
    torch.testing.assert_close(some["RunEntropy"], full["RunEntropy"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="available"):
        glrlm.compute(binned, ["ZoneEntropy"])


def test_an_empty_roi_is_refused():
    binned = torch.zeros(2, 3, 3, dtype=torch.int64)
    binned[0, 1, 1] = 1
    with pytest.raises(ValueError, match=r"ROI\(s\) \[1\]"):
        glrlm.compute(binned)


@pytest.mark.gpu
def test_cuda_equals_cpu(sim_rois):
    binned = binned_batch(sim_rois)
    cpu = glrlm.compute(binned)
    gpu = glrlm.compute(binned.cuda())
    for feat in glrlm.FEATURES:
        assert gpu[feat].device.type == "cuda"
        torch.testing.assert_close(gpu[feat].cpu(), cpu[feat], rtol=1e-12, atol=1e-12)


def test_torch_path_equals_numpy_path(sim_rois, edge_rois):
    # the CPU computes with numpy, other devices with torch; on the CPU both can be asked for.
    # The run matrices are equal (checked exactly); the features differ only in the order of the
    # float64 sums: 1e-12
    binned = binned_batch(sim_rois + edge_rois)
    fast = glrlm.compute(binned)
    slow = glrlm.compute(binned, backend="torch")
    for feat in glrlm.FEATURES:
        torch.testing.assert_close(slow[feat], fast[feat], rtol=1e-12, atol=1e-12)
    p, levels, lengths = glrlm.matrix_np(binned)
    group, level, length = glrlm.runs(binned)
    q, q_levels, q_lengths = size_matrix(group.numpy(), level.numpy(), length.numpy(), 4 * binned.shape[0])
    assert (p == q).all() and (levels == q_levels).all() and (lengths == q_lengths).all()


def test_a_batch_changed_in_place_is_laid_out_again():
    # the CPU layout of the last batch is reused for the same tensor until torch sees it change
    b = torch.tensor([[[1, 1, 2], [2, 2, 1]]])
    before = glrlm.compute(b)["RunPercentage"].item()
    b[0, 0, 1] = 2
    assert glrlm.compute(b)["RunPercentage"].item() == glrlm.compute(b.clone())["RunPercentage"].item() != before


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        glrlm.compute(torch.ones(1, 2, 2, dtype=torch.int64), backend="cuda")
