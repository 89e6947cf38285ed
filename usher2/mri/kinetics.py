r"""DCE-MRI kinetic features of a lesion: wash-in, time to peak, washout, SER and the curve type.

Definitions
-----------
The DCE series has phases at times :math:`t_0 < t_1 < \dots < t_{T-1}` (seconds). Phase 0 is the
pre-contrast baseline and contrast arrives at :math:`t_0`. For a signal curve :math:`S_i`:

* relative enhancement :math:`E_i = 100\,(S_i - S_0) / S_0` (%);
* the **early window** holds the post-contrast phases with :math:`0 < t_i - t_0 \le`
  ``early_time_s`` (120 s by default); the **early peak** :math:`e` is the phase of highest
  signal in that window (:math:`S_e`, :math:`t_e`);
* the **peak** :math:`p` is the post-contrast phase of highest signal; the **late** phase is the
  last one, :math:`S_L = S_{T-1}`.

==========================  =====================================================================
feature (key suffix)        formula
==========================  =====================================================================
``wash_in_slope``           :math:`E_e / ((t_e - t_0) / 60)` — % of baseline per minute
``time_to_peak``            :math:`t_p - t_0` (s)
``peak_enhancement``        :math:`E_p` (%)
``washout_slope``           :math:`(E_L - E_p) / ((t_L - t_p) / 60)` (%/min, ≤ 0); 0 when p = L
``ser``                     :math:`(S_e - S_0) / (S_L - S_0)` (signal-enhancement ratio)
``late_change``             :math:`100\,(S_L - S_e) / S_e` (%), the late-phase change from the early peak
``curve_type``              0 persistent (late_change > +t), 1 plateau (|late_change| ≤ t),
                            2 washout (late_change < −t), with t = ``threshold_pct`` (10 %)
``enhancing_fraction``      lesion voxels with :math:`E_e \ge` ``min_enhancement_pct`` / lesion voxels
``fraction_persistent``     share of the enhancing voxels whose own curve is persistent
``fraction_plateau``        … plateau
``fraction_washout``        … washout
==========================  =====================================================================

All but the fractions are computed on the lesion's **mean curve** (the mean signal of the mask's
voxels in each phase). Every key is ``dce_kinetics_<name>``; a later step adds ``<sequence>_``.

Example:
    >>> import numpy as np
    >>> t = np.array([0.0, 60.0, 120.0, 240.0, 360.0])
    >>> s = np.array([100.0, 160.0, 200.0, 180.0, 160.0])
    >>> f = kinetic_features(s, t)
    >>> f["dce_kinetics_wash_in_slope"], f["dce_kinetics_curve_type"], f["dce_kinetics_ser"]
    (50.0, 2.0, 1.6666666666666667)
"""

from __future__ import annotations

import warnings

import numpy as np

from usher2.io.errors import InputError

__all__ = ["CURVE_TYPES", "PREFIX", "classify_curve", "kinetic_features"]

CURVE_TYPES: tuple[str, ...] = ("persistent", "plateau", "washout")
PREFIX = "dce_kinetics_"
FEATURE_NAMES: tuple[str, ...] = (
    "wash_in_slope",
    "time_to_peak",
    "peak_enhancement",
    "washout_slope",
    "ser",
    "late_change",
    "curve_type",
    "enhancing_fraction",
    "fraction_persistent",
    "fraction_plateau",
    "fraction_washout",
)


def classify_curve(late_change_pct: np.ndarray | float, threshold_pct: float = 10.0) -> np.ndarray:
    """Curve type code by the ±``threshold_pct`` late-phase rule (0 persistent, 1 plateau, 2 washout).

    Args:
        late_change_pct: :math:`100 (S_L - S_e) / S_e`, any shape.
        threshold_pct: Half-width of the plateau band (%).

    Returns:
        int64 codes of the same shape; index :data:`CURVE_TYPES` for the names.

    Example:
        >>> classify_curve(np.array([25.0, 10.0, -3.0, -10.5])).tolist()
        [0, 1, 1, 2]
    """
    x = np.asarray(late_change_pct, dtype=np.float64)
    return np.where(x > threshold_pct, 0, np.where(x < -threshold_pct, 2, 1)).astype(np.int64)


def _check_times(times: np.ndarray, n_phases: int, early_time_s: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(times, dtype=np.float64).ravel()
    if t.size != n_phases:
        raise InputError("times", f"one time per DCE phase ({n_phases})", f"{t.size} times")
    if n_phases < 3:
        raise InputError("dce", "at least 3 phases (baseline, early, late)", f"{n_phases} phases")
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise InputError("times", "finite, strictly increasing times in seconds", f"{t.tolist()}")
    rel = t - t[0]
    early = np.flatnonzero((rel > 0) & (rel <= early_time_s))
    if early.size == 0:
        raise InputError(
            "times",
            f"a post-contrast phase within early_time_s={early_time_s} s of the baseline",
            f"first post-contrast phase at {rel[1]:g} s",
            "raise early_time_s",
        )
    if early[-1] == n_phases - 1:
        raise InputError(
            "times",
            f"a late phase after the early window (> {early_time_s} s)",
            f"last phase at {rel[-1]:g} s",
            "lower early_time_s or add a delayed phase",
        )
    return rel, early


def _curve_features(s: np.ndarray, rel: np.ndarray, early: np.ndarray, threshold_pct: float) -> dict[str, float]:
    s0 = float(s[0])
    if not s0 > 0:
        raise InputError("dce", "a positive baseline (phase 0) signal in the lesion", f"mean {s0:g}")
    e = 100.0 * (s - s0) / s0
    i_e = int(early[np.argmax(s[early])])
    i_p = 1 + int(np.argmax(s[1:]))
    last = s.size - 1
    washout = 0.0 if i_p == last else float((e[last] - e[i_p]) / ((rel[last] - rel[i_p]) / 60.0))
    late_change = float(100.0 * (s[last] - s[i_e]) / s[i_e])
    denom = float(s[last] - s0)
    if denom <= 0:
        warnings.warn(
            f"late-phase signal {s[last]:g} is not above the baseline {s0:g}; the SER is undefined (NaN)",
            stacklevel=3,
        )
        ser = float("nan")
    else:
        ser = float((s[i_e] - s0) / denom)
    return {
        "wash_in_slope": float(e[i_e] / (rel[i_e] / 60.0)),
        "time_to_peak": float(rel[i_p]),
        "peak_enhancement": float(e[i_p]),
        "washout_slope": washout,
        "ser": ser,
        "late_change": late_change,
        "curve_type": float(classify_curve(late_change, threshold_pct)),
    }


def kinetic_features(
    dce: np.ndarray,
    times: np.ndarray | list[float] | tuple[float, ...],
    mask: np.ndarray | None = None,
    *,
    early_time_s: float = 120.0,
    threshold_pct: float = 10.0,
    min_enhancement_pct: float = 10.0,
) -> dict[str, float]:
    """Kinetic features of a lesion (see the module docstring for every formula).

    Args:
        dce: ``(T, Z, Y, X)`` DCE series, ``(T, N)`` voxel curves, or one ``(T,)`` curve.
        times: ``(T,)`` acquisition times in seconds; phase 0 is the pre-contrast baseline.
        mask: Lesion mask of ``dce.shape[1:]`` (non-zero = lesion); None takes every voxel.
        early_time_s: End of the early window after the baseline (s).
        threshold_pct: Half-width of the plateau band of the curve-type rule (%).
        min_enhancement_pct: Early enhancement a voxel needs to count as enhancing (%).

    Returns:
        ``{"dce_kinetics_<name>": value}`` for the names of :data:`FEATURE_NAMES`, all floats
        (``curve_type`` as the code 0/1/2 of :data:`CURVE_TYPES`).

    Raises:
        InputError: Wrong shapes, times that do not give a baseline, an early and a late phase,
            an empty mask, or a non-positive baseline.

    Example:
        >>> t = [0, 60, 120, 300]
        >>> curves = np.array([[100.0, 100.0], [150.0, 130.0], [180.0, 150.0], [200.0, 151.0]])
        >>> f = kinetic_features(curves, t)
        >>> f["dce_kinetics_fraction_persistent"], f["dce_kinetics_fraction_plateau"]
        (0.5, 0.5)
    """
    arr = np.asarray(dce, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim not in (2, 4):
        raise InputError("dce", "a (T, Z, Y, X) series, (T, N) curves or one (T,) curve", f"shape {arr.shape}")
    rel, early = _check_times(np.asarray(times), arr.shape[0], float(early_time_s))
    if mask is None:
        curves = arr.reshape(arr.shape[0], -1)
    else:
        m = np.asarray(mask)
        if m.shape != arr.shape[1:]:
            raise InputError("mask", f"shape {arr.shape[1:]} (the DCE grid)", f"shape {m.shape}")
        curves = arr.reshape(arr.shape[0], -1)[:, m.reshape(-1) != 0]
    if curves.shape[1] == 0:
        raise InputError("mask", "at least one lesion voxel", "an empty mask (0 foreground voxels)")
    if not np.all(np.isfinite(curves)):
        raise InputError("dce", "finite signal in the lesion", f"{int((~np.isfinite(curves)).sum())} non-finite values")
    out = _curve_features(curves.mean(axis=1), rel, early, threshold_pct)

    s0 = curves[0]
    ok = s0 > 0
    se = curves[early].max(axis=0)
    enh = np.zeros(curves.shape[1], dtype=bool)
    enh[ok] = 100.0 * (se[ok] - s0[ok]) / s0[ok] >= min_enhancement_pct
    out["enhancing_fraction"] = float(enh.mean())
    if enh.any():
        types = classify_curve(100.0 * (curves[-1, enh] - se[enh]) / se[enh], threshold_pct)
        counts = np.bincount(types, minlength=3) / types.size
    else:
        counts = np.zeros(3)
    for name, frac in zip(CURVE_TYPES, counts, strict=True):
        out[f"fraction_{name}"] = float(frac)
    return {f"{PREFIX}{k}": out[k] for k in FEATURE_NAMES}
