"""Image formation: fully developed speckle and the point response."""

from __future__ import annotations

import numpy as np
import pytest

from usher2.simulate import RAYLEIGH_SNR, SimulationConfig, envelope_snr, homogeneous_envelope
from usher2.simulate.speckle import RFGrid, log_compress, render_envelope


def test_rayleigh_snr_constant() -> None:
    # sqrt(pi / (4 - pi)) by hand
    assert RAYLEIGH_SNR == pytest.approx(1.9131, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_homogeneous_envelope_is_fully_developed_speckle(seed: int) -> None:
    env = homogeneous_envelope(seed)
    assert env.shape == (256 * 6, 256)
    assert np.isfinite(env).all()
    assert envelope_snr(env) == pytest.approx(1.91, abs=0.1)


def test_compounding_raises_snr() -> None:
    cfg = SimulationConfig()
    single = envelope_snr(homogeneous_envelope(0, cfg))
    compound = envelope_snr(homogeneous_envelope(0, cfg, cfg.clean))
    # Three partly decorrelated looks: above one look, at most sqrt(3) times it.
    assert single * 1.2 < compound < single * np.sqrt(3) + 0.05


def test_point_response_is_centred_and_symmetric() -> None:
    cfg = SimulationConfig(image_size=(64, 64), fov_mm=(10.0, 10.0))
    grid = RFGrid.from_config(cfg)
    s = np.zeros(grid.shape, np.float32)
    s[200, grid.pad_cols + 30] = 1.0
    env = render_envelope(s, grid, cfg.degraded.__class__(noise_db=-200.0), cfg, np.random.default_rng(0))
    r, c = np.unravel_index(np.argmax(env), env.shape)
    assert (r, c) == (200, 30)
    assert env[r, c - 2] == pytest.approx(env[r, c + 2], rel=1e-3)


def test_log_compress_levels() -> None:
    # Mean speckle of unit reflectivity sits 10 dB below white: 1 - 10/50 on a 50 dB range.
    assert float(log_compress(np.array([np.sqrt(np.pi / 2)]), 50.0)[0]) == pytest.approx(0.8, abs=1e-6)
    assert float(log_compress(np.array([0.0]), 50.0)[0]) == 0.0
