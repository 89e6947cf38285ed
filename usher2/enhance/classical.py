r"""Classical speckle filters behind the enhancer API (the baselines the GANs must beat).

All work frame by frame on float32 ``(H, W)`` in [0, 1]; borders are reflected.

* ``none``: identity.
* ``median``: ``scipy.ndimage.median_filter``.
* ``bilateral``: ``cv2.bilateralFilter`` (range σ in [0, 1] grey units).
* ``nlm``: non-local means, ``skimage.restoration.denoise_nl_means`` with the noise σ estimated
  per frame (``estimate_sigma``) and ``h = h_factor * σ``.
* ``srad``: speckle-reducing anisotropic diffusion (Yu & Acton, IEEE TIP 2002), hand-written
  (no maintained Python package implements it). With one-sided differences
  :math:`\nabla_{N,S,W,E} I`, :math:`G^2 = \sum \nabla^2 / I^2`, :math:`L = \sum \nabla / I`:

  .. math::

      q^2 = \frac{G^2/2 - L^2/16}{(1 + L/4)^2},\qquad
      c = \frac{1}{1 + (q^2 - q_0^2) / (q_0^2 (1 + q_0^2))}\ \text{clipped to}\ [0, 1],

  and :math:`I \leftarrow I + \tfrac{\Delta t}{4}(c_S \nabla_S + c_N \nabla_N + c_E \nabla_E + c_W \nabla_W)`
  (:math:`c_N = c_W = c_{i,j}`, :math:`c_S = c_{i+1,j}`, :math:`c_E = c_{i,j+1}`). The speckle
  scale :math:`q_0^2` is re-estimated each iteration as the median over the frame of the local
  (7 × 7) variance / mean², since homogeneous speckle covers most of a breast frame; the paper
  takes it from a user-drawn homogeneous region instead.
* ``lee``: the Lee filter (Lee 1980) for multiplicative noise, hand-written on SciPy's uniform
  filter: :math:`\hat I = \bar I + W (I - \bar I)`, :math:`W = 1 - C_u^2 / C_I^2` clipped to
  [0, 1], :math:`C_I^2` the local variance / mean², :math:`C_u^2` its median over the frame.
* ``bm3d``: registered only when the optional ``bm3d`` package is installed (non-commercial
  licence); σ estimated per frame.

The defaults above are textbook values. Fair baselines use the parameters frozen in
``tuned_classical.json`` beside this module (:func:`tuned_classical_params`): a small grid search
on simulated frames of the training distribution (``bench/tune_classical.py``), as a user with the
simulator would tune them, never on the frames they are evaluated on.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage
from skimage.restoration import denoise_nl_means, estimate_sigma

from usher2.enhance.base import ENHANCERS, Enhancer
from usher2.io.errors import InputError

__all__ = [
    "TUNED_CLASSICAL_FILE",
    "BilateralEnhancer",
    "IdentityEnhancer",
    "LeeEnhancer",
    "MedianEnhancer",
    "NLMeansEnhancer",
    "SRADEnhancer",
    "tuned_classical_params",
]

#: Parameters of the classical baselines tuned by ``bench/tune_classical.py``.
TUNED_CLASSICAL_FILE = Path(__file__).with_name("tuned_classical.json")
TUNED_FORMAT = "usher2-tuned-classical/1"

_EPS = 1e-3  # keeps ratios by the local intensity finite in black (shadowed) pixels


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _local_cv2(img: np.ndarray, size: int) -> np.ndarray:
    """Local squared coefficient of variation (variance / mean²) in a ``size`` × ``size`` window."""
    mean = ndimage.uniform_filter(img, size, mode="reflect")
    sq = ndimage.uniform_filter(img * img, size, mode="reflect")
    var = np.maximum(sq - mean * mean, 0.0)
    return var / np.maximum(mean * mean, _EPS * _EPS)


def tuned_classical_params(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The frozen, tuned constructor arguments of each classical baseline, by registry name.

    Args:
        path: The JSON written by ``bench/tune_classical.py``; :data:`TUNED_CLASSICAL_FILE` when None.

    Returns:
        ``{name: kwargs}``; ``create_enhancer(name, **kwargs)`` builds the tuned filter.

    Raises:
        InputError: The file is missing, not this format, or names an unknown filter or argument.

    Example:
        >>> params = tuned_classical_params()
        >>> sorted(params)
        ['bilateral', 'lee', 'median', 'nlm', 'srad']
        >>> ENHANCERS.create("lee", **params["lee"]).name
        'lee'
    """
    p = TUNED_CLASSICAL_FILE if path is None else Path(path)
    fix = "re-create it with python bench/tune_classical.py"
    if not p.is_file():
        raise InputError(p, "the tuned classical parameters (JSON)", "no such file", fix)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(p, "the tuned classical parameters (JSON)", f"unreadable ({exc})", fix) from exc
    if not isinstance(doc, dict) or doc.get("format") != TUNED_FORMAT or not isinstance(doc.get("tuned"), dict):
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise InputError(p, f"format {TUNED_FORMAT!r} with a 'tuned' table", f"{got!r}", fix)
    classical = [n for n in ENHANCERS.names() if getattr(ENHANCERS.get(n), "__module__", None) == __name__]
    out: dict[str, dict[str, Any]] = {}
    for name, kwargs in doc["tuned"].items():
        if name not in classical or not isinstance(kwargs, dict):
            raise InputError(p, f"classical filters with argument tables ({', '.join(classical)})", repr(name), fix)
        try:
            ENHANCERS.create(name, **kwargs)
        except (TypeError, ValueError) as exc:
            raise InputError(p, f"valid arguments of {name!r}", f"{kwargs} ({exc})", fix) from exc
        out[name] = dict(kwargs)
    return out


class _FrameWise(Enhancer):
    """An enhancer that filters each ``(H, W)`` frame of the batch independently."""

    def _frame(self, img: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _enhance_numpy(self, x: np.ndarray) -> np.ndarray:
        out = np.empty_like(x)
        for b in range(x.shape[0]):
            out[b, 0] = self._frame(x[b, 0])
        return out


@ENHANCERS.register("none")
class IdentityEnhancer(Enhancer):
    """No enhancement: the output equals the input."""

    name = "none"

    def _enhance_numpy(self, x: np.ndarray) -> np.ndarray:
        return x.copy()


@ENHANCERS.register("median")
class MedianEnhancer(_FrameWise):
    """Median filter over a ``size`` × ``size`` window.

    Example:
        >>> import numpy as np
        >>> x = np.zeros((1, 1, 9, 9), np.float32); x[0, 0, 4, 4] = 1.0
        >>> float(MedianEnhancer(size=3)(x).max())  # an isolated bright speck is removed
        0.0
    """

    name = "median"

    def __init__(self, *, size: int = 5, strength: float = 1.0) -> None:
        super().__init__(strength=strength)
        self.size = _positive_int("size", size)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "size": self.size}

    def _frame(self, img: np.ndarray) -> np.ndarray:
        return ndimage.median_filter(img, size=self.size, mode="reflect")


@ENHANCERS.register("bilateral")
class BilateralEnhancer(_FrameWise):
    """Edge-preserving bilateral filter (OpenCV).

    Args:
        sigma_color: Range σ in grey units of [0, 1].
        sigma_space: Spatial σ in pixels.
        strength: See :class:`~usher2.enhance.base.Enhancer`.
    """

    name = "bilateral"

    def __init__(self, *, sigma_color: float = 0.1, sigma_space: float = 3.0, strength: float = 1.0) -> None:
        super().__init__(strength=strength)
        self.sigma_color = _positive_float("sigma_color", sigma_color)
        self.sigma_space = _positive_float("sigma_space", sigma_space)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "sigma_color": self.sigma_color, "sigma_space": self.sigma_space}

    def _frame(self, img: np.ndarray) -> np.ndarray:
        d = 2 * int(np.ceil(2 * self.sigma_space)) + 1
        out = cv2.bilateralFilter(np.ascontiguousarray(img), d, self.sigma_color, self.sigma_space)
        return np.asarray(out, dtype=np.float32)


@ENHANCERS.register("nlm")
class NLMeansEnhancer(_FrameWise):
    """Non-local means (scikit-image), σ estimated per frame.

    Args:
        h_factor: Filter strength as a multiple of the estimated noise σ.
        patch_size: Patch side in pixels.
        patch_distance: Search radius in pixels.
        strength: See :class:`~usher2.enhance.base.Enhancer`.
    """

    name = "nlm"

    def __init__(
        self, *, h_factor: float = 8.0, patch_size: int = 5, patch_distance: int = 6, strength: float = 1.0
    ) -> None:
        super().__init__(strength=strength)
        self.h_factor = _positive_float("h_factor", h_factor)
        self.patch_size = _positive_int("patch_size", patch_size)
        self.patch_distance = _positive_int("patch_distance", patch_distance)

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "h_factor": self.h_factor,
            "patch_size": self.patch_size,
            "patch_distance": self.patch_distance,
        }

    def _frame(self, img: np.ndarray) -> np.ndarray:
        if min(img.shape) < 2 * self.patch_size:
            return img.copy()  # too small for a patch search: nothing to average
        sigma = float(estimate_sigma(img))
        if sigma == 0.0:
            return img.copy()
        out = denoise_nl_means(
            img,
            h=self.h_factor * sigma,
            sigma=sigma,
            patch_size=self.patch_size,
            patch_distance=self.patch_distance,
            fast_mode=True,
        )
        return np.asarray(out, dtype=np.float32)


@ENHANCERS.register("srad")
class SRADEnhancer(_FrameWise):
    """Speckle-reducing anisotropic diffusion (Yu & Acton 2002); formula in the module docstring.

    Args:
        iterations: Diffusion steps.
        time_step: Δt in (0, 1]; the explicit scheme is stable for Δt ≤ 1 with this /4 update.
        strength: See :class:`~usher2.enhance.base.Enhancer`.
    """

    name = "srad"

    def __init__(self, *, iterations: int = 40, time_step: float = 0.25, strength: float = 1.0) -> None:
        super().__init__(strength=strength)
        self.iterations = _positive_int("iterations", iterations)
        self.time_step = _positive_float("time_step", time_step)
        if self.time_step > 1.0:
            raise ValueError(f"time_step must be <= 1 for a stable explicit scheme, got {time_step}")

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "iterations": self.iterations, "time_step": self.time_step}

    def _frame(self, img: np.ndarray) -> np.ndarray:
        i = img.astype(np.float64) + _EPS
        for _ in range(self.iterations):
            p = np.pad(i, 1, mode="edge")
            dn = p[:-2, 1:-1] - i
            ds = p[2:, 1:-1] - i
            dw = p[1:-1, :-2] - i
            de = p[1:-1, 2:] - i
            g2 = (dn * dn + ds * ds + dw * dw + de * de) / (i * i)
            lap = (dn + ds + dw + de) / i
            q2 = (0.5 * g2 - lap * lap / 16.0) / np.square(1.0 + 0.25 * lap)
            q02 = max(float(np.median(_local_cv2(i, 7))), 1e-12)
            c = np.clip(1.0 / (1.0 + (q2 - q02) / (q02 * (1.0 + q02))), 0.0, 1.0)
            cp = np.pad(c, ((0, 1), (0, 1)), mode="edge")
            c_s, c_e = cp[1:, :-1], cp[:-1, 1:]
            i = i + (self.time_step / 4.0) * (c * dn + c_s * ds + c * dw + c_e * de)
        return np.clip(i - _EPS, 0.0, 1.0).astype(np.float32)


@ENHANCERS.register("lee")
class LeeEnhancer(_FrameWise):
    """Lee filter for multiplicative speckle; formula in the module docstring.

    Args:
        size: Local window side in pixels (odd).
        strength: See :class:`~usher2.enhance.base.Enhancer`.
    """

    name = "lee"

    def __init__(self, *, size: int = 7, strength: float = 1.0) -> None:
        super().__init__(strength=strength)
        self.size = _positive_int("size", size, minimum=3)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "size": self.size}

    def _frame(self, img: np.ndarray) -> np.ndarray:
        i = img.astype(np.float64)
        mean = ndimage.uniform_filter(i, self.size, mode="reflect")
        ci2 = _local_cv2(i, self.size)
        cu2 = float(np.median(ci2))
        w = np.clip(1.0 - cu2 / np.maximum(ci2, 1e-12), 0.0, 1.0)
        return np.clip(mean + w * (i - mean), 0.0, 1.0).astype(np.float32)


if importlib.util.find_spec("bm3d") is not None:  # optional, non-commercial licence

    @ENHANCERS.register("bm3d")
    class BM3DEnhancer(_FrameWise):
        """BM3D (the optional ``bm3d`` package), σ estimated per frame."""

        name = "bm3d"

        def _frame(self, img: np.ndarray) -> np.ndarray:
            import bm3d

            sigma = float(estimate_sigma(img))
            if sigma == 0.0:
                return img.copy()
            return np.asarray(bm3d.bm3d(img, sigma_psd=sigma), dtype=np.float32)
