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
                                   (:mod:`usher2.fusion.confidence`), else :data:`LOW_CONFIDENCE`
``mask_uncertainty``               the segmenter's mean binary entropy (bits; empty for given masks)
``clinical_missing``               clinical values were missing and imputed by the model
``clinical_out_of_range``          a clinical value lay outside the bundle's training range (see
                                   :mod:`usher2.fusion.clinical`; far outside is a failure)
=================================  ==================================================================

and ``SCORES.failures.csv`` (``case_id``, ``error``) for frames that could not be scored. The
features go to ``SCORES.features.parquet`` (with its provenance), so a re-run only computes
what is new.

:data:`LOW_CONFIDENCE` = 0.45 bits: on BUS-BRA fold 5 (383 frames), the 34 frames above it had
Dice < 0.5 in 29% of cases against 1.4% below it (median Dice 0.65 against 0.89). The shipped
segmenter was trained on that fold too, so these rates are optimistic. A bundle fitted with
``--confidence-probs`` carries a threshold calibrated on out-of-fold predictions instead
(:func:`~usher2.fusion.confidence.calibrate_confidence`), which wins.

**Segmenter.** ``segmenter_weights`` (``usher2 score --segmenter-weights``) predicts the masks with
other weights of the bundle's segmenter network (e.g. one trained without the devices being
scored); the scores' JSON sidecar records the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.fusion.clinical import check_clinical
from usher2.io.atomic import atomic_path
from usher2.io.errors import InputError

__all__ = ["LOW_CONFIDENCE", "SCORE_COLUMNS", "ScoreResult", "list_files", "score_inputs"]

LOW_CONFIDENCE = 0.45
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
_NO_LESION = "an empty predicted mask"


@dataclass
class ScoreResult:
    """Scores and failures, as written."""

    scores: pd.DataFrame
    failures: pd.DataFrame
    paths: dict[str, Path]


def list_files(folder: Path, suffixes: set[str], what: str) -> list[Path]:
    """Files under ``folder`` (recursively, sorted) with one of ``suffixes`` (lower case); hidden files
    and folders skipped.

    Raises:
        InputError: None found (the message says ``what`` was looked for).
    """
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in suffixes
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise InputError(folder, f"a folder with {what}", "none in it")
    return files


def _inputs(source: Path, masks: str) -> pd.DataFrame:
    from usher2.io.dicom import DICOM_SUFFIXES
    from usher2.io.frames import IMAGE_SUFFIXES
    from usher2.io.manifest import SUFFIXES, read_manifest

    suffixes = {s.lower() for s in (*IMAGE_SUFFIXES, *DICOM_SUFFIXES)}
    if source.is_file() and source.suffix.lower() in SUFFIXES:
        df = read_manifest(source, check_files=False)
        if masks == "given" and ("mask_path" not in df.columns or df["mask_path"].isna().all()):
            raise InputError(source, "a mask column (masks='given')", "no masks", fix="use --masks predicted")
        return df
    if source.is_file():
        files, root = [source], source.parent
    elif source.is_dir():
        root = source
        files = list_files(source, suffixes, "image or DICOM files")
    else:
        raise InputError(source, "an image, DICOM, directory or manifest", "no such file or directory")
    if masks == "given":
        raise InputError("masks", "'predicted' for images and folders (only a manifest gives masks)", "'given'")
    ids = [p.relative_to(root).with_suffix("").as_posix() for p in files]
    return pd.DataFrame({"case_id": ids, "patient_id": ids, "image_path": [str(p.resolve()) for p in files]})


def _extract_config(bundle_config: dict, masks: str) -> object:
    from usher2.features.extract import ExtractConfig

    settings = dict(bundle_config.get("extraction", {}).get("settings", {}))
    if not settings:
        raise InputError("bundle", "extraction settings in config.json (a bundle from usher2 fit)", "none")
    settings["backbones"] = tuple(settings.get("backbones", ()))
    settings.update(masks=masks, perturb=False)
    return ExtractConfig(**{k: v for k, v in settings.items() if k in ExtractConfig.__dataclass_fields__})


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
) -> ScoreResult:
    """Score frames with a bundle (see the module docstring).

    Raises:
        InputError: A bad bundle, input, clinical file or mask setting. Bad frames do not raise.
    """
    from usher2.features.extract import extract_cohort, with_segmenter_weights
    from usher2.fusion.bundle import Bundle, load_bundle
    from usher2.fusion.confidence import confidence_threshold

    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise InputError(out, "a scores file ending in .csv", repr(out.name))
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)  # a folder, or a loaded (verified) bundle
    cases = _inputs(Path(source), masks)
    cfg = with_segmenter_weights(_extract_config(b.config, masks), segmenter_weights)
    low_confidence = confidence_threshold(b.config, LOW_CONFIDENCE)
    features_path = out.with_name(out.stem + ".features.parquet")
    res = extract_cohort(cases, features_path, cfg, workers=workers, progress=progress)
    table = res.table.set_index("case_id")
    wanted = list(b.config.get("clinical", []))
    clin = pd.DataFrame(index=table.index, columns=wanted, dtype=float)
    outside: dict[str, bool] = {}
    bad_clinical: list[dict[str, str]] = []
    bad_ids: list[object] = []
    if wanted:
        if clinical is not None:
            cpath = Path(clinical)
            if not cpath.is_file():
                raise InputError(cpath, "a clinical CSV (case_id + the bundle's clinical columns)", "no such file")
            cdf = pd.read_csv(cpath, dtype={"case_id": str}).drop_duplicates("case_id").set_index("case_id")
        else:
            cdf = cases.assign(case_id=cases["case_id"].astype(str)).set_index("case_id")
        raw = cdf.reindex(index=table.index, columns=wanted).astype(object)
        ranges = b.config.get("clinical_ranges") or {}
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
        clin = clin.reindex(table.index).astype(float)
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
    failed = res.failures[res.failures["stage"] == "features"]
    no_lesion = failed["error"].str.contains(_NO_LESION, regex=False)
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
