"""The torch discretisation equals pyradiomics' ``imageoperations.binImage`` (issue 25), as integers.

Bin indices are integers, so the tests ask for equality: every pixel of every ROI, one batch
per fixture, with ``binWidth`` 8 (usher2's), 25 (pyradiomics' default) and ``binCount`` 16,
and on float32 values chosen to sit exactly on, just below and just above bin edges, negative
values (filtered images) and flat ROIs. ``check_roi`` refuses exactly the ROIs pyradiomics'
``checkMask`` refuses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from radiomics import imageoperations

from usher2.features.torchrad.discretise import check_roi, crop_boxes, discretise
from usher2.io.errors import InputError

SETTINGS = [{"binWidth": 8}, {"binWidth": 25}, {"binCount": 16}]


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


def _ours(image: torch.Tensor, mask: torch.Tensor, setting: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return discretise(image, mask, bin_width=setting.get("binWidth"), bin_count=setting.get("binCount"))


def _assert_equal_bins(rois: list[tuple[str, np.ndarray, np.ndarray]], setting: dict) -> None:
    image, mask = _batch(rois)
    binned, n_levels = _ours(image, mask, setting)
    for k, (name, img, m) in enumerate(rois):
        want, _ = imageoperations.binImage(img, m, **setting)
        got = binned[k, : img.shape[0], : img.shape[1]].numpy()
        np.testing.assert_array_equal(got, np.where(m, want, 0), err_msg=f"{name} {setting}")
        assert not binned[k, img.shape[0] :].any() and not binned[k, :, img.shape[1] :].any(), name
        assert int(n_levels[k]) == int(want[m].max()), f"{name} {setting}: Ng"


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_equals_pyradiomics_on_simulated_rois(sim_rois, setting):
    _assert_equal_bins(sim_rois, setting)


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_equals_pyradiomics_on_busbra_rois(busbra_rois, setting):
    _assert_equal_bins(busbra_rois, setting)


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_equals_pyradiomics_on_edge_rois(edge_rois, setting):
    _assert_equal_bins(edge_rois, setting)  # binImage bins the refused ROIs too


@pytest.mark.parametrize("setting", [*SETTINGS, {"binWidth": 0.1}, {"binWidth": 3.7}, {"binCount": 7}], ids=str)
def test_float32_edges_equal_pyradiomics(setting):
    """Values on, just below and just above the edges, negative and tiny ones, flat ROIs: pyradiomics'
    float32 arithmetic (``min % W``, ``numpy.arange``'s float32 length and second value,
    ``numpy.linspace`` in float32) decides these, and is reproduced bit for bit."""
    rng = np.random.default_rng(11)
    rois = []
    for k in range(24):
        base = rng.integers(-6, 40, (9, 11)).astype(np.float64) * 8
        nudge = rng.choice([0.0, 1e-6, -1e-6, 1e-7, -1e-7, 0.5, -3.3], (9, 11))
        img = (base + nudge).astype(np.float32)
        if k % 4 == 1:
            img = (rng.normal(0, 1, (9, 11)) * 10.0 ** rng.uniform(-6, 2)).astype(np.float32)
        if k % 4 == 2:
            img = np.nextafter(img, np.float32(np.inf) if k % 8 == 2 else np.float32(-np.inf))
        if k % 8 == 3:
            img = np.full((9, 11), rng.choice([0.0, 8.0, -8.0, 1e-7, -1e-7, 3.3]), np.float32)
        mask = rng.random((9, 11)) < 0.6
        mask[4, 2:5] = True
        rois.append((f"roi{k}", img, mask))
    _assert_equal_bins(rois, setting)


def test_pyradiomics_docstring_example():
    """``getBinEdges``: values 54 to 166 with bin width 25 give the edges 50, 75, ..., 175."""
    img = torch.tensor([[[54.0, 74.999, 75.0, 166.0, 150.0, 125.0]]])
    binned, n_levels = discretise(img, torch.ones_like(img, dtype=torch.bool), bin_width=25)
    assert binned.tolist() == [[[1, 1, 2, 5, 5, 4]]] and n_levels.tolist() == [5]


def test_roi_alone_equals_roi_in_batch(sim_rois, edge_rois):
    rois = sim_rois[:5] + edge_rois
    image, mask = _batch(rois)
    for setting in SETTINGS:
        binned, n_levels = _ours(image, mask, setting)
        for k in (0, 3, 7, len(rois) - 1):
            alone, ng = _ours(image[k : k + 1], mask[k : k + 1], setting)
            assert torch.equal(alone[0], binned[k]) and int(ng[0]) == int(n_levels[k])


def test_outside_pixels_do_not_matter(sim_rois):
    """Only the ROI's values set the edges: changing the image outside the mask changes nothing."""
    image, mask = _batch(sim_rois[:4])
    noisy = torch.where(
        mask, image, image + 1000.0 * torch.rand(image.shape, generator=torch.Generator().manual_seed(0))
    )
    for setting in SETTINGS:
        assert torch.equal(_ours(image, mask, setting)[0], _ours(noisy, mask, setting)[0])


def test_needs_exactly_one_of_bin_width_and_bin_count():
    img, mask = torch.zeros(1, 3, 3), torch.ones(1, 3, 3, dtype=torch.bool)
    for kwargs in ({}, {"bin_width": 8, "bin_count": 16}, {"bin_width": 0}, {"bin_count": 2.5}):
        with pytest.raises(InputError):
            discretise(img, mask, **kwargs)
    with pytest.raises(InputError, match="bool tensor"):
        discretise(img, mask.float(), bin_width=8)


def test_check_roi_refuses_what_pyradiomics_refuses(edge_rois, sim_rois, reference):
    rois = sim_rois[:3] + edge_rois
    _, mask = _batch(rois)
    refused = [k for k, (_, img, m) in enumerate(rois) if isinstance(reference(img, m, "firstorder"), InputError)]
    assert [rois[k][0] for k in refused] == ["line-1px", "tiny-2px"]
    for k in range(len(rois)):
        if k in refused:
            with pytest.raises(InputError, match=r"mask 0 of the batch.*fewer than 2 dimensions"):
                check_roi(mask[k : k + 1])
        else:
            check_roi(mask[k : k + 1])
    # in a batch, the first refused ROI is named by its index
    with pytest.raises(InputError, match=r"mask 3 of the batch.*a 30 x 1 pixel bounding box: fewer than 2"):
        check_roi(mask)


def test_check_roi_single_pixel_size_and_dimensions():
    mask = torch.zeros(3, 8, 8, dtype=torch.bool)
    mask[0, 2:6, 2:6] = True
    mask[1, 3, 3] = True
    mask[2, 1:7, 4] = True
    with pytest.raises(InputError, match=r"mask 1 of the batch.*a single pixel"):
        check_roi(mask)
    check_roi(mask[2:], minimum_dimensions=1)
    check_roi(mask[:1], minimum_size=15)
    with pytest.raises(InputError, match="minimumROISize 16"):
        check_roi(mask[:1], minimum_size=16)  # pyradiomics refuses size <= minimumROISize
    with pytest.raises(InputError, match="empty"):
        check_roi(torch.zeros(1, 4, 4, dtype=torch.bool))


def test_crop_boxes_are_the_bounding_boxes(sim_rois, edge_rois):
    rois = sim_rois + edge_rois
    _, mask = _batch(rois)
    boxes = crop_boxes(mask).tolist()
    for (name, _, m), (y0, y1, x0, x1) in zip(rois, boxes, strict=True):
        ys, xs = np.nonzero(m)
        assert (y0, y1, x0, x1) == (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1), name


@pytest.mark.gpu
def test_cuda_equals_cpu(sim_rois):
    image, mask = _batch(sim_rois)
    for setting in SETTINGS:
        cpu = _ours(image, mask, setting)
        gpu = _ours(image.cuda(), mask.cuda(), setting)
        assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())


def test_roi_pixels_layout_and_both_reduction_paths(sim_rois, edge_rois):
    """The compact layout lists each ROI's pixels in row-major order; numpy's ``reduceat`` (the
    CPU path) and ``torch.segment_reduce`` (the other devices') give the same per-ROI reductions:
    minima and maxima exactly, sums to 1e-12 relative (both add in layout order, but numpy may
    pair the terms differently)."""
    from usher2.features.torchrad.discretise import RoiPixels

    rois = sim_rois[:4] + edge_rois
    image, mask = _batch(rois)
    mask[2] = False  # an empty ROI in the batch
    px = RoiPixels.from_mask(mask)
    assert torch.equal(px.index, torch.nonzero(mask.reshape(-1)).reshape(-1))
    assert px.counts.tolist() == mask.sum((1, 2)).tolist()
    values = px.values(image)
    for how, empty in (("min", 7.0), ("max", -7.0)):
        fast, slow = px.reduce(values, how, empty), px.reduce(values, how, empty, use_numpy=False)
        assert torch.equal(fast, slow) and fast[2].item() == empty
    torch.testing.assert_close(px.sum(values), px.reduce(values, "sum", 0.0, use_numpy=False), rtol=1e-12, atol=0)
    want = torch.where(mask, image, 0.0).sum((1, 2))
    torch.testing.assert_close(px.sum(values), want, rtol=1e-12, atol=0)
    # the layout cropped to the boxes holds the same pixels, and scatter puts them back
    crop = px.cropped(crop_boxes(mask))
    for k, (y0, y1, x0, x1) in enumerate(crop_boxes(mask).tolist()):
        back = crop.scatter(values)[k]
        assert torch.equal(back[: y1 - y0, : x1 - x0], torch.where(mask, image, 0.0)[k, y0:y1, x0:x1])


def test_roi_pixels_pairs_are_the_neighbours_inside_the_roi():
    from usher2.features.torchrad.discretise import RoiPixels

    mask = torch.from_numpy(np.random.default_rng(3).random((3, 7, 9)) < 0.6)
    px = RoiPixels.from_mask(mask)
    offsets = ((0, 1), (1, 1), (1, 0), (1, -1))
    src, dst, group = px.pairs(offsets)
    got = sorted(zip(px.index[src.long()].tolist(), px.index[dst.long()].tolist(), group.tolist(), strict=True))
    want = []
    for b, y, x in torch.nonzero(mask).tolist():
        for a, (dy, dx) in enumerate(offsets):
            if 0 <= y + dy < 7 and 0 <= x + dx < 9 and mask[b, y + dy, x + dx]:
                want.append(((b * 7 + y) * 9 + x, (b * 7 + y + dy) * 9 + x + dx, b * 4 + a))
    assert got == sorted(want)


def test_bin_pixels_are_the_discretised_roi_pixels(sim_rois, edge_rois):
    from usher2.features.torchrad.discretise import RoiPixels, bin_pixels

    image, mask = _batch(sim_rois[:4] + edge_rois)
    px = RoiPixels.from_mask(mask)
    for setting in SETTINGS:
        binned, _ = _ours(image, mask, setting)
        levels = bin_pixels(px.values(image), px, bin_width=setting.get("binWidth"), bin_count=setting.get("binCount"))
        assert torch.equal(levels, px.values(binned)) and bool((levels > 0).all())
