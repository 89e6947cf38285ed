"""``usher2 score INPUT --bundle B --out DIR``: per-frame scores, overlays, sequences and a report.

**Inputs.** An image, a DICOM (single- or multi-frame), a video (mp4, avi, ...), a directory
(searched recursively for all three; hidden files skipped) or a manifest (``.csv``/``.parquet``;
its clinical columns are used). ``case_id`` is the file's path relative to the directory without
its suffix (a manifest's own ``case_id``). Every frame of a multi-frame DICOM or a video is scored
(``stride`` takes every k-th, ``max_frames`` caps the count) with :class:`~usher2.score.engine.FrameScorer`.

**Outputs** in ``DIR`` (every file written atomically):

========================  ==========================================================================
``frames.csv``            one row per frame: ``case_id, frame, probability, label, threshold``, the
                          flags, ``mask_uncertainty``, ``mask_area_px``, ``overlay`` (relative path),
                          ``error``
``cases.csv``             one row per input: ``kind`` (image/sequence), frame counts and the
                          temporal aggregate (:func:`temporal_aggregate`)
``scores.json``           the same, nested per input, with the model (name, version, hash), the
                          settings and the heat-map target
``overlays/<case>/``      ``<frame>.png``: the frame with the Grad-CAM heat map inside the ROI box
                          and the mask contour (green), probability written in the corner
                          (:func:`usher2.explain.render.render_overlay`, as the service draws it)
``sheets/<case>.png``     sequences: a contact sheet (up to 48 evenly spaced frames, each captioned
                          with its index and probability; red border at or above the threshold)
``videos/<case>.mp4``     videos: the annotated video (overlay frames at the source's frame rate)
``failures.csv``          inputs that could not be read (``case_id, error``); a bad input never
                          stops the rest
``report.html``           the per-frame report (:func:`usher2.report.frames.write_frame_report`)
========================  ==========================================================================

**Temporal aggregate.** For a sequence the case probability is the mean over *confident* frames:
scored frames whose segmentation is not flagged ``low_segmentation_confidence``. With no confident
frame it falls back to the mean of all scored frames (``rule`` says which); with none scored it is
empty. The median, maximum and the fraction of frames at or above the threshold are given too.

**Resume.** Each finished input is kept in ``DIR/.parts/`` under a key of the input file's SHA-256,
the bundle's hash and the settings; a re-run after a kill scores only the inputs not finished.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from usher2.explain.render import contact_sheet, render_overlay
from usher2.fusion.clinical import check_clinical
from usher2.io.atomic import atomic_path, atomic_write_text
from usher2.io.errors import InputError
from usher2.io.frames import frame_kind, iter_frames
from usher2.io.hashing import file_sha256
from usher2.io.scan import scan_inputs
from usher2.report.frames import write_frame_report
from usher2.score.engine import FrameScorer

__all__ = ["FRAME_COLUMNS", "ScoreDirResult", "score_to_dir", "temporal_aggregate"]

FRAME_COLUMNS = [
    "case_id",
    "frame",
    "probability",
    "label",
    "threshold",
    "no_lesion",
    "low_segmentation_confidence",
    "clinical_missing",
    "clinical_out_of_range",
    "mask_uncertainty",
    "mask_area_px",
    "overlay",
    "error",
]
SHEET_MAX = 48


@dataclass
class ScoreDirResult:
    """What :func:`score_to_dir` wrote."""

    frames: pd.DataFrame
    cases: pd.DataFrame
    failures: pd.DataFrame
    out: Path
    report: Path | None


# ------------------------------------------------------------------------------ aggregate
def temporal_aggregate(probabilities: Any, confident: Any, threshold: float) -> dict[str, Any]:
    """The case-level result of a sequence of frame scores (see the module docstring).

    Args:
        probabilities: Per-frame probabilities; NaN/None where a frame was not scored.
        confident: Per-frame bool: the segmentation was not flagged as low confidence.
        threshold: The bundle's decision threshold.

    Example:
        >>> a = temporal_aggregate([0.2, 0.8, None, 0.6], [True, False, True, True], 0.5)
        >>> a["probability"], a["rule"], a["n_scored"], a["n_confident"], a["label"]
        (0.4, 'mean over confident frames', 3, 2, 0)
        >>> temporal_aggregate([None], [True], 0.5)["probability"] is None
        True
    """
    p = pd.to_numeric(pd.Series(list(probabilities), dtype=object), errors="coerce").to_numpy(float)
    c = np.asarray(list(confident), bool)
    scored = np.isfinite(p)
    use = scored & c
    rule = "mean over confident frames"
    if not use.any():
        use, rule = scored, "mean over all scored frames (none confident)"
    out: dict[str, Any] = {
        "n_frames": len(p),
        "n_scored": int(scored.sum()),
        "n_confident": int((scored & c).sum()),
        "rule": rule if scored.any() else "no frame scored",
        "probability": None,
        "label": None,
        "median": None,
        "max": None,
        "fraction_positive": None,
    }
    if scored.any():
        prob = float(np.mean(p[use]))
        out.update(
            probability=round(prob, 12),
            label=int(prob >= threshold),
            median=float(np.median(p[scored])),
            max=float(np.max(p[scored])),
            fraction_positive=float(np.mean(p[scored] >= threshold)),
        )
    return out


# ------------------------------------------------------------------------------ pictures
def _write_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")


class _VideoOut:
    """An annotated video written to a temporary file and renamed when complete."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps, self.writer, self.tmp = path, fps if fps and fps > 0 else 10.0, None, None

    def add(self, rgb: np.ndarray) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
            h, w = rgb.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> bool:
        if self.writer is None:
            return False
        self.writer.release()
        ok = self.tmp.is_file() and self.tmp.stat().st_size > 0
        if ok:
            self.tmp.replace(self.path)
        return ok


# ------------------------------------------------------------------------------ inputs
def _safe_name(case_id: str) -> str:
    """A file name for a case id (path separators become ``__``)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case_id.replace("/", "__"))


def _frames(path: Path, stride: int, max_frames: int | None) -> tuple[Iterator[Any], str, float]:
    kind = frame_kind(path)
    it = iter_frames(path)
    first = next(it, None)
    if first is None:
        raise InputError(path, "at least one frame", "none")
    fps = float(first.metadata.get("fps", 0) or 0)

    def gen() -> Iterator[Any]:
        k = 0
        for i, f in enumerate([first] if kind == "image" else _chain(first, it)):
            if i % stride:
                continue
            if max_frames is not None and k >= max_frames:
                return
            k += 1
            yield f

    return gen(), kind, fps / stride if fps else 0.0


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


# ------------------------------------------------------------------------------ the run
def score_to_dir(
    source: str | Path,
    bundle: str | Path,
    out: str | Path,
    *,
    clinical: str | Path | None = None,
    cam: str | None = "gradcam",
    overlays: bool = True,
    stride: int = 1,
    max_frames: int | None = None,
    batch_size: int = 8,
    report: bool = True,
    device: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    segmenter_weights: str | Path | None = None,
    radiomics_backend: str = "torch",
) -> ScoreDirResult:
    """Score every frame of ``source`` with ``bundle`` into the folder ``out`` (see the module docstring).

    Args:
        source: An image, DICOM, video, directory or manifest.
        bundle: A bundle folder from ``usher2 fit``.
        out: The output folder (created).
        clinical: CSV of ``case_id`` + the bundle's clinical columns (a manifest's own columns otherwise).
        cam: CAM method for the heat maps; None: no heat maps (overlays show the mask only).
        overlays: Write overlay PNGs (and contact sheets and annotated videos).
        stride: Score every ``stride``-th frame of a sequence.
        max_frames: At most this many frames per input.
        batch_size: Frames per call to the scorer.
        report: Write ``report.html``.
        device: Torch device (None: CUDA when available).
        progress: Called as ``progress(done_inputs, total_inputs)``.
        segmenter_weights: Other weights of the bundle's segmenter network (None: its own).
        radiomics_backend: ``"torch"`` or ``"pyradiomics"`` (:class:`~usher2.score.engine.FrameScorer`).

    Raises:
        InputError: A bad bundle, source, clinical file or setting. Bad inputs do not raise.
    """
    if stride < 1:
        raise InputError("stride", "a positive frame step", str(stride))
    if max_frames is not None and max_frames < 1:
        raise InputError("max_frames", "a positive number of frames", str(max_frames))
    out = Path(out)
    if out.suffix.lower() == ".csv":
        raise InputError(out, "an output folder", "a .csv path", fix="give a folder, or use score_inputs for a CSV")
    items = scan_inputs(source)
    clin = _clinical_table(clinical)
    scorer = FrameScorer(
        bundle, cam=cam, device=device, segmenter_weights=segmenter_weights, radiomics_backend=radiomics_backend
    )
    settings = {"cam": cam, "overlays": overlays, "stride": stride, "max_frames": max_frames}
    if scorer.model_info["radiomics_backend"]["scoring"] == "torch":  # not bit-equal to pyradiomics: own parts
        settings["radiomics_backend"] = "torch"
    if segmenter_weights is not None:  # other masks, other results: never reuse parts of a run with the bundle's own
        settings["segmenter"] = scorer.model_info["segmenter"]
    key_base = json.dumps([scorer.model_info["sha256"], settings], sort_keys=True)
    parts = out / ".parts"
    records, failures = [], []
    for n, item in enumerate(items):
        cid = item["case_id"]
        try:
            sha = file_sha256(item["path"])
        except (OSError, InputError) as exc:
            failures.append({"case_id": cid, "error": f"{type(exc).__name__}: {exc}"})
            continue
        part = parts / (hashlib.sha256((key_base + cid + sha).encode()).hexdigest()[:32] + ".json")
        if part.is_file():
            records.append(json.loads(part.read_text(encoding="utf-8")))
        else:
            values = {c: item["row"].get(c) for c in scorer.clinical}
            if clin is not None and cid in clin.index:
                values = clin.loc[cid].to_dict()
            try:
                # a case with bad clinical values is reported before any frame of it is read
                check_clinical(values, scorer.clinical, scorer.clinical_ranges, where=f"case {cid}")
                rec = _score_one(scorer, item["path"], cid, values, out, overlays, stride, max_frames, batch_size)
            except InputError as exc:
                failures.append({"case_id": cid, "error": f"InputError: {exc}"})
                continue
            atomic_write_text(part, json.dumps(rec, indent=1))
            records.append(rec)
        if progress:
            progress(n + 1, len(items))
    return _write_outputs(out, scorer, settings, records, failures, report=report)


def _clinical_table(clinical: str | Path | None) -> pd.DataFrame | None:
    if clinical is None:
        return None
    p = Path(clinical)
    if not p.is_file():
        raise InputError(p, "a clinical CSV (case_id + the bundle's clinical columns)", "no such file")
    df = pd.read_csv(p, dtype={"case_id": str})
    if "case_id" not in df.columns:
        raise InputError(p, "a case_id column", f"columns {list(df.columns)[:8]}")
    return df.drop_duplicates("case_id").set_index("case_id")


def _score_one(
    scorer: Any,
    path: Path,
    cid: str,
    clinical: dict[str, Any],
    out: Path,
    overlays: bool,
    stride: int,
    max_frames: int | None,
    batch_size: int,
) -> dict[str, Any]:
    frames, kind, fps = _frames(path, stride, max_frames)
    name = _safe_name(cid)
    thr = scorer.bundle.threshold
    rows: list[dict[str, Any]] = []
    tiles: list[tuple[int, np.ndarray, float | None]] = []
    video = _VideoOut(out / "videos" / f"{name}.mp4", fps) if overlays and kind == "video" else None
    batch: list[Any] = []

    def flush() -> None:
        for f, r in zip(batch, scorer.score(batch, clinical), strict=True):
            rec = {"frame": int(f.index), **r.record()}
            rec["probability"] = None if r.probability is None else round(r.probability, 12)
            if overlays:
                p = "-" if r.probability is None else f"{r.probability:.3f}"
                rgb = render_overlay(r.pixels, r.mask, r.heat, f"#{f.index} p={p}")
                rel = Path("overlays") / name / f"{f.index:05d}.png"
                _write_png(out / rel, rgb)
                rec["overlay"] = rel.as_posix()
                tiles.append((int(f.index), rgb, r.probability))
                if video is not None:
                    video.add(rgb)
            rows.append(rec)
        batch.clear()

    for f in frames:
        batch.append(f)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    seq = kind != "image" and len(rows) > 1
    agg = temporal_aggregate(
        [r["probability"] for r in rows], [not r["low_segmentation_confidence"] for r in rows], thr
    )
    rec: dict[str, Any] = {"case_id": cid, "kind": "sequence" if seq else "image", "source_kind": kind}
    if not seq and agg["n_scored"]:
        agg["rule"] = "single frame"
    rec["aggregate"] = agg
    rec["frames"] = rows
    if overlays and seq:
        pick = np.unique(np.linspace(0, len(tiles) - 1, min(SHEET_MAX, len(tiles))).round().astype(int))
        sheet = contact_sheet(
            [tiles[k][1] for k in pick],
            [f"#{tiles[k][0]} " + ("-" if tiles[k][2] is None else f"{tiles[k][2]:.2f}") for k in pick],
            [None if tiles[k][2] is None else tiles[k][2] >= thr for k in pick],
        )
        _write_png(out / "sheets" / f"{name}.png", sheet)
        rec["contact_sheet"] = f"sheets/{name}.png"
    if video is not None and video.close():
        rec["video"] = f"videos/{name}.mp4"
    return rec


def _write_outputs(
    out: Path,
    scorer: Any,
    settings: dict[str, Any],
    records: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    *,
    report: bool,
) -> ScoreDirResult:
    frame_rows = [{"case_id": r["case_id"], **fr} for r in records for fr in r["frames"]]
    frames = pd.DataFrame(frame_rows).reindex(columns=FRAME_COLUMNS)
    frames["label"] = frames["label"].astype("Int64")
    cases = pd.DataFrame(
        [
            {
                "case_id": r["case_id"],
                "kind": r["kind"],
                "n_frames": r["aggregate"]["n_frames"],
                "n_scored": r["aggregate"]["n_scored"],
                "n_confident": r["aggregate"]["n_confident"],
                "probability": r["aggregate"]["probability"],
                "label": r["aggregate"]["label"],
                "threshold": scorer.bundle.threshold,
                "rule": r["aggregate"]["rule"],
                "median": r["aggregate"]["median"],
                "max": r["aggregate"]["max"],
                "fraction_positive": r["aggregate"]["fraction_positive"],
            }
            for r in records
        ],
        columns=[
            "case_id",
            "kind",
            "n_frames",
            "n_scored",
            "n_confident",
            "probability",
            "label",
            "threshold",
            "rule",
            "median",
            "max",
            "fraction_positive",
        ],
    )
    cases["label"] = cases["label"].astype("Int64")
    fail = pd.DataFrame(failures, columns=["case_id", "error"])
    for name, df in (("frames.csv", frames), ("cases.csv", cases), ("failures.csv", fail)):
        with atomic_path(out / name) as tmp:
            df.to_csv(tmp, index=False)
    doc = {
        "model": scorer.model_info,
        "bundle": str(scorer.bundle.path.resolve()),
        "settings": settings,
        "inputs": records,
        "failures": failures,
    }
    atomic_write_text(out / "scores.json", json.dumps(doc, indent=1, default=_json_default))
    path = None
    if report:
        path = write_frame_report(out, out / "report.html")
    return ScoreDirResult(frames, cases, fail, out, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
