"""``usher2 score``: frames in, probabilities from a model bundle out.

**Inputs.** An image or DICOM file, a directory (searched recursively for image and DICOM files;
hidden files skipped; ``case_id`` = the path relative to the directory, without suffix), or a
manifest (``.csv``/``.parquet``). Frames are enhanced, segmented and extracted with the
bundle's own extraction settings; masks are predicted by the segmenter, except for a manifest
whose ``mask`` column is filled when ``masks="given"``.

**Outputs.** ``SCORES.csv`` (written atomically), one row per case:

=================================  ==================================================================
``case_id``                        the case
``probability``                    P(class 1) from the bundle (empty when no lesion was found)
``label``                          1 when ``probability >= threshold`` (the bundle's Youden threshold)
``threshold``                      that threshold
``no_lesion``                      the segmenter found no lesion: nothing to score
``low_segmentation_confidence``    the segmenter's uncertainty > the bundle's calibrated threshold
                                   (:mod:`usher2.fusion.confidence`), else
                                   :data:`~usher2.fusion.confidence.LOW_CONFIDENCE`
``mask_uncertainty``               the segmenter's mean binary entropy (bits; empty for given masks)
``clinical_missing``               clinical values were missing and imputed by the model
``clinical_out_of_range``          a clinical value lay outside the bundle's training range (see
                                   :mod:`usher2.fusion.clinical`; far outside is a failure)
=================================  ==================================================================

and ``SCORES.failures.csv`` (``case_id``, ``error``) for frames that could not be scored. The
features go to ``SCORES.features.parquet`` (with its provenance), so a re-run only computes
what is new.

:data:`~usher2.fusion.confidence.LOW_CONFIDENCE` (0.45 bits) is the fixed flag threshold; a bundle
fitted with ``--confidence-probs`` carries a threshold calibrated on out-of-fold predictions instead
(:func:`~usher2.fusion.confidence.calibrate_confidence`), which wins.

**Segmenter.** ``segmenter_weights`` (``usher2 score --segmenter-weights``) predicts the masks with
other weights of the bundle's segmenter network (e.g. one trained without the devices being
scored); the scores' JSON sidecar records the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.features.extract import NO_LESION_STAGE, extract_cohort
from usher2.features.models import with_segmenter_weights
from usher2.fusion.bundle import Bundle, load_bundle
from usher2.fusion.clinical import check_clinical
from usher2.fusion.confidence import LOW_CONFIDENCE, confidence_threshold
from usher2.io.atomic import atomic_path
from usher2.io.errors import InputError
from usher2.io.scan import scan_frames
from usher2.score.engine import bundle_extract_config

__all__ = ["LOW_CONFIDENCE", "SCORE_COLUMNS", "ScoreResult", "score_inputs"]

SCORE_COLUMNS = [
    "case_id",
    "probability",
    "label",
    "threshold",
    "no_lesion",
    "low_segmentation_confidence",
    "mask_uncertainty",
    "clinical_missing",
    "clinical_out_of_range",
]


@dataclass
class ScoreResult:
    """Scores and failures, as written."""

    scores: pd.DataFrame
    failures: pd.DataFrame
    paths: dict[str, Path]


def _clinical_values(
    b: Bundle, table: pd.DataFrame, cases: pd.DataFrame, clinical: str | Path | None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[Any, bool], list[dict[str, str]]]:
    """The bundle's clinical columns for every extracted case, checked (:func:`check_clinical`):
    (the table without cases whose values are bad, their values, which lie outside the training
    range, and the bad cases as failure rows). Values come from ``clinical`` (a CSV) or the manifest."""
    wanted = list(b.config.get("clinical", []))
    clin = pd.DataFrame(index=table.index, columns=wanted, dtype=float)
    outside: dict[Any, bool] = {}
    bad_clinical: list[dict[str, str]] = []
    if not wanted:
        return table, clin, outside, bad_clinical
    if clinical is not None:
        cpath = Path(clinical)
        if not cpath.is_file():
            raise InputError(cpath, "a clinical CSV (case_id + the bundle's clinical columns)", "no such file")
        cdf = pd.read_csv(cpath, dtype={"case_id": str}).drop_duplicates("case_id").set_index("case_id")
    else:
        cdf = cases.assign(case_id=cases["case_id"].astype(str)).set_index("case_id")
    raw = cdf.reindex(index=table.index, columns=wanted).astype(object)
    ranges = b.config.get("clinical_ranges") or {}
    bad_ids: list[object] = []
    for cid, row in raw.iterrows():
        try:  # a case with bad clinical values is reported and the rest go on
            values, off = check_clinical(row.to_dict(), wanted, ranges, where=f"case {cid}")
        except InputError as exc:
            bad_clinical.append({"case_id": str(cid), "error": f"InputError: {exc}"})
            bad_ids.append(cid)
            continue
        clin.loc[cid, wanted] = [values[c] for c in wanted]
        outside[cid] = bool(off)
    table = table.drop(index=bad_ids)
    return table, clin.reindex(table.index).astype(float), outside, bad_clinical


def score_inputs(
    source: str | Path,
    bundle: Any,
    out: str | Path,
    *,
    clinical: str | Path | None = None,
    masks: str = "predicted",
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    segmenter_weights: str | Path | None = None,
    device: str | None = None,
) -> ScoreResult:
    """Score frames with a bundle (see the module docstring).

    Raises:
        InputError: A bad bundle, input, clinical file or mask setting. Bad frames do not raise.
    """
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise InputError(out, "a scores file ending in .csv", repr(out.name))
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)  # a folder, or a loaded (verified) bundle
    cases = scan_frames(Path(source), masks=masks)
    cfg = with_segmenter_weights(bundle_extract_config(b.config, masks), segmenter_weights)
    if device is not None:  # the device changes no feature value: the parts of a CPU run stay valid on CUDA
        cfg = replace(cfg, device=device)
    low_confidence = confidence_threshold(b.config, LOW_CONFIDENCE)
    features_path = out.with_name(out.stem + ".features.parquet")
    res = extract_cohort(cases, features_path, cfg, workers=workers, progress=progress)
    table = res.table.set_index("case_id")
    wanted = list(b.config.get("clinical", []))
    table, clin, outside, bad_clinical = _clinical_values(b, table, cases, clinical)
    X = table.join(clin) if wanted else table
    prob = b.predict_proba(X) if len(X) else np.zeros(0)
    unc = X["mask_uncertainty"] if "mask_uncertainty" in X.columns else pd.Series(np.nan, index=X.index)
    scores = pd.DataFrame(
        {
            "case_id": X.index.astype(str),
            "probability": prob,
            "label": (prob >= b.threshold).astype(int),
            "threshold": b.threshold,
            "no_lesion": False,
            "low_segmentation_confidence": (unc > low_confidence).to_numpy(),
            "mask_uncertainty": unc.to_numpy(),
            "clinical_missing": clin.isna().any(axis=1).to_numpy() if wanted else False,
            "clinical_out_of_range": [outside.get(c, False) for c in X.index],
        }
    )
    failed = res.failures[res.failures["stage"].isin(("features", NO_LESION_STAGE))]
    no_lesion = failed["stage"] == NO_LESION_STAGE
    empty = pd.DataFrame(
        {
            "case_id": failed.loc[no_lesion, "case_id"].astype(str),
            "no_lesion": True,
            "low_segmentation_confidence": False,
            "clinical_missing": False,
            "clinical_out_of_range": False,
        }
    )
    scores = pd.concat([scores, empty.assign(threshold=b.threshold)], ignore_index=True)
    order = {c: i for i, c in enumerate(cases["case_id"].astype(str))}
    scores = scores.sort_values("case_id", key=lambda s: s.map(order)).reset_index(drop=True)[SCORE_COLUMNS]
    scores["label"] = scores["label"].astype("Int64")
    failures = pd.concat(
        [failed.loc[~no_lesion, ["case_id", "error"]], pd.DataFrame(bad_clinical, columns=["case_id", "error"])],
        ignore_index=True,
    )
    paths = {"scores": out, "failures": out.with_name(out.stem + ".failures.csv"), "features": features_path}
    with atomic_path(out) as tmp:
        scores.to_csv(tmp, index=False)
    with atomic_path(paths["failures"]) as tmp:
        failures.to_csv(tmp, index=False)
    meta = {
        "bundle": str(b.path.resolve()),
        "bundle_config_format": b.config.get("format"),
        "masks": masks,
        "segmenter": cfg.segmenter if masks == "predicted" else None,
        "low_confidence_threshold": low_confidence,
        "mask_robustness": b.config.get("mask_robustness"),
    }
    with atomic_path(out.with_name(out.stem + ".json")) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return ScoreResult(scores, failures, paths)
