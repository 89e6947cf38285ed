"""The ``low_segmentation_confidence`` flag: an uncertainty threshold calibrated on training folds.

``usher2 score`` flags a frame whose segmenter uncertainty (mean binary entropy around the mask,
:mod:`usher2.segment.base`) is above a threshold. The fixed default,
:data:`~usher2.fusion.score.LOW_CONFIDENCE` (0.45 bits), was read off one fold of one segmenter.
:func:`calibrate_confidence` instead derives the threshold from a segmenter's predictions on
frames it did not train on (its cross-validation's out-of-fold probability maps, compared with
the annotated masks; :func:`usher2.features.extract.predicted_masks` gives both numbers per frame):

**Rule.** A mask is *bad* when its Dice with the annotation is below ``bad_dice`` (0.5). The
threshold is the largest uncertainty ``t`` such that the frames at or below ``t`` (the ones left
unflagged) hold at most ``max_bad_rate`` (5%) bad masks, and, with ``min_dice``, a mean Dice of
at least that. Frames where the segmenter found no lesion are left out: ``no_lesion`` flags them.
When no ``t`` meets the rule, the threshold is the lowest uncertainty seen (nearly every frame is
flagged) and a warning says so.

The result is stored in the bundle (``usher2 fit --confidence-probs``, ``config
["segmentation_confidence"]``) and used by ``usher2 score`` in place of the fixed value. It holds
for the segmenter it was calibrated for: a frame scored with other segmenter weights gets that
threshold all the same, so calibrate again for new weights.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from usher2.io.errors import InputError

__all__ = ["ConfidenceThreshold", "calibrate_confidence", "check_confidence", "confidence_threshold"]


@dataclass(frozen=True)
class ConfidenceThreshold:
    """A calibrated flag threshold and what it gave on the calibration frames.

    Attributes:
        threshold: Flag a frame whose uncertainty is above this (bits).
        rule: The rule in words.
        bad_dice, max_bad_rate, min_dice: The rule's settings.
        n: Calibration frames (with a lesion found).
        n_flagged: Of them, above the threshold.
        bad_rate_unflagged, bad_rate_flagged: Share of bad masks (Dice < ``bad_dice``) below/above it.
        dice_unflagged, dice_flagged: Mean Dice below/above it (NaN for an empty side).
        source: Where the calibration frames came from (e.g. the probability-map folders).
    """

    threshold: float
    rule: str
    bad_dice: float
    max_bad_rate: float
    min_dice: float | None
    n: int
    n_flagged: int
    bad_rate_unflagged: float
    bad_rate_flagged: float
    dice_unflagged: float
    dice_flagged: float
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else float("nan")


def calibrate_confidence(
    uncertainty: Any,
    dice: Any,
    *,
    bad_dice: float = 0.5,
    max_bad_rate: float = 0.05,
    min_dice: float | None = None,
    source: str = "",
) -> ConfidenceThreshold:
    """The uncertainty threshold of the ``low_segmentation_confidence`` flag (see the module docstring).

    Args:
        uncertainty: ``(N,)`` the segmenter's uncertainty per frame (frames with a lesion found).
        dice: ``(N,)`` Dice of each predicted mask with the annotated one.
        bad_dice: A mask with Dice below this is bad.
        max_bad_rate: The largest share of bad masks allowed among unflagged frames.
        min_dice: Also require this mean Dice among unflagged frames (None: no such condition).
        source: Recorded with the result.

    Raises:
        InputError: Arrays of different lengths, non-finite values, or fewer than 10 frames.

    Example:
        >>> u = np.r_[np.linspace(0.1, 0.3, 80), np.linspace(0.5, 0.7, 20)]
        >>> d = np.r_[np.full(80, 0.9), np.full(20, 0.3)]
        >>> c = calibrate_confidence(u, d, max_bad_rate=0.0)
        >>> round(c.threshold, 3), c.n_flagged, c.bad_rate_unflagged, c.bad_rate_flagged
        (0.3, 20, 0.0, 1.0)
    """
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    d = np.asarray(dice, dtype=np.float64).ravel()
    if u.shape != d.shape:
        raise InputError("confidence calibration", "one Dice per uncertainty", f"{u.size} and {d.size} values")
    if not (np.isfinite(u).all() and np.isfinite(d).all()):
        raise InputError("confidence calibration", "finite uncertainties and Dice values", "NaN or inf")
    if u.size < 10:
        raise InputError("confidence calibration", "at least 10 frames with a lesion found", f"{u.size}")
    if not 0 < bad_dice <= 1 or not 0 <= max_bad_rate < 1:
        what = "bad_dice in (0, 1] and max_bad_rate in [0, 1)"
        raise InputError("confidence calibration", what, f"{bad_dice}, {max_bad_rate}")
    order = np.argsort(u, kind="stable")
    us, ds = u[order], d[order]
    bad = ds < bad_dice
    k = np.arange(1, u.size + 1)
    # a threshold sits at a distinct value: the unflagged frames are those up to its last tie
    last = np.r_[us[1:] != us[:-1], True]
    ok = last & (np.cumsum(bad) / k <= max_bad_rate)
    if min_dice is not None:
        ok &= np.cumsum(ds) / k >= min_dice
    if ok.any():
        threshold = float(us[np.flatnonzero(ok)[-1]])
    else:
        threshold = float(us[0])
        warnings.warn(
            f"no uncertainty threshold leaves at most {max_bad_rate:.0%} bad masks (Dice < {bad_dice}) unflagged; "
            f"using the lowest uncertainty, {threshold:.3f}, which flags nearly every frame",
            stacklevel=2,
        )
    flagged = u > threshold
    rule = f"largest uncertainty with at most {max_bad_rate:.0%} of unflagged masks at Dice < {bad_dice}"
    if min_dice is not None:
        rule += f" and mean unflagged Dice >= {min_dice}"
    return ConfidenceThreshold(
        threshold=threshold,
        rule=rule,
        bad_dice=float(bad_dice),
        max_bad_rate=float(max_bad_rate),
        min_dice=None if min_dice is None else float(min_dice),
        n=int(u.size),
        n_flagged=int(flagged.sum()),
        bad_rate_unflagged=_mean((d < bad_dice)[~flagged].astype(float)),
        bad_rate_flagged=_mean((d < bad_dice)[flagged].astype(float)),
        dice_unflagged=_mean(d[~flagged]),
        dice_flagged=_mean(d[flagged]),
        source=source,
    )


def check_confidence(record: Any, where: str = "segmentation_confidence") -> dict[str, Any]:
    """A stored calibration as a dict (from a :class:`ConfidenceThreshold` or its ``to_dict()``), checked.

    Raises:
        InputError: Not a mapping, or no threshold in [0, 1].
    """
    if isinstance(record, ConfidenceThreshold):
        record = record.to_dict()
    if not isinstance(record, dict):
        raise InputError(where, "a calibration record (calibrate_confidence(...).to_dict())", type(record).__name__)
    t = record.get("threshold")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or not 0 <= t <= 1:
        raise InputError(f"{where}: threshold", "an uncertainty threshold in [0, 1] (bits)", repr(t))
    return dict(record)


def confidence_threshold(bundle_config: dict[str, Any], default: float) -> float:
    """The flag threshold a bundle's config calibrated, else ``default``.

    Example:
        >>> confidence_threshold({"segmentation_confidence": {"threshold": 0.31}}, 0.45)
        0.31
        >>> confidence_threshold({}, 0.45)
        0.45
    """
    record = bundle_config.get("segmentation_confidence")
    return float(check_confidence(record)["threshold"]) if record else float(default)
