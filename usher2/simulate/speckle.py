r"""Image formation: the speckle convolution model.

For a scatterer field :math:`s(z, x) = R(z, x)\,n(z, x)` (reflectivity map :math:`R` times the
real part of circular complex Gaussian amplitudes, i.e. Rayleigh-distributed magnitudes) on an
RF grid (``axial_oversample`` samples per output row, one column per output column, plus margins),
the RF signal of one steering angle :math:`\theta` is

.. math::

    rf(z, x) = \Big[s \circledast h_{\theta, z}\Big](z, x)\, e^{-2 \alpha f_0 z} + \epsilon(z, x),\qquad
    h_{\theta,z}(\Delta z, \Delta x) = e^{-\Delta z^2 / 2\sigma_z^2}\, e^{-\Delta x^2 / 2\sigma_x(z)^2}
    \cos\!\big(2\pi k_0(\Delta z \cos\theta + \Delta x \sin\theta)\big)

with :math:`k_0 = 2 f_0 / c` (pulse-echo), :math:`\sigma_z` from the fractional bandwidth, and a
lateral width that grows away from the focus,
:math:`\sigma_x(z) = \sigma_{x,0}\sqrt{1 + ((z - z_f)/\text{dof})^2}` (applied row by row in the
lateral Fourier domain, i.e. a continuum of depth bands). :math:`\epsilon` is white electronic
noise. Time-gain compensation multiplies by :math:`g\,e^{2 \alpha f_0 z (1 + e)}` (gain error
:math:`g`, slope error :math:`e`), the envelope is :math:`|\text{hilbert}(rf)|` along depth,
envelopes of the steering angles are averaged (spatial compounding), resampled to the output grid
(area average), and log compressed:
:math:`I = 1 + 20\log_{10}(\text{env} / \text{env}_\text{white}) / \text{DR}`, clipped to [0, 1].

The PSF is normalised to unit energy, so unit reflectivity gives unit RF variance and a mean
envelope of :math:`\sqrt{\pi/2}` whatever the beam; glandular tissue (R = 1) displays 10 dB below
white.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import scipy.fft as sfft
from scipy.signal import hilbert

from usher2.simulate.config import RenderSettings, SimulationConfig

__all__ = [
    "RAYLEIGH_SNR",
    "RFGrid",
    "envelope_snr",
    "homogeneous_envelope",
    "log_compress",
    "render_envelope",
]

RAYLEIGH_SNR = math.sqrt(math.pi / (4.0 - math.pi))  # 1.913: mean/std of a Rayleigh variable
_RAYLEIGH_MEAN = math.sqrt(math.pi / 2.0)  # mean envelope of unit-variance RF
WHITE_HEADROOM_DB = 10.0  # glandular tissue (R = 1) sits this far below white


@dataclass(frozen=True)
class RFGrid:
    """The RF sampling grid of one image.

    Attributes:
        rows: RF rows inside the field of view (``H * axial_oversample``).
        cols: Columns inside the field of view (``W``).
        dz_mm: Axial RF sample spacing (mm).
        dx_mm: Lateral spacing (mm).
        pad_rows: Extra rows below the field of view (the lower half carries no scatterers, so the
            circular FFT convolution cannot wrap the bottom onto the skin).
        pad_cols: Extra columns on each side (scatterers exist beyond the field of view).

    Example:
        >>> g = RFGrid.from_config(SimulationConfig())
        >>> g.rows, g.cols, g.shape
        (1536, 256, (1584, 316))
    """

    rows: int
    cols: int
    dz_mm: float
    dx_mm: float
    pad_rows: int
    pad_cols: int

    @classmethod
    def from_config(cls, config: SimulationConfig) -> RFGrid:
        h, w = config.image_size
        k = config.axial_oversample
        sp = config.spacing_mm
        worst = max(config.clean, config.degraded, key=lambda s: s.lateral_fwhm_mm)
        sig_max = _lateral_sigma_mm(worst, np.array([0.0, config.fov_mm[0]])).max() / sp
        pad_cols = int(sfft.next_fast_len(w + 2 * math.ceil(4 * sig_max + 4)) - w)
        pad_cols += pad_cols % 2
        pad_rows = int(sfft.next_fast_len(h * k + 48) - h * k)
        return cls(h * k, w, sp / k, sp, pad_rows, pad_cols // 2)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows + pad_rows, cols + 2 * pad_cols)`` of the padded grid."""
        return (self.rows + self.pad_rows, self.cols + 2 * self.pad_cols)

    def depth_mm(self) -> np.ndarray:
        """``(rows + pad_rows,)`` depth of every RF row (mm, sample centres)."""
        return ((np.arange(self.shape[0]) + 0.5) * self.dz_mm).astype(np.float32)


def _lateral_sigma_mm(s: RenderSettings, z_mm: np.ndarray) -> np.ndarray:
    sigma0 = s.lateral_fwhm_mm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    return sigma0 * np.sqrt(1.0 + ((z_mm - s.focus_mm) / s.depth_of_field_mm) ** 2)


@lru_cache(maxsize=16)
def _transfer(
    grid: RFGrid, s: RenderSettings, theta_deg: float, c_mm_us: float, real: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Lateral ``(rows, kx)`` and axial ``(kz,)`` transfer functions, each normalised to unit energy."""
    nz, nx = grid.shape
    k0 = 2.0 * s.f0_mhz / c_mm_us  # cycles / mm along the beam (pulse-echo)
    theta = math.radians(theta_deg)
    kz0, kx0 = k0 * math.cos(theta), k0 * math.sin(theta)
    sig_k = s.bandwidth * k0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))  # spectral sigma of the pulse
    # Lateral: Gaussian beam of depth-dependent width, its spectrum shifted by the steering.
    kx = sfft.rfftfreq(nx, grid.dx_mm) if real else sfft.fftfreq(nx, grid.dx_mm)
    sig_x = _lateral_sigma_mm(s, grid.depth_mm().astype(np.float64))[:, None]
    # Sum the periodic images of the spectrum: the result is the exact sampled Gaussian beam. A
    # steered beam's spectrum reaches past the lateral Nyquist limit, and cutting it there rings.
    fs = 1.0 / grid.dx_mm
    lat = sum(np.exp(-2.0 * (math.pi * sig_x) ** 2 * (kx[None, :] + m * fs - kx0) ** 2) for m in (-1, 0, 1))
    # Unit energy per row: white scatterers keep their variance, so brightness does not depend on the beam.
    weights = np.ones_like(kx)
    if real:
        weights[1:] = 2.0
        if nx % 2 == 0:
            weights[-1] = 1.0
    lat /= np.sqrt((weights * lat**2).sum(axis=1, keepdims=True) / nx)
    if real:
        kz = sfft.rfftfreq(nz, grid.dz_mm)
        ax = np.exp(-((kz - kz0) ** 2) / (2 * sig_k**2)) + np.exp(-((kz + kz0) ** 2) / (2 * sig_k**2))
        wz = np.full_like(kz, 2.0)
        wz[0] = 1.0
        if nz % 2 == 0:
            wz[-1] = 1.0
        ax /= np.sqrt((wz * ax**2).sum() / nz)
    else:
        # One-sided (analytic) pulse: the real part of the result is the steered RF. Its energy is
        # twice the RF's, so the RF again has unit variance per unit reflectivity.
        kz = sfft.fftfreq(nz, grid.dz_mm)
        ax = np.exp(-((kz - kz0) ** 2) / (2 * sig_k**2))
        ax /= np.sqrt((ax**2).sum() / nz / 2.0)
    return lat.astype(np.float32), ax.astype(np.float32)


def _rf(scat_fx: np.ndarray, grid: RFGrid, s: RenderSettings, theta: float, c_mm_us: float) -> np.ndarray:
    """RF ``grid.shape`` of one steering angle from the lateral spectrum of the scatterers."""
    real = theta == 0.0
    lat, ax = _transfer(grid, s, theta, c_mm_us, real)
    nz, nx = grid.shape
    if real:
        line = sfft.irfft(scat_fx * lat, n=nx, axis=1, workers=1)
        return sfft.irfft(sfft.rfft(line, axis=0) * ax[:, None], n=nz, axis=0)
    line = sfft.ifft(scat_fx * lat, axis=1)
    return sfft.ifft(sfft.fft(line, axis=0) * ax[:, None], axis=0).real.astype(np.float32)


def render_envelope(
    scatterers: np.ndarray,
    grid: RFGrid,
    settings: RenderSettings,
    config: SimulationConfig,
    rng: np.random.Generator,
    *,
    gain_db: float = 0.0,
    tgc_error: float = 0.0,
) -> np.ndarray:
    """Envelope of one (compounded) acquisition of a scatterer field, on the RF grid.

    Args:
        scatterers: ``grid.shape`` float32 scatterer amplitudes (reflectivity × Gaussian).
        grid: The RF grid.
        settings: Beam, noise and compounding settings.
        config: Supplies sound speed and attenuation.
        rng: Draws the electronic noise.
        gain_db: Overall gain error (dB).
        tgc_error: Error of the TGC slope (fraction; 0 compensates the attenuation exactly).

    Returns:
        ``(grid.rows, grid.cols)`` float32 envelope (margins removed), before log compression.

    Example:
        >>> cfg = SimulationConfig(image_size=(64, 64), fov_mm=(10.0, 10.0))
        >>> g = RFGrid.from_config(cfg)
        >>> s = np.random.default_rng(0).standard_normal(g.shape, dtype=np.float32)
        >>> render_envelope(s, g, cfg.degraded, cfg, np.random.default_rng(1)).shape
        (384, 64)
    """
    if scatterers.shape != grid.shape:
        raise ValueError(f"scatterers must have the RF grid shape {grid.shape}, got {scatterers.shape}")
    c_mm_us = config.sound_speed_m_s / 1000.0
    z = grid.depth_mm()[:, None]
    alpha_np = config.attenuation_db_cm_mhz / (20.0 * math.log10(math.e)) / 10.0  # Np / mm / MHz
    loss = 2.0 * alpha_np * settings.f0_mhz * z
    atten = np.exp(-loss).astype(np.float32)
    tgc = (10.0 ** (gain_db / 20.0) * np.exp(loss * (1.0 + tgc_error))).astype(np.float32)
    noise_rms = 10.0 ** (settings.noise_db / 20.0)
    angles = settings.compound_angles_deg
    spectra: dict[bool, np.ndarray] = {}
    env_sum = np.zeros((grid.rows, grid.cols), np.float32)
    for theta in angles:
        real = theta == 0.0
        if real not in spectra:
            spectra[real] = (sfft.rfft if real else sfft.fft)(scatterers, axis=1)
        rf = _rf(spectra[real], grid, settings, theta, c_mm_us) * atten
        rf += rng.standard_normal(rf.shape, dtype=np.float32) * np.float32(noise_rms)
        rf *= tgc
        env = np.abs(hilbert(rf, axis=0).astype(np.complex64))
        env_sum += env[: grid.rows, grid.pad_cols : grid.pad_cols + grid.cols]
    return env_sum / np.float32(len(angles))


def log_compress(envelope: np.ndarray, dynamic_range_db: float) -> np.ndarray:
    """Map an envelope to [0, 1]: white is 10 dB above glandular tissue, black ``dynamic_range_db`` below.

    Args:
        envelope: Any shape, non-negative.
        dynamic_range_db: Displayed range (dB).

    Returns:
        Same shape, float32 in [0, 1].

    Example:
        >>> float(log_compress(np.array([np.sqrt(np.pi / 2)]), 50.0)[0])
        0.800000011920929
    """
    white = _RAYLEIGH_MEAN * 10.0 ** (WHITE_HEADROOM_DB / 20.0)
    db = 20.0 * np.log10(np.maximum(envelope, 1e-12) / white)
    return np.clip(1.0 + db / dynamic_range_db, 0.0, 1.0).astype(np.float32)


def homogeneous_envelope(
    seed: int = 0, config: SimulationConfig | None = None, settings: RenderSettings | None = None
) -> np.ndarray:
    """Envelope of a homogeneous phantom (unit reflectivity everywhere), before log compression.

    Fully developed speckle: every resolution cell holds many scatterers, so the envelope is
    Rayleigh distributed and its SNR (mean / std) is :data:`RAYLEIGH_SNR` ≈ 1.91.

    Args:
        seed: Seed of the scatterers and noise.
        config: Geometry and physics; the defaults when None.
        settings: The acquisition; ``config.degraded`` without noise, gain or TGC errors when None.

    Returns:
        ``(H * axial_oversample, W)`` float32 envelope on the RF grid.

    Example:
        >>> env = homogeneous_envelope(0, SimulationConfig(image_size=(128, 128), fov_mm=(20.0, 20.0)))
        >>> bool(abs(envelope_snr(env) - 1.91) < 0.1)
        True
    """
    config = config or SimulationConfig()
    if settings is None:
        d = config.degraded
        settings = RenderSettings(
            f0_mhz=d.f0_mhz,
            bandwidth=d.bandwidth,
            lateral_fwhm_mm=d.lateral_fwhm_mm,
            focus_mm=d.focus_mm,
            depth_of_field_mm=d.depth_of_field_mm,
            compound_angles_deg=(0.0,),
            noise_db=-120.0,
        )
    grid = RFGrid.from_config(config)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EC1]))
    scat = rng.standard_normal(grid.shape, dtype=np.float32)
    scat[grid.rows + grid.pad_rows // 2 :] = 0.0
    return render_envelope(scat, grid, settings, config, rng)


def envelope_snr(envelope: np.ndarray) -> float:
    """Speckle SNR, mean / std of the envelope (1.91 for fully developed speckle).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> env = np.abs(rng.standard_normal(100000) + 1j * rng.standard_normal(100000))
        >>> round(envelope_snr(env), 1)
        1.9
    """
    env = np.asarray(envelope, dtype=np.float64)
    std = float(env.std())
    if std == 0.0:
        raise ValueError("envelope is constant (std 0); speckle SNR is undefined")
    return float(env.mean()) / std


def resample(envelope: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average an RF-grid envelope ``(rows, cols)`` down to the output ``size = (H, W)``."""
    h, w = size
    return cv2.resize(envelope, (w, h), interpolation=cv2.INTER_AREA)
