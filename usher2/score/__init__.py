"""Scoring: the one engine from pixels to probability, and its outputs.

* :mod:`usher2.score.engine`: :class:`FrameScorer`, which loads a bundle once and scores frames
  held in memory (enhancer, segmenter, the features the model reads, probability, flags, heat
  map). Every door that scores new frames runs it or the cohort extraction it mirrors.
* :mod:`usher2.score.table`: ``usher2 score INPUT --out SCORES.csv`` (:func:`score_inputs`): a
  cohort's scores as a table, its features kept for resume and evaluation.
* :mod:`usher2.score.folder`: ``usher2 score INPUT --out DIR`` (:func:`score_to_dir`): per-frame
  scores, overlays, contact sheets, annotated videos and a per-frame report.
* The HTTP door, ``POST /v1/score`` (:mod:`usher2.service.app`), calls :class:`FrameScorer` and
  draws with the same renderer (:func:`usher2.explain.render.render_overlay`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FrameScore", "FrameScorer", "score_inputs", "score_to_dir", "temporal_aggregate"]

_WHERE = {
    "FrameScore": "usher2.score.engine",
    "FrameScorer": "usher2.score.engine",
    "score_inputs": "usher2.score.table",
    "score_to_dir": "usher2.score.folder",
    "temporal_aggregate": "usher2.score.folder",
}


def __getattr__(name: str) -> Any:  # lazy: ``import usher2.score`` stays light (torch loads on use)
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'usher2.score' has no attribute {name!r}")
