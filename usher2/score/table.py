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
features the model reads go to ``SCORES.features.parquet`` (``case_id`` and the columns
:class:`~usher2.score.engine.FrameScorer` computed: only those the fitted model can read, see
:func:`~usher2.fusion.needed.needed_columns`).

**One engine.** The frames go through :class:`~usher2.score.engine.FrameScorer`, the engine of
``usher2 score --out DIR`` and of the service, in chunks of the bundle's ``chunk_size``: equal
frames give equal probabilities whichever door they came through. With ``workers`` the chunks
run on a local Dask cluster (one scorer per worker process).

**Resume.** Every finished chunk is kept in ``SCORES.parts/`` (:mod:`usher2.io.parts`) under a key
of the bundle's hash, the mask setting and the segmenter weights; a case is found again by its
id, the SHA-256 of its image and mask files and of its clinical values, so a re-run after a kill
scores only what is new or changed.

:data:`~usher2.fusion.confidence.LOW_CONFIDENCE` (0.45 bits) is the fixed flag threshold; a bundle
fitted with ``--confidence-probs`` carries a threshold calibrated on out-of-fold predictions instead
(:func:`~usher2.fusion.confidence.calibrate_confidence`), which wins.

**Segmenter.** ``segmenter_weights`` (``usher2 score --segmenter-weights``) predicts the masks with
other weights of the bundle's segmenter network (e.g. one trained without the devices being
scored); the scores' JSON sidecar records the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.features.extract import NO_LESION_STAGE, collect_parts
from usher2.features.models import torch_threads
from usher2.fusion.bundle import Bundle, load_bundle
from usher2.fusion.confidence import LOW_CONFIDENCE
from usher2.io.atomic import atomic_path
from usher2.io.batch import read_case
from usher2.io.errors import InputError
from usher2.io.hashing import file_sha256
from usher2.io.parts import dask_results, parts_folder, run_parts, write_parquet
from usher2.io.scan import scan_frames
from usher2.score.engine import FrameScore, FrameScorer

__all__ = ["LOW_CONFIDENCE", "SCORE_COLUMNS", "ScoreResult", "score_inputs", "score_rows"]

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
#: Cases per chunk (one part of the resumable run; the scorer batches the frames of a chunk).
CHUNK = 16


@dataclass
class ScoreResult:
    """Scores and failures, as written."""

    scores: pd.DataFrame
    failures: pd.DataFrame
    paths: dict[str, Path]


@dataclass(frozen=True)
class _Job:
    """What a chunk needs to be scored anywhere (picklable, for Dask workers)."""

    bundle: str
    masks: str
    clinical: tuple[str, ...]
    segmenter_weights: str | None
    device: str | None
    one_thread: bool
    radiomics_backend: str = "torch"


@functools.lru_cache(maxsize=1)
def _worker_scorer(bundle: str, segmenter_weights: str | None, device: str | None, backend: str) -> FrameScorer:
    """One scorer per worker process (the bundle and networks are loaded once)."""
    return FrameScorer(bundle, cam=None, device=device, segmenter_weights=segmenter_weights, radiomics_backend=backend)


def _backend_setting(scorer: FrameScorer) -> dict[str, str]:
    """The radiomics backend, in a resume digest: none for pyradiomics (digests from before the
    torch backend stay valid), its name otherwise."""
    backend = scorer.model_info["radiomics_backend"]["scoring"]
    return {"radiomics_backend": backend} if backend not in (None, "pyradiomics") else {}


def score_rows(cases: list[dict[str, Any]], scores: list[FrameScore]) -> tuple[list[dict[str, Any]], list[dict]]:
    """The table rows (:data:`SCORE_COLUMNS` and the computed features) of scored cases, and the
    failure records (``case_id``, ``stage``, ``error``) of those that were not scored."""
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for case, r in zip(cases, scores, strict=True):
        if r.error is not None and not r.no_lesion:
            failures.append({"case_id": case["case_id"], "stage": "features", "error": r.error})
            continue
        rows.append(
            {
                "case_id": case["case_id"],
                "probability": np.nan if r.probability is None else r.probability,
                "label": r.label,
                "threshold": r.threshold,
                "no_lesion": r.no_lesion,
                "low_segmentation_confidence": r.low_segmentation_confidence,
                "mask_uncertainty": r.mask_uncertainty,
                "clinical_missing": r.clinical_missing,
                "clinical_out_of_range": r.clinical_out_of_range,
                **(r.features or {}),
            }
        )
    return rows, failures


def _score_chunk(job: _Job, chunk: list[dict[str, Any]], scorer: FrameScorer | None = None) -> dict[str, Any]:
    """One chunk's rows and failures (the ``compute`` of :func:`~usher2.io.parts.run_parts`)."""
    scorer = scorer or _worker_scorer(job.bundle, job.segmenter_weights, job.device, job.radiomics_backend)
    read, frames, masks, clinical = [], [], [], []
    failures: list[dict[str, Any]] = []
    for case in chunk:
        try:  # a file that cannot be read is reported and the rest go on
            c = read_case(case, masks=job.masks == "given")
            if job.masks == "given" and c.mask is None:
                raise InputError(f"case {c.case_id}", "a mask (masks='given')", "an empty mask cell")
        except (InputError, ValueError, OSError) as exc:
            failures.append({"case_id": case["case_id"], "stage": "input", "error": f"{type(exc).__name__}: {exc}"})
            continue
        read.append(case)
        frames.append(c.frame)
        masks.append(c.mask)
        clinical.append({k: case.get(k) for k in job.clinical} if job.clinical else None)
    names = [f"case {c['case_id']}" for c in read]
    with torch_threads(1 if job.one_thread else None):
        scored = scorer.score(frames, clinical, heatmaps=False, masks=masks, names=names) if read else []
    rows, failed = score_rows(read, scored)
    return {"rows": rows, "perturbations": [], "failures": failures + failed}


def _cases(source: Path, masks: str, clinical: str | Path | None, wanted: list[str]) -> list[dict[str, Any]]:
    """The frames of ``source`` as part-store cases: the manifest row, the clinical values (from
    ``clinical`` or the manifest), and the key hashes (image, and mask + clinical values)."""
    table = scan_frames(source, masks=masks)
    table = table.assign(case_id=table["case_id"].astype(str))
    if clinical is not None and wanted:
        cpath = Path(clinical)
        if not cpath.is_file():
            raise InputError(cpath, "a clinical CSV (case_id + the bundle's clinical columns)", "no such file")
        cdf = pd.read_csv(cpath, dtype={"case_id": str}).drop_duplicates("case_id").set_index("case_id")
        values = cdf.reindex(index=table["case_id"], columns=wanted)
        table = table.drop(columns=[c for c in wanted if c in table.columns]).assign(
            **{c: values[c].to_numpy() for c in wanted}
        )
    cases = []
    for row in table.to_dict("records"):
        row = {k: (None if np.ndim(v) == 0 and pd.isna(v) else v) for k, v in row.items()}
        row["patient_id"] = str(row.get("patient_id") or row["case_id"])
        hashes = []
        for col in ("image_path", "mask_path" if masks == "given" else None):
            try:
                hashes.append(file_sha256(row[col]) if col and row.get(col) else "")
            except OSError:
                hashes.append("")  # the chunk reports the unreadable file
        clin = json.dumps({c: row.get(c) for c in wanted}, default=str, sort_keys=True)
        row["image_sha256"] = hashes[0]
        row["mask_sha256"] = hashlib.sha256(f"{hashes[1]}|{clin}".encode()).hexdigest()  # mask and clinical values
        cases.append(row)
    return cases


def _assemble(
    cases: list[dict[str, Any]], parts: Path, threshold: float
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The scores, the features and the failures of every case, in the input's order."""
    frames, _, failures, order = collect_parts(parts, cases)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SCORE_COLUMNS)
    rows = rows.sort_values("case_id", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    scores = rows[SCORE_COLUMNS].copy()
    scores["label"] = scores["label"].astype("Int64")
    scores["threshold"] = threshold
    for c in ("no_lesion", "low_segmentation_confidence", "clinical_missing", "clinical_out_of_range"):
        scores[c] = scores[c].astype(bool)
    feature_cols = [c for c in rows.columns if c not in SCORE_COLUMNS]
    features = rows.loc[~rows["no_lesion"].astype(bool), ["case_id", *feature_cols]].reset_index(drop=True)
    fail = pd.DataFrame(failures, columns=["case_id", "stage", "error"])
    fail = fail[fail["stage"] != NO_LESION_STAGE]
    fail = fail.sort_values("case_id", key=lambda s: s.map(order), kind="stable")
    return scores, features, fail[["case_id", "error"]].reset_index(drop=True)


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
    log: Callable[[str], None] | None = None,
    radiomics_backend: str = "torch",
) -> ScoreResult:
    """Score frames with a bundle (see the module docstring).

    Args:
        workers: Score the chunks on a local Dask cluster of this many worker processes.
        device: Torch device for the networks (None: CUDA when available). The device changes
            no feature value: the parts of a CPU run stay valid on CUDA.
        radiomics_backend: ``"torch"`` or ``"pyradiomics"`` (:class:`FrameScorer`); part of the
            resume digest (the two agree to float tolerance, not bit for bit).

    Raises:
        InputError: A bad bundle, input, clinical file or mask setting. Bad frames do not raise.
    """
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise InputError(out, "a scores file ending in .csv", repr(out.name))
    if masks not in ("predicted", "given"):
        raise InputError("masks", "'predicted' or 'given'", repr(masks))
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)  # a folder, or a loaded (verified) bundle
    scorer = FrameScorer(
        b, cam=None, device=device, segmenter_weights=segmenter_weights, radiomics_backend=radiomics_backend
    )
    wanted = list(b.config.clinical)
    cases = _cases(Path(source), masks, clinical, wanted)
    weights = str(Path(segmenter_weights).resolve()) if segmenter_weights is not None else None
    job = _Job(str(b.path.resolve()), masks, tuple(wanted), weights, device, bool(workers), radiomics_backend)
    settings = {
        "bundle_sha256": scorer.model_info["sha256"],
        "masks": masks,
        "segmenter_weights_sha256": file_sha256(weights) if weights else None,
        "columns": scorer.needed.columns,
        **_backend_setting(scorer),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    parts = parts_folder(out, digest, settings)
    say = log or (lambda _msg: None)
    run_parts(
        cases,
        parts,
        CHUNK,
        functools.partial(_score_chunk, job, scorer=scorer),
        executor=lambda chunks: dask_results(functools.partial(_score_chunk, job), chunks, workers, None, say),
        progress=progress,
        log=say,
    )
    scores, features, failures = _assemble(cases, parts, b.threshold)
    return _write(out, b, scorer, masks, scores, features, failures)


def _write(
    out: Path,
    b: Bundle,
    scorer: FrameScorer,
    masks: str,
    scores: pd.DataFrame,
    features: pd.DataFrame,
    failures: pd.DataFrame,
) -> ScoreResult:
    """Write the scores, failures, features and the JSON sidecar atomically."""
    paths = {
        "scores": out,
        "failures": out.with_name(out.stem + ".failures.csv"),
        "features": out.with_name(out.stem + ".features.parquet"),
    }
    meta = {
        "bundle": str(b.path.resolve()),
        "bundle_config_format": b.config.format,
        "model": scorer.model_info,
        "masks": masks,
        "segmenter": scorer.config.segmenter if masks == "predicted" else None,
        "low_confidence_threshold": scorer.low_confidence,
        "mask_robustness": b.config.mask_robustness,
        "features_computed": scorer.groups,
    }
    write_parquet(paths["features"], features, meta)
    with atomic_path(out) as tmp:
        scores.to_csv(tmp, index=False)
    with atomic_path(paths["failures"]) as tmp:
        failures.to_csv(tmp, index=False)
    with atomic_path(out.with_name(out.stem + ".json")) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return ScoreResult(scores, failures, paths)
