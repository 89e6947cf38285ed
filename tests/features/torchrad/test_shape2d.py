"""The torch 2D shape features equal pyradiomics' (issue 25): every feature, one batch per fixture.

Tolerances: the issue's bar, 1e-6 relative with 1e-9 absolute near zero. At 1 mm and at
(0.5, 0.25) mm every marching-squares coordinate is exact in float64, so MeshSurface and
MaximumDiameter are equal to the bit; the Perimeter is a sum of equal line lengths in another
order (~1e-15) and the axis lengths come from numpy's ``dot`` + ``eigvals`` vs a closed-form
2 x 2 eigen-decomposition (~1e-15). A ROI batched with others vs alone: 1e-12.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from usher2.features.torchrad import shape2d
from usher2.io.errors import InputError

RTOL, ATOL = 1e-6, 1e-9
SETTINGS = {"binWidth": 8, "label": 1, "normalize": False, "correctMask": True}


def _masks(rois: list[tuple[str, np.ndarray, np.ndarray]]) -> torch.Tensor:
    """The masks, zero-padded into one batch."""
    h = max(m.shape[0] for _, _, m in rois)
    w = max(m.shape[1] for _, _, m in rois)
    out = torch.zeros(len(rois), h, w, dtype=torch.bool)
    for k, (_, _, m) in enumerate(rois):
        out[k, : m.shape[0], : m.shape[1]] = torch.from_numpy(m)
    return out


def _assert_equal(ours: dict[str, torch.Tensor], k: int, ref: dict, name: str, prefix: str = "original_shape2D_"):
    for feat in shape2d.FEATURES:
        want = ref[prefix + feat]
        np.testing.assert_allclose(ours[feat][k].item(), want, rtol=RTOL, atol=ATOL, err_msg=f"{name} {feat}")


def _compare(rois, reference) -> int:
    """Assert every feature of every ROI pyradiomics accepts; returns how many it accepted."""
    accepted = [r for r in rois if not isinstance(reference(r[1], r[2], "shape2D"), InputError)]
    ours = shape2d.compute(_masks(accepted))
    for k, (name, img, m) in enumerate(accepted):
        _assert_equal(ours, k, reference(img, m, "shape2D"), name)
    return len(accepted)


def test_features_are_pyradiomics_enabled_by_default():
    from radiomics.shape2D import RadiomicsShape2D

    enabled = {name for name, deprecated in RadiomicsShape2D.getFeatureNames().items() if not deprecated}
    assert set(shape2d.FEATURES) == enabled


def test_equals_pyradiomics_on_simulated_rois(sim_rois, reference):
    assert _compare(sim_rois, reference) == len(sim_rois)


def test_equals_pyradiomics_on_busbra_rois(busbra_rois, reference):
    assert _compare(busbra_rois, reference) == len(busbra_rois)


def test_equals_pyradiomics_on_edge_rois(edge_rois, reference):
    assert _compare(edge_rois, reference) == len(edge_rois) - 2  # pyradiomics refuses line-1px, tiny-2px


@pytest.mark.parametrize("spacing", [(0.5, 0.25), (0.7, 1.3)])
def test_equals_pyradiomics_with_pixel_spacing(spacing, sim_rois, edge_rois):
    """Non-unit (and non-square) pixels: pyradiomics given the spacing (rows, columns) in mm."""
    from usher2.features.radiomics import RadiomicsExtractor

    rois = sim_rois[:6] + [r for r in edge_rois if r[0] not in ("line-1px", "tiny-2px")]
    params = {"imageType": {"Original": {}}, "featureClass": {"shape2D": None}, "setting": SETTINGS}
    ours = shape2d.compute(_masks(rois), torch.tensor([spacing] * len(rois), dtype=torch.float64))
    extractor = RadiomicsExtractor(params)
    for k, (name, img, m) in enumerate(rois):
        ref = extractor.extract(img, m.astype(np.uint8), spacing=spacing)
        _assert_equal(ours, k, ref, name, prefix="radiomics_original_shape2D_")


def test_roi_alone_equals_roi_in_batch(sim_rois, edge_rois):
    rois = sim_rois[:5] + [r for r in edge_rois if r[0] not in ("line-1px", "tiny-2px")]
    masks = _masks(rois)
    spacing = torch.rand(len(rois), 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.2
    batch = shape2d.compute(masks, spacing)
    for k in range(len(rois)):
        alone = shape2d.compute(masks[k : k + 1], spacing[k : k + 1])
        for feat in shape2d.FEATURES:
            torch.testing.assert_close(
                alone[feat][0], batch[feat][k], rtol=1e-12, atol=1e-12, msg=f"{rois[k][0]} {feat}"
            )


def test_maximum_diameter_equals_all_vertex_pairs():
    """The hull candidates give the same diameter as every pair of mesh vertices (random blobs)."""
    rng = np.random.default_rng(5)
    masks = torch.from_numpy(rng.random((6, 23, 19)) < 0.45)
    masks[:, 11, 3:15] = True
    got = shape2d.compute(masks, names=["MaximumDiameter"])["MaximumDiameter"]
    for k in range(masks.shape[0]):
        p = np.pad(masks[k].numpy(), 1)
        ys, xs = np.nonzero(p[:-1] != p[1:])
        pts = [(y + 0.5, x) for y, x in zip(ys, xs, strict=True)]
        ys, xs = np.nonzero(p[:, :-1] != p[:, 1:])
        pts += [(y, x + 0.5) for y, x in zip(ys, xs, strict=True)]
        v = np.array(pts)
        want = np.sqrt(((v[:, None] - v[None]) ** 2).sum(-1).max())
        assert got[k].item() == want


def test_hand_computed_shapes():
    """A 3 x 4 rectangle: the mesh cuts each corner by 1/8 pixel; an ellipse's pixel surface ~ pi a b."""
    m = torch.zeros(2, 41, 61, dtype=torch.bool)
    m[0, 1:4, 1:5] = True
    yy, xx = torch.meshgrid(torch.arange(41.0), torch.arange(61.0), indexing="ij")
    m[1] = ((yy - 20) / 15) ** 2 + ((xx - 30) / 25) ** 2 <= 1
    out = shape2d.compute(m)
    assert out["MeshSurface"][0].item() == 12 - 4 / 8 and out["PixelSurface"][0].item() == 12
    assert out["Perimeter"][0].item() == pytest.approx(2 * 2 + 2 * 3 + 4 * math.sqrt(0.5), rel=1e-15)
    assert out["MaximumDiameter"][0].item() == math.sqrt(20)  # side midpoints (1, 0.5) - (3, 4.5)
    assert out["PixelSurface"][1].item() == pytest.approx(math.pi * 15 * 25, rel=0.01)
    assert out["Elongation"][1].item() == pytest.approx(15 / 25, rel=0.02)  # pixelised ellipse
    assert out["MajorAxisLength"][1].item() == pytest.approx(2 * 25, rel=0.01)  # 4 sqrt(a^2 / 4)


def test_names_select_and_check():
    m = torch.ones(2, 4, 4, dtype=torch.bool)
    assert list(shape2d.compute(m, names=["Perimeter", "Elongation"])) == ["Perimeter", "Elongation"]
    with pytest.raises(InputError, match="names among"):
        shape2d.compute(m, names=["Volume"])
    with pytest.raises(InputError, match="spacing"):
        shape2d.compute(m, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(InputError, match="empty ROIs \\[0\\]"):
        shape2d.compute(m & torch.tensor([False, True])[:, None, None])


@pytest.mark.gpu
def test_cuda_equals_cpu(sim_rois):
    masks = _masks(sim_rois)
    spacing = torch.full((len(sim_rois), 2), 0.3, dtype=torch.float64)
    cpu = shape2d.compute(masks, spacing)
    gpu = shape2d.compute(masks.cuda(), spacing.cuda())
    for feat in shape2d.FEATURES:
        torch.testing.assert_close(gpu[feat].cpu(), cpu[feat], rtol=1e-12, atol=1e-12, msg=feat)


def test_a_given_pixel_layout_gives_the_same_features(sim_rois):
    """The engine passes the layout it already built: the same features, bit for bit."""
    from usher2.features.torchrad.discretise import RoiPixels

    masks = _masks(sim_rois[:4])
    given = shape2d.compute(masks, pixels=RoiPixels.from_mask(masks))
    for feat, values in shape2d.compute(masks).items():
        assert torch.equal(given[feat], values), feat
