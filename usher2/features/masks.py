"""Lesion masks from stored probability maps (e.g. a segmenter's out-of-fold predictions): :func:`predicted_masks`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from usher2.io.atomic import atomic_path
from usher2.io.errors import InputError

__all__ = ["predicted_masks"]


def predicted_masks(
    manifest: pd.DataFrame,
    probabilities: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    threshold: float = 0.5,
    largest_component: bool = False,
    margin: int = 5,
) -> pd.DataFrame:
    """Masks from stored probability maps (e.g. a segmenter's out-of-fold predictions), for a manifest.

    Each case's map is ``<folder>/<case_id>.png`` (8-bit, p = value / 255) in one of the folders
    (the first that holds it; e.g. one per cross-validation fold). It is resized to the frame's
    mask when their shapes differ, thresholded (p > ``threshold``) and post-processed as the
    segmenter does (holes filled, optionally the largest component); the mask is written as a 0/255
    PNG to ``out/<case_id>.png``. A manifest whose ``mask`` column points at these files trains a
    model on the masks it will see at scoring time (``usher2 fit``, masks ``given``).

    Args:
        manifest: As :func:`~usher2.io.manifest.read_manifest` returns it (``case_id``, ``mask_path``).
        probabilities: A folder of maps, or several.
        out: Folder for the thresholded masks.
        threshold: Probability threshold (the segmenter's, from its weights' post-processing).
        largest_component: Keep only the largest component (as the segmenter's post-processing).
        margin: The dilation of the segmenter's uncertainty score (see :mod:`usher2.segment.base`).

    Returns:
        One row per case with a map: ``case_id``, ``mask`` (the written file; empty when no lesion
        was found), ``no_lesion``, ``uncertainty`` (mean binary entropy, the segmenter's score),
        ``area_px``, and ``dice`` against the manifest's mask (NaN without one).

    Raises:
        InputError: No folder holds a map of any case.
    """
    from usher2.segment.base import entropy_uncertainty, postprocess_mask

    folders = [Path(probabilities)] if isinstance(probabilities, str | Path) else [Path(f) for f in probabilities]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in manifest.to_dict("records"):
        cid = str(case["case_id"])
        src = next((f / f"{cid}.png" for f in folders if (f / f"{cid}.png").is_file()), None)
        if src is None:
            continue
        raw = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
        if raw is None:
            raise InputError(src, "an 8-bit probability map (PNG)", "a file OpenCV cannot decode")
        prob = raw.astype(np.float32) / 255.0
        given_path = case.get("mask_path")
        given = None
        if isinstance(given_path, str) and given_path:
            g = cv2.imread(given_path, cv2.IMREAD_GRAYSCALE)
            given = None if g is None else g > 127
        if given is not None and prob.shape != given.shape:
            prob = cv2.resize(prob, (given.shape[1], given.shape[0]), interpolation=cv2.INTER_LINEAR)
        mask = postprocess_mask(prob > threshold, largest_component=largest_component)
        dice = float("nan")
        if given is not None:
            denom = int(mask.sum()) + int(given.sum())
            dice = 2.0 * int((mask & given).sum()) / denom if denom else 1.0
        target = out / f"{cid}.png"
        if mask.any():
            with atomic_path(target) as tmp:
                if not cv2.imwrite(str(tmp), mask.astype(np.uint8) * 255):
                    raise InputError(target, "a writable folder", "a failed PNG write")
        rows.append(
            {
                "case_id": cid,
                "mask": str(target) if mask.any() else "",
                "no_lesion": not mask.any(),
                "uncertainty": entropy_uncertainty(prob, mask, margin),
                "area_px": int(mask.sum()),
                "dice": dice,
            }
        )
    if not rows:
        raise InputError(
            ", ".join(map(str, folders)), "probability maps named <case_id>.png for the manifest's cases", "none"
        )
    return pd.DataFrame(rows)
