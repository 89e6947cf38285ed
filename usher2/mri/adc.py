"""Apparent diffusion coefficient (ADC) from DWI at several b-values.

Mono-exponential model, fitted voxel by voxel by log-linear least squares::

    S(b) = S0 · exp(−b · ADC)   ⇔   ln S(b) = ln S0 − b · ADC

With b in s/mm², ADC is in mm²/s (brain and prostate tissue: about 0.5e-3 to 3e-3 mm²/s;
scanners often store ADC × 1e6).

- **Unweighted** (default): ordinary least squares on ``ln S``; with two b-values this is the
  usual two-point formula ``ADC = ln(S1/S2) / (b2 − b1)``.
- **Weighted** (``weighted=True``): weights ``S(b)²``, since ``var(ln S) ≈ σ² / S²`` for
  Gaussian/Rician noise of level σ at high SNR; this down-weights the noisy high-b points.
- **Non-positive signal** (background, noise floor) is clamped to ``floor`` before the log, so the
  result is always finite; voxels outside ``mask`` get ADC = 0 and S0 = 0.
- The ADC is not clipped: a noise-only voxel may give a negative value.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from usher2.io.errors import InputError

__all__ = ["adc_map"]


def adc_map(
    dwi: Mapping[float, np.ndarray],
    mask: np.ndarray | None = None,
    *,
    weighted: bool = False,
    floor: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit ADC and S0 voxel by voxel from diffusion-weighted signals.

    Args:
        dwi: ``{b-value in s/mm²: signal array}``, all arrays of one shape (e.g. ``(z, y, x)``),
            at least two distinct b-values. :meth:`usher2.mri.io.Volume.by_b_value` gives this.
        mask: Optional boolean (or 0/1) array of the same shape; voxels outside get 0.
        weighted: Weighted least squares with weights ``S²`` instead of ordinary least squares.
        floor: Value non-positive signal is clamped to; default the smallest positive signal in
            ``dwi`` (1.0 when there is none).

    Returns:
        ``(adc, s0)``, float64 arrays of the input shape; ADC in mm²/s.

    Raises:
        InputError: Fewer than two distinct b-values, a negative b-value, arrays of different
            shapes, NaN/infinite signal, a mask of another shape, or a non-positive ``floor``.

    Example:
        >>> b = {0.0: np.array([1000.0]), 1000.0: np.array([1000.0 * np.exp(-1.0)])}
        >>> adc, s0 = adc_map(b)
        >>> round(float(adc[0]), 12), round(float(s0[0]), 6)
        (0.001, 1000.0)
    """
    if len(dwi) < 2:
        raise InputError("dwi", "signals at two or more distinct b-values", f"{len(dwi)} b-value(s)")
    bs = np.array([float(b) for b in dwi], dtype=np.float64)
    if np.any(bs < 0) or not np.all(np.isfinite(bs)):
        raise InputError("dwi", "finite non-negative b-values (s/mm²)", f"{bs.tolist()}")
    shapes = {np.shape(a) for a in dwi.values()}
    if len(shapes) != 1:
        raise InputError("dwi", "arrays of one shape for every b-value", f"shapes {sorted(shapes)}")
    (shape,) = shapes
    signal = np.stack([np.asarray(a, dtype=np.float64) for a in dwi.values()])  # (n_b, ...)
    bad = int(signal.size - np.count_nonzero(np.isfinite(signal)))
    if bad:
        raise InputError("dwi", "finite signal", f"{bad} NaN or infinite values", fix="replace them before fitting")
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        if mask.shape != shape:
            raise InputError("mask", f"shape {shape} (the DWI shape)", f"shape {mask.shape}")
    if floor is None:
        positive = signal[signal > 0]
        floor = float(positive.min()) if positive.size else 1.0
    if not floor > 0:
        raise InputError("floor", "a positive signal floor", f"{floor}")
    y = np.log(np.maximum(signal, floor)).reshape(len(bs), -1)  # (n_b, n_vox)
    b = bs[:, None]
    w = np.maximum(signal, floor).reshape(len(bs), -1) ** 2 if weighted else np.ones_like(y)
    sw = w.sum(0)
    b_mean = (w * b).sum(0) / sw
    y_mean = (w * y).sum(0) / sw
    sxx = (w * (b - b_mean) ** 2).sum(0)
    if np.any(sxx <= 0):
        raise InputError("dwi", "two or more distinct b-values", f"b-values {bs.tolist()}")
    slope = (w * (b - b_mean) * (y - y_mean)).sum(0) / sxx
    adc = (-slope).reshape(shape)
    s0 = np.exp(y_mean - slope * b_mean).reshape(shape)
    if mask is not None:
        adc = np.where(mask, adc, 0.0)
        s0 = np.where(mask, s0, 0.0)
    return adc, s0
