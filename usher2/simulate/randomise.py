"""Randomised image-formation settings: a family of virtual scanners instead of one.

Networks trained on one rendering setting learn that setting (issue 23: the enhancer lost to
non-local means on frames from another image-formation model). :data:`TRAINING_RANGES` spans the
settings training draws from; :func:`random_render_settings` draws one. The shifted evaluation
settings used to measure generalisation lie *outside* these ranges on purpose, so that a network
trained on the family is still tested on a scanner it never saw.

Example:
    >>> import numpy as np
    >>> s = random_render_settings(np.random.default_rng(0))
    >>> TRAINING_RANGES["f0_mhz"][0] <= s.f0_mhz <= TRAINING_RANGES["f0_mhz"][1]
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from usher2.simulate.config import RenderSettings, SimulationConfig

__all__ = ["COMPOUNDING_CHOICES", "TRAINING_RANGES", "random_render_settings", "randomised_configs"]

#: Uniform ranges of the degraded (input) rendering drawn in training.
TRAINING_RANGES: dict[str, tuple[float, float]] = {
    "f0_mhz": (4.0, 9.0),
    "bandwidth": (0.4, 0.8),
    "lateral_fwhm_mm": (0.35, 1.0),
    "focus_mm": (12.0, 26.0),
    "depth_of_field_mm": (8.0, 20.0),
    "noise_db": (-70.0, -38.0),
    "clutter": (0.0, 0.5),
    "dynamic_range_db": (40.0, 65.0),
    "gain_error_db": (0.0, 6.0),
    "tgc_error": (0.0, 0.25),
}

#: Spatial-compounding choices drawn in training (equal odds).
COMPOUNDING_CHOICES: tuple[tuple[float, ...], ...] = ((0.0,), (-5.0, 0.0, 5.0), (-8.0, 0.0, 8.0))


def random_render_settings(
    rng: np.random.Generator, ranges: dict[str, tuple[float, float]] | None = None
) -> RenderSettings:
    """One degraded rendering setting drawn uniformly from ``ranges`` (default :data:`TRAINING_RANGES`)."""
    r = TRAINING_RANGES if ranges is None else ranges
    values: dict[str, Any] = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in r.items()}
    values["compound_angles_deg"] = COMPOUNDING_CHOICES[int(rng.integers(len(COMPOUNDING_CHOICES)))]
    return RenderSettings(**values)


def randomised_configs(n: int, seed: int, image_size: int = 256) -> list[SimulationConfig]:
    """``n`` simulation configs whose degraded rendering is drawn from :data:`TRAINING_RANGES` (seeded).

    Each config renders one sub-cohort; the clean rendering stays the default high-quality one.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng([seed, 23])
    return [
        SimulationConfig(image_size=(image_size, image_size), degraded=random_render_settings(rng)) for _ in range(n)
    ]
