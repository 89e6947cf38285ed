"""The moment-ellipsoid fit: derivable values on squares and ellipses, lobulation, bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from usher2.features.morphology import ellipsoid_fit
from usher2.io.errors import InputError


def test_a_square_matches_the_analytic_overlap_with_its_moment_circle() -> None:
    # side 1: variance 1/12 per axis, so the moment circle has radius r = sqrt(4/12); it pokes out
    # of the square by 4 circular segments at distance d = 1/2 from the centre
    r, d = math.sqrt(4 / 12), 0.5
    segment = r * r * math.acos(d / r) - d * math.sqrt(r * r - d * d)
    overlap = math.pi * r * r - 4 * segment
    expected = 2 * overlap / (1 + math.pi * r * r)
    square = np.zeros((800, 800), bool)  # room for the circle: it reaches 0.577 of the side from the centre
    square[200:600, 200:600] = True
    assert ellipsoid_fit(square)["EllipsoidDice"] == pytest.approx(expected, abs=2e-3)
    assert expected == pytest.approx(0.905, abs=1e-3)


@pytest.mark.parametrize("angle", [0.0, 0.6])
def test_ellipses_and_ellipsoids_fit_themselves_whatever_the_spacing_and_rotation(angle: float) -> None:
    yy, xx = np.mgrid[:300, :200].astype(float)
    y, x = (yy - 150) * 0.5, (xx - 100) * 1.0  # spacing (0.5, 1) mm
    u, v = x * math.cos(angle) + y * math.sin(angle), -x * math.sin(angle) + y * math.cos(angle)
    ellipse = (u / 60) ** 2 + (v / 25) ** 2 <= 1
    assert ellipsoid_fit(ellipse, spacing=(0.5, 1.0))["EllipsoidDice"] == pytest.approx(1.0, abs=0.01)
    zz, yy, xx = np.mgrid[:30, :90, :90].astype(float)
    ellipsoid = ((zz - 15) * 3 / 36) ** 2 + ((yy - 45) / 30) ** 2 + ((xx - 45) / 18) ** 2 <= 1
    assert ellipsoid_fit(ellipsoid, spacing=(3, 1, 1))["EllipsoidDice"] == pytest.approx(1.0, abs=0.02)


def test_lobulated_margins_score_lower_the_deeper_the_lobes() -> None:
    yy, xx = np.mgrid[:400, :400].astype(float)
    rad, theta = np.hypot(yy - 200, xx - 200), np.arctan2(yy - 200, xx - 200)
    dice = [ellipsoid_fit(rad <= 120 * (1 + a * np.cos(5 * theta)))["EllipsoidDice"] for a in (0, 0.1, 0.2, 0.3)]
    assert dice[0] == pytest.approx(1.0, abs=0.01)
    assert all(a > b for a, b in itertools.pairwise(dice))
    # a star r = R(1 + a cos 5θ) against its moment circle (radius R to first order in a): the
    # symmetric difference is ∫ |r² - R²| / 2 dθ = a R² ∫ |cos 5θ| dθ = 4 a R², and
    # 1 - Dice = |A Δ E| / (|A| + |E|) = 4 a R² / (2 π R²) = 2a/π
    assert 1 - dice[1] == pytest.approx(2 * 0.1 / math.pi, rel=0.05)


def test_bad_masks_are_refused_with_what_arrived() -> None:
    with pytest.raises(InputError, match="empty"):
        ellipsoid_fit(np.zeros((5, 5), bool))
    with pytest.raises(InputError, match="spacing"):
        ellipsoid_fit(np.ones((5, 5), bool), spacing=(1, 1, 1))
    with pytest.raises(InputError, match="4 dimensions"):
        ellipsoid_fit(np.ones((2, 2, 2, 2), bool))
