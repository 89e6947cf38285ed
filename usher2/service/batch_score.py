"""What the micro-batcher's worker runs: one batch of uploaded frames through the scorer.

:func:`score_batch` calls :meth:`FrameScorer.score <usher2.score.engine.FrameScorer.score>` once
on the whole batch, each frame with its own clinical values; the scorer gives every frame its
own :class:`~usher2.score.engine.FrameScore` (a frame without a lesion or with bad clinical
values carries its ``error``; it does not fail the others) and makes the batch's heat maps
together (:meth:`FrameScorer._heatmaps <usher2.score.engine.FrameScorer._heatmaps>`: 16 ROI
crops per Grad-CAM pass, a quarter of the time of one pass per frame on 2 CPU cores). A scorer
with only ``score_frame`` (a test double, or any stand-in the app accepts) is called once per
frame, and a frame whose call raises gets that exception as its outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["score_batch"]


def score_batch(scorer: Any, items: Sequence[tuple[Any, Mapping[str, Any] | None]]) -> list[Any]:
    """Score ``(frame, clinical)`` items together: one outcome per item, in order.

    Args:
        scorer: A :class:`~usher2.score.engine.FrameScorer`, or anything with ``score_frame``.
        items: Each frame (:class:`~usher2.types.Frame`) with its clinical values (None: none).

    Returns:
        A :class:`~usher2.score.engine.FrameScore` per item; with a scorer that has only
        ``score_frame``, the exception of an item whose call raised.

    Example:
        >>> class Doubling:
        ...     def score_frame(self, frame, clinical=None):
        ...         return 2 * frame
        >>> score_batch(Doubling(), [(1, None), (4, {"age": 50})])
        [2, 8]
    """
    frames = [f for f, _ in items]
    clinical = [c for _, c in items]
    batched = getattr(scorer, "score", None)
    if not callable(batched):
        outcomes: list[Any] = []
        for f, c in items:
            try:
                outcomes.append(scorer.score_frame(f, c))
            except Exception as exc:  # the item's own outcome, raised to its request
                outcomes.append(exc)
        return outcomes
    return list(batched(frames, clinical))
