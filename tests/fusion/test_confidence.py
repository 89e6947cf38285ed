"""The low-confidence flag (usher2.fusion.confidence): a threshold worked out by hand, stored and read back."""

from __future__ import annotations

import numpy as np
import pytest

from usher2.fusion.confidence import (
    LOW_CONFIDENCE,
    ConfidenceThreshold,
    calibrate_confidence,
    check_confidence,
    confidence_threshold,
)
from usher2.io.errors import InputError


def test_two_separated_groups_give_the_gap_as_threshold() -> None:
    u = np.r_[np.linspace(0.1, 0.3, 80), np.linspace(0.5, 0.7, 20)]
    d = np.r_[np.full(80, 0.9), np.full(20, 0.3)]
    c = calibrate_confidence(u, d, recall=1.0, source="toy")
    # every bad mask is above 0.3 and none below: the largest threshold catching all 20 is 0.3
    assert c.threshold == pytest.approx(0.3) and c.n == 100 and c.n_flagged == 20
    assert (c.bad_rate_unflagged, c.bad_rate_flagged) == (0.0, 1.0)
    assert (c.dice_unflagged, c.dice_flagged) == pytest.approx((0.9, 0.3))
    assert c.rule == "largest uncertainty with at least 100% of the masks at Dice < 0.5 flagged"
    # recall 0.5: only 10 of the 20 bad masks must be caught, so the threshold moves to the 10th from the top
    assert calibrate_confidence(u, d, recall=0.5).threshold == pytest.approx(u[89])


def test_stored_records_are_checked_and_read() -> None:
    u = np.r_[np.linspace(0.1, 0.3, 80), np.linspace(0.5, 0.7, 20)]
    c = calibrate_confidence(u, np.r_[np.full(80, 0.9), np.full(20, 0.3)], recall=1.0)
    record = check_confidence(c)
    assert record == c.to_dict() and isinstance(c, ConfidenceThreshold)
    assert confidence_threshold({"segmentation_confidence": record}) == pytest.approx(0.3)
    assert confidence_threshold({}) == LOW_CONFIDENCE == 0.45
    with pytest.raises(InputError, match=r"segmentation_confidence: threshold: expected an uncertainty threshold"):
        check_confidence({"threshold": 1.5})


def test_too_few_bad_masks_are_refused() -> None:
    u = np.linspace(0, 1, 20)
    d = np.r_[np.full(17, 0.9), np.full(3, 0.1)]
    with pytest.raises(InputError, match=r"at least 5 masks with Dice < 0\.5 .*, got 3 of 20"):
        calibrate_confidence(u, d)
