"""The peritumoral ring and the posterior region, and the finite-row check (usher2.features.regions)."""

from __future__ import annotations

import numpy as np

from usher2.features.regions import disk, radiomics_row, region_masks
from usher2.io.errors import InputError


def test_ring_and_posterior_geometry_of_a_rectangle():
    m = np.zeros((100, 100), bool)
    m[20:40, 30:60] = True  # 600 px: equivalent radius 13.8, ring width max(3, round(2.76)) = 3
    r = region_masks(m)
    ring, post = r["peritumoral"], r["posterior"]
    assert not (ring & m).any() and not (post & m).any() and not (ring & post).any()
    # the ring is 3 px wide: the dilation by disk(3) reaches row 17 above and col 27 to the left, not beyond
    assert ring[17, 45] and not ring[16, 45] and ring[30, 27] and not ring[30, 26]
    # the posterior region: rows 40..59 (as tall as the lesion), cols 30..59, minus the ring rows 40..42
    assert post.sum() == (60 - 43) * 30 and post[43:60, 30:60].all()


def test_a_lesion_on_the_bottom_edge_has_no_posterior_region():
    m = np.zeros((50, 50), bool)
    m[40:50, 10:30] = True
    assert region_masks(m)["posterior"].sum() == 0


def test_disk_is_the_elliptical_element():
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    d = disk(3)
    assert d.shape == (7, 7) and np.array_equal(d, d[::-1]) and np.array_equal(d, d[:, ::-1])  # mirror-symmetric
    assert d[3].all() and d[:, 3].all() and d[0, 0] == d[0, 6] == d[6, 0] == d[6, 6] == 0  # axes full, corners out


class _Extractor:
    def __init__(self, row=None, error=None):
        self.row, self.error = row, error

    def extract(self, image, mask, spacing=None):
        if self.error is not None:
            raise self.error
        assert float(image.max()) == 255.0  # pixels in [0, 1] reach the extractor x 255
        return self.row


def test_radiomics_row_returns_errors_and_never_a_nan_row():
    px = np.ones((4, 4), np.float32)
    m = np.ones((4, 4), bool)
    assert radiomics_row(_Extractor({"a": 1.0}), px, m, None) == {"a": 1.0}
    err = radiomics_row(_Extractor({"a": float("nan"), "b": 1.0}), px, m, None)
    assert isinstance(err, InputError) and "NaN/inf in 1 columns" in str(err)
    bad = InputError("mask", "x", "y")
    assert radiomics_row(_Extractor(error=bad), px, m, None) is bad
