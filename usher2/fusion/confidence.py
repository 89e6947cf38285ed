"""The ``low_segmentation_confidence`` flag: an uncertainty threshold calibrated on training folds.

``usher2 score`` flags a frame whose segmenter uncertainty (mean binary entropy around the mask,
:mod:`usher2.segment.base`) is above a threshold. The fixed default,
:data:`LOW_CONFIDENCE` (0.45 bits), was read off one fold of one segmenter.
:func:`calibrate_confidence` instead derives the threshold from a segmenter's predictions on
frames it did not train on (its cross-validation's out-of-fold probability maps, compared with
the annotated masks; :func:`usher2.features.extract.predicted_masks` gives both numbers per frame):

**Rule.** A mask is *bad* when its Dice with the annotation is below ``bad_dice`` (0.5). The
threshold is the largest uncertainty ``t`` such that the frames above ``t`` (the flagged ones)
hold at least ``recall`` (80%) of the bad masks. Optionally also: the unflagged frames hold at
most ``max_bad_rate`` bad masks, and (``min_dice``) a mean Dice of at least that; the threshold
is the largest uncertainty that meets every condition given. Frames where the segmenter found no lesion
are left out: ``no_lesion`` flags them. When no ``t`` meets the rule, the threshold is the lowest
uncertainty seen (nearly every frame is flagged) and a warning says so.

**Why recall.** The share of bad masks is what changes on a new scanner (6.5% of the shipped
recipe's out-of-fold GE masks, 17% of its masks of BUS-BRA's held-out Toshiba and U-Systems
frames), while the uncertainty of a bad and of a good mask stays alike (medians 0.62 and 0.31
bits in-distribution, 0.64 and 0.35 on the held-out devices; ``python bench/confidence_flag.py``).
A rule on the share of bad masks left unflagged is then set by the training prevalence: calibrated
on the out-of-fold GE masks it gave 0.78 bits, which flagged 2 of 154 held-out-device frames and
left 15.8% bad masks unflagged. The recall rule does not depend on prevalence: 0.47 bits, 48
flagged, 2.8% bad unflagged (see the README for the whole table).

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
        bad_dice, recall, max_bad_rate, min_dice: The rule's settings.
        n: Calibration frames (with a lesion found).
        n_flagged: Of them, above the threshold.
        bad_rate_unflagged, bad_rate_flagged: Share of bad masks (Dice < ``bad_dice``) below/above it.
        dice_unflagged, dice_flagged: Mean Dice below/above it (NaN for an empty side).
        source: Where the calibration frames came from (e.g. the probability-map folders).
    """

    threshold: float
    rule: str
    bad_dice: float
    recall: float | None
    max_bad_rate: float | None
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


def _checked(
    uncertainty: Any,
    dice: Any,
    bad_dice: float,
    recall: float | None,
    max_bad_rate: float | None,
    min_dice: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The calibration frames as float arrays, and the rule's settings, checked (see calibrate_confidence)."""
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    d = np.asarray(dice, dtype=np.float64).ravel()
    if u.shape != d.shape:
        raise InputError("confidence calibration", "one Dice per uncertainty", f"{u.size} and {d.size} values")
    if not (np.isfinite(u).all() and np.isfinite(d).all()):
        raise InputError("confidence calibration", "finite uncertainties and Dice values", "NaN or inf")
    if u.size < 10:
        raise InputError("confidence calibration", "at least 10 frames with a lesion found", f"{u.size}")
    if (
        not 0 < bad_dice <= 1
        or (max_bad_rate is not None and not 0 <= max_bad_rate < 1)
        or (recall is not None and not 0 < recall <= 1)
    ):
        what = "bad_dice in (0, 1], recall in (0, 1] and max_bad_rate in [0, 1)"
        raise InputError("confidence calibration", what, f"{bad_dice}, {recall}, {max_bad_rate}")
    if recall is None and max_bad_rate is None and min_dice is None:
        raise InputError("confidence calibration", "at least one of recall, max_bad_rate, min_dice", "none")
    return u, d


def calibrate_confidence(
    uncertainty: Any,
    dice: Any,
    *,
    bad_dice: float = 0.5,
    recall: float | None = 0.8,
    max_bad_rate: float | None = None,
    min_dice: float | None = None,
    source: str = "",
) -> ConfidenceThreshold:
    """The uncertainty threshold of the ``low_segmentation_confidence`` flag (see the module docstring).

    Args:
        uncertainty: ``(N,)`` the segmenter's uncertainty per frame (frames with a lesion found).
        dice: ``(N,)`` Dice of each predicted mask with the annotated one.
        bad_dice: A mask with Dice below this is bad.
        recall: The smallest share of the bad masks the flag must catch (None: no such condition).
        max_bad_rate: The largest share of bad masks allowed among unflagged frames (None: no such condition).
        min_dice: Also require this mean Dice among unflagged frames (None: no such condition).
        source: Recorded with the result.

    Raises:
        InputError: Arrays of different lengths, non-finite values, fewer than 10 frames, no condition, or
            (with ``recall``) fewer than 5 bad masks to calibrate against.

    Example:
        >>> u = np.r_[np.linspace(0.1, 0.3, 80), np.linspace(0.5, 0.7, 20)]
        >>> d = np.r_[np.full(80, 0.9), np.full(20, 0.3)]
        >>> c = calibrate_confidence(u, d, recall=1.0)
        >>> round(c.threshold, 3), c.n_flagged, c.bad_rate_unflagged, c.bad_rate_flagged
        (0.3, 20, 0.0, 1.0)
    """
    u, d = _checked(uncertainty, dice, bad_dice, recall, max_bad_rate, min_dice)
    order = np.argsort(u, kind="stable")
    us, ds = u[order], d[order]
    bad = ds < bad_dice
    k = np.arange(1, u.size + 1)
    # a threshold sits at a distinct value: the unflagged frames are those up to its last tie
    ok = np.r_[us[1:] != us[:-1], True]
    if recall is not None:
        if bad.sum() < 5:
            raise InputError(
                "confidence calibration",
                f"at least 5 masks with Dice < {bad_dice} to calibrate the flag's recall against",
                f"{int(bad.sum())} of {u.size}",
            )
        # frames above a threshold at position i: the bad ones among them must be >= recall of all bad
        caught = bad.sum() - np.cumsum(bad)
        ok &= caught >= recall * bad.sum() - 1e-9
    if max_bad_rate is not None:
        ok &= np.cumsum(bad) / k <= max_bad_rate
    if min_dice is not None:
        ok &= np.cumsum(ds) / k >= min_dice
    if ok.any():
        threshold = float(us[np.flatnonzero(ok)[-1]])
    else:
        threshold = float(us[0])
        warnings.warn(
            f"no uncertainty threshold meets the rule on these frames (Dice < {bad_dice} is bad); "
            f"using the lowest uncertainty, {threshold:.3f}, which flags nearly every frame",
            stacklevel=2,
        )
    flagged = u > threshold
    parts = []
    if recall is not None:
        parts.append(f"at least {recall:.0%} of the masks at Dice < {bad_dice} flagged")
    if max_bad_rate is not None:
        parts.append(f"at most {max_bad_rate:.0%} of unflagged masks at Dice < {bad_dice}")
    if min_dice is not None:
        parts.append(f"mean unflagged Dice >= {min_dice}")
    rule = "largest uncertainty with " + " and ".join(parts)
    return ConfidenceThreshold(
        threshold=threshold,
        rule=rule,
        bad_dice=float(bad_dice),
        recall=None if recall is None else float(recall),
        max_bad_rate=None if max_bad_rate is None else float(max_bad_rate),
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


#: The fixed flag threshold (bits of mean binary entropy) of a bundle without a calibrated one:
#: on BUS-BRA fold 5 (383 frames) the 34 frames above it had Dice < 0.5 in 29% of cases against
#: 1.4% below it (median Dice 0.65 against 0.89). The shipped segmenter was trained on that fold
#: too, so these rates are optimistic; :func:`calibrate_confidence` gives a calibrated one.
LOW_CONFIDENCE = 0.45


def confidence_threshold(bundle_config: Any, default: float = LOW_CONFIDENCE) -> float:
    """The flag threshold a bundle's config calibrated, else ``default``.

    Args:
        bundle_config: A :class:`~usher2.fusion.bundle_config.BundleConfig` (its
            ``segmentation_confidence``) or a ``config.json`` mapping.

    Example:
        >>> confidence_threshold({"segmentation_confidence": {"threshold": 0.31}}, 0.45)
        0.31
        >>> confidence_threshold({}, 0.45)
        0.45
    """
    if isinstance(bundle_config, dict):
        record = bundle_config.get("segmentation_confidence")
    else:
        record = bundle_config.segmentation_confidence
    return float(check_confidence(record)["threshold"]) if record else float(default)
