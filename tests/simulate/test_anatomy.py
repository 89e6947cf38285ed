"""The lesion and its surroundings (usher2.simulate.anatomy): the mask has the drawn size and shape, the
lesion has the drawn echo level, and the traits check themselves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from usher2.simulate.anatomy import FAT_LEVEL, LesionShape, LesionTraits, lesion_mask, make_scene

TRAIT_COLUMNS = {
    "tumour_size_mm": 14.0,
    "trait_aspect_ratio": 0.5,
    "trait_orientation_deg": -20.0,
    "trait_lobulation": 0.3,
    "trait_spiculation": 0.2,
    "trait_echogenicity_db": -18.0,
    "trait_heterogeneity": 0.4,
    "trait_posterior": -0.5,
    "trait_halo_mm": 1.0,
    "trait_calcifications": 7.0,
}


@pytest.mark.parametrize(("a_mm", "ar", "theta"), [(5.0, 0.5, 0.0), (8.0, 0.8, 30.0), (6.0, 0.4, 90.0)])
def test_plain_ellipse_mask_area(a_mm: float, ar: float, theta: float) -> None:
    traits = LesionTraits(size_mm=2 * a_mm, aspect_ratio=ar, orientation_deg=theta)
    m = lesion_mask((400, 400), 0.1, (20.0, 20.0), traits)
    expected = np.pi * (a_mm / 0.1) * (a_mm * ar / 0.1)
    assert m.sum() == pytest.approx(expected, rel=0.01)


def test_traits_validate() -> None:
    with pytest.raises(ValueError, match=r"aspect_ratio must be in \[0.05, 1\], got 1.5"):
        LesionTraits(aspect_ratio=1.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size_mm": 0.5}, r"LesionTraits\.size_mm must be in \[1, 100\] mm, got 0\.5"),
        ({"orientation_deg": 91.0}, r"orientation_deg must be in \[-90, 90\] degrees"),
        ({"echogenicity_db": float("nan")}, r"echogenicity_db must be in \[-60, 20\] dB, got nan"),
        ({"calcifications": 501}, r"calcifications must be an integer in \[0, 500\], got 501"),
    ],
)
def test_each_trait_names_itself_and_its_range(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LesionTraits(**kwargs)


def test_from_row_reads_the_label_table_columns() -> None:
    t = LesionTraits.from_row(TRAIT_COLUMNS)
    assert t == LesionTraits(
        size_mm=14.0,
        aspect_ratio=0.5,
        orientation_deg=-20.0,
        lobulation=0.3,
        spiculation=0.2,
        echogenicity_db=-18.0,
        heterogeneity=0.4,
        posterior=-0.5,
        halo_mm=1.0,
        calcifications=7,
    )
    assert isinstance(t.calcifications, int)


def test_a_vertical_long_axis_gives_a_taller_than_wide_box() -> None:
    # a = 5 mm, b = 2 mm at 0.1 mm/px: the box is 100 px tall and 40 px wide at 90 degrees, the reverse at 0
    traits = LesionTraits(size_mm=10.0, aspect_ratio=0.4, orientation_deg=90.0)
    for theta, (tall, wide) in ((90.0, (100, 40)), (0.0, (40, 100))):
        m = lesion_mask((200, 200), 0.1, (10.0, 10.0), traits, orientation_deg=theta)
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        assert abs(len(rows) - tall) <= 2 and abs(len(cols) - wide) <= 2


def test_a_lesion_outside_the_frame_gives_an_empty_mask() -> None:
    m = lesion_mask((64, 64), 0.1, (-20.0, 3.0), LesionTraits(size_mm=10.0))
    assert m.shape == (64, 64) and not m.any()


def test_lobulation_keeps_the_margin_within_its_harmonic_amplitudes() -> None:
    """The boundary radius is 1 + lobulation * sum(amp_k cos(...)), with amp_k <= (0.16, 0.12, 0.09, 0.07, 0.05):
    the lobulated lesion lies between the ellipses scaled by 1 -+ 0.49."""
    traits = LesionTraits(size_mm=10.0, aspect_ratio=0.6, lobulation=1.0)
    shape = LesionShape.draw(traits, np.random.default_rng(3))
    assert shape.harmonics.shape == (5, 2) and shape.spikes.shape == (0, 3)  # no spiculation: no spikes
    assert (shape.harmonics[:, 0] <= [0.16, 0.12, 0.09, 0.07, 0.05]).all()
    lobed = lesion_mask((300, 300), 0.1, (15.0, 15.0), traits, shape)
    inner = lesion_mask((300, 300), 0.1, (15.0, 15.0), LesionTraits(size_mm=10.0 * 0.51, aspect_ratio=0.6))
    outer = lesion_mask((300, 300), 0.1, (15.0, 15.0), LesionTraits(size_mm=10.0 * 1.49, aspect_ratio=0.6))
    assert (lobed >= inner).all() and (lobed <= outer).all()
    plain = lesion_mask((300, 300), 0.1, (15.0, 15.0), traits)  # no shape given: the plain ellipse
    assert not np.array_equal(lobed, plain)
    assert plain.sum() == pytest.approx(math.pi * 50 * 30, rel=0.01)


def test_spiculation_sets_the_number_of_spikes() -> None:
    rng = np.random.default_rng(0)
    assert LesionShape.draw(LesionTraits(spiculation=1.0), rng).spikes.shape == (18, 3)  # round(3 + 15 * 1)
    assert LesionShape.draw(LesionTraits(spiculation=0.2), rng).spikes.shape == (6, 3)  # round(3 + 15 * 0.2)


def test_the_scene_has_the_lesion_at_its_drawn_echo_level_and_calcifications_inside() -> None:
    traits = LesionTraits(size_mm=12.0, aspect_ratio=0.6, echogenicity_db=-12.0, calcifications=5)
    shape = LesionShape.draw(traits, np.random.default_rng(0))
    sc = make_scene(traits, shape, (128, 128), 0.3125, np.random.default_rng(1))
    assert sc.reflectivity.shape == sc.mask.shape == (128, 128) and sc.reflectivity.dtype == np.float32
    # a plain ellipse (no lobulation or spiculation): pi a b in pixels
    assert sc.mask.sum() == pytest.approx(math.pi * (6.0 / 0.3125) * (3.6 / 0.3125), rel=0.03)
    # No heterogeneity, halo or posterior feature: deep inside the lesion the reflectivity is exactly
    # fat * 10^(dB / 20) = 0.3 * 10^(-0.6) = 0.0754 (the edge blur reaches ~3 px in)
    from scipy.ndimage import binary_erosion

    core = binary_erosion(sc.mask, iterations=4)
    assert core.sum() > 50
    np.testing.assert_allclose(sc.reflectivity[core], FAT_LEVEL * 10 ** (-12.0 / 20), rtol=1e-4)
    assert sc.points.shape == (5, 3)
    rows, cols = sc.points[:, 0].astype(int), sc.points[:, 1].astype(int)
    assert sc.mask[rows, cols].all()
    assert ((sc.points[:, 2] >= 0.6) & (sc.points[:, 2] <= 1.0)).all()


def test_the_scene_is_seeded() -> None:
    traits = LesionTraits(lobulation=0.5, spiculation=0.5, heterogeneity=0.5, halo_mm=1.0, posterior=0.5)
    shape = LesionShape.draw(traits, np.random.default_rng(0))
    a = make_scene(traits, shape, (96, 96), 0.4, np.random.default_rng(7), view_jitter=True)
    b = make_scene(traits, shape, (96, 96), 0.4, np.random.default_rng(7), view_jitter=True)
    c = make_scene(traits, shape, (96, 96), 0.4, np.random.default_rng(8), view_jitter=True)
    np.testing.assert_array_equal(a.reflectivity, b.reflectivity)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert not np.array_equal(a.reflectivity, c.reflectivity)
    assert np.isfinite(a.reflectivity).all() and (a.reflectivity >= 0).all()


def test_a_lesion_too_small_for_the_pixels_is_refused_with_the_fix() -> None:
    # a 1 mm x 0.05 mm lesion on 5 mm pixels covers no pixel centre
    traits = LesionTraits(size_mm=1.0, aspect_ratio=0.05)
    shape = LesionShape.draw(traits, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"lesion of 1\.0 mm gives an empty mask at 5\.0 mm/px; use a finer spacing"):
        make_scene(traits, shape, (32, 32), 5.0, np.random.default_rng(0))
