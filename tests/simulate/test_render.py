"""One frame: the lesion shows where the mask is, and the mask has the drawn size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from usher2.simulate import LesionTraits, SimulationConfig, render_frame


def test_rendered_mask_matches_drawn_size() -> None:
    traits = LesionTraits(size_mm=16.0, aspect_ratio=0.6, orientation_deg=20.0)
    f = render_frame(traits, seed=1, patient=0)
    a_px = 8.0 / f.spacing_mm
    assert (f.mask == 255).sum() == pytest.approx(np.pi * a_px * a_px * 0.6, rel=0.02)
    assert set(np.unique(f.mask).tolist()) == {0, 255}


def test_hypoechoic_lesion_is_darker_than_its_ring() -> None:
    traits = LesionTraits(size_mm=14.0, aspect_ratio=0.7, echogenicity_db=-15.0)
    f = render_frame(traits, seed=3, patient=5)
    mask = f.mask > 0
    k = np.ones((7, 7), np.uint8)
    inner = cv2.erode(f.mask, k) > 0
    ring = (cv2.dilate(f.mask, k, iterations=2) > 0) & ~(cv2.dilate(f.mask, k) > 0)
    assert inner.sum() > 100 and ring.sum() > 100
    # Lesion reflectivity is 25 dB below gland, 15 dB below fat: tens of grey levels darker.
    assert f.clean[inner].mean() < f.clean[ring].mean() - 40
    assert f.image[inner].mean() < f.image[ring].mean() - 20
    assert f.image.shape == f.clean.shape == f.mask.shape == (256, 256)
    assert mask.any()


def test_render_is_deterministic_and_seeded() -> None:
    cfg = SimulationConfig(image_size=(64, 64))
    t = LesionTraits(calcifications=3, spiculation=0.5, halo_mm=1.0, posterior=-0.5)
    a = render_frame(t, 0, 2, 0, cfg)
    b = render_frame(t, 0, 2, 0, cfg)
    c = render_frame(t, 1, 2, 0, cfg)
    for key in ("image", "clean", "mask"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.image, c.image)
