"""Redrawn contours and their seeds (usher2.features.perturb)."""

from __future__ import annotations

import hashlib

import numpy as np

from usher2.features.perturb import contour_error, contour_seed


def test_contour_seed_is_a_sha256_prefix_stable_across_processes():
    digest = hashlib.sha256(b"case-7|contour-1").digest()[:8]
    assert contour_seed("case-7", "contour-1") == int.from_bytes(digest, "little")
    assert contour_seed("case-7", "contour-1") != contour_seed("case-7", "contour-2")


def test_contour_error_is_seeded_and_near_the_original():
    m = np.zeros((120, 120), bool)
    m[30:90, 20:100] = True
    a, b, c = contour_error(m, 0), contour_error(m, 0), contour_error(m, 1)
    assert a.shape == m.shape and a.dtype == bool
    assert np.array_equal(a, b) and not np.array_equal(a, c)  # same seed, same mask; another seed, another
    dice = 2 * int((a & m).sum()) / int(a.sum() + m.sum())
    assert 0.6 < dice < 1.0  # a segmenter's error scale: not the same contour, not another lesion
