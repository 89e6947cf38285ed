"""The enhancer contract: ``(B, 1, H, W)`` float in [0, 1] in, the same shape out.

Every enhancer, classical or learned, takes a NumPy array or a torch tensor and returns the
same type. ``strength`` is the speckle-preserving knob: the output is
``x + strength * (enhanced(x) - x)``, so 0 keeps the input (and all the speckle texture that
radiomics reads) and 1 is the full filter.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from usher2.registry import Registry

__all__ = ["ENHANCERS", "Enhancer", "check_batch"]

ENHANCERS: Registry[Enhancer] = Registry("enhancer")


def check_batch(x: np.ndarray, *, name: str = "input") -> np.ndarray:
    """Check a ``(B, 1, H, W)`` batch of finite floats in [0, 1]; return it as float32.

    Raises:
        ValueError: Wrong rank or channel count, non-float data, NaN/inf, values outside [0, 1].
    """
    if x.ndim != 4 or x.shape[1] != 1:
        fix = " (add axes with x[None, None] for one (H, W) frame)" if x.ndim == 2 else ""
        raise ValueError(f"{name} must be a (B, 1, H, W) batch, got shape {tuple(x.shape)}{fix}")
    if x.shape[0] == 0 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"{name} must be float in [0, 1], got dtype {x.dtype} (divide 8-bit data by 255, 16-bit by 65535)"
        )
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} NaN/inf pixels; expected finite values in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        fix = " (16-bit data? divide by 65535)" if hi > 255 else " (8-bit data? divide by 255)" if hi > 1 else ""
        raise ValueError(f"{name} must lie in [0, 1], got values in [{lo:g}, {hi:g}]{fix}")
    return x.astype(np.float32, copy=False)


class Enhancer(abc.ABC):
    """Base class: owns input checks, the torch/NumPy boundary and the strength blend.

    Subclasses implement :meth:`_enhance_numpy` on a checked float32 ``(B, 1, H, W)`` array.

    Args:
        strength: In [0, 1]; how much of the enhancement to apply (see the module docstring).
    """

    name: str = "enhancer"

    def __init__(self, *, strength: float = 1.0) -> None:
        if not (isinstance(strength, int | float) and 0.0 <= float(strength) <= 1.0):
            raise ValueError(f"strength must be in [0, 1], got {strength!r}")
        self.strength = float(strength)

    @abc.abstractmethod
    def _enhance_numpy(self, x: np.ndarray) -> np.ndarray:
        """``(B, 1, H, W)`` float32 in [0, 1] -> the same shape, full strength."""

    def settings(self) -> dict[str, Any]:
        """The constructor arguments, for provenance (saved next to outputs)."""
        return {"name": self.name, "strength": self.strength}

    def __call__(self, x: Any) -> Any:
        """Enhance a batch.

        Args:
            x: ``(B, 1, H, W)`` float NumPy array or torch tensor, values in [0, 1].

        Returns:
            The same type, shape and device, float32, values in [0, 1].
        """
        is_torch = type(x).__module__.startswith("torch")
        if is_torch:
            arr = x.detach().to("cpu").float().numpy()
        else:
            arr = np.asarray(x)
        arr = check_batch(arr)
        if self.strength == 0.0:
            out = arr.copy()
        else:
            full = self._enhance_numpy(arr).astype(np.float32, copy=False)
            if full.shape != arr.shape:  # a contract violation inside usher2, not bad input
                raise RuntimeError(f"{self.name} returned shape {full.shape} for input {arr.shape}")
            out = full if self.strength == 1.0 else arr + np.float32(self.strength) * (full - arr)
            out = np.clip(out, 0.0, 1.0)
        if is_torch:
            import torch

            return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "name")
        return f"{type(self).__name__}({args})"
