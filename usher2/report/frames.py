"""The per-frame report of ``usher2 score``: one self-contained HTML file (images embedded, no scripts).

It reads a score folder written by :func:`usher2.score.folder.score_to_dir` (``scores.json``
plus the overlay PNGs and contact sheets) and shows:

1. **Model**: the bundle's name, family, classifier, usher2 version, SHA-256, threshold, and what
   the heat maps explain (CAM method, backbone, target).
2. **Summary**: inputs, frames, scored frames, flags, failures; the flag legend.
3. **Cases**: one row per input with the (temporal aggregate) probability and label.
4. **Frames**: for a still image its overlay (mask contour + Grad-CAM) and values; for a sequence
   the probability over frames (threshold line; low-confidence frames hollow), its contact sheet
   and a link to the annotated video. At most ``max_images`` overlays are embedded (the rest are
   in ``overlays/``).
5. **Failures**: inputs that could not be read, with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from usher2.io.atomic import atomic_write_text
from usher2.io.errors import InputError
from usher2.report.html import document, escape, f3, fail, fig_uri, figure, rgb_uri, table

__all__ = ["FLAG_TEXT", "write_frame_report"]

FLAG_TEXT = {
    "no_lesion": "the segmenter found no lesion: nothing to score",
    "low_segmentation_confidence": "the segmenter's mask uncertainty is high: check the contour before using the score",
    "clinical_missing": "clinical values the model reads were missing and were imputed (training medians)",
    "clinical_out_of_range": "a clinical value lay outside the range the model was trained on: the score extrapolates",
}


def _flags(fr: dict[str, Any]) -> str:
    return ", ".join(k for k in FLAG_TEXT if fr.get(k)) or "-"


def _image(root: Path, rel: str | None, max_side: int) -> str | None:
    if not rel:
        return None
    bgr = cv2.imread(str(root / rel), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return rgb_uri(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_side=max_side)


def _sequence_plot(rec: dict[str, Any], threshold: float) -> str:
    import matplotlib.pyplot as plt

    from usher2.evaluate.figures import figure_style

    fr = rec["frames"]
    x = np.array([f["frame"] for f in fr], float)
    p = np.array([np.nan if f["probability"] is None else f["probability"] for f in fr], float)
    low = np.array([bool(f["low_segmentation_confidence"]) for f in fr])
    with figure_style():
        fig, ax = plt.subplots(figsize=(6.4, 2.6))
        ax.plot(x, p, "-", color="0.6", lw=1)
        ax.plot(x[~low], p[~low], "o", ms=4, color="C0", label="confident")
        if low.any():
            ax.plot(x[low], p[low], "o", ms=4, mfc="none", color="C0", label="low segmentation confidence")
        ax.axhline(threshold, ls="--", color="C3", lw=1, label=f"threshold {threshold:.3f}")
        agg = rec["aggregate"]["probability"]
        if agg is not None:
            ax.axhline(agg, color="C2", lw=1, label=f"aggregate {agg:.3f}")
        ax.set(xlabel="frame", ylabel="probability", ylim=(0, 1))
        ax.legend(fontsize=7, loc="upper right", frameon=False)
    return fig_uri(fig)


def _read_scores(root: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """``scores.json`` of a score folder: its model, inputs and failures.

    Raises:
        InputError: The file is missing, not JSON, or lacks ``model`` or ``inputs``.
    """
    path = root / "scores.json"
    if not path.is_file():
        raise InputError(path, "scores.json of a score folder (usher2 score INPUT --out DIR)", "no such file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        model, inputs, failures = doc["model"], doc["inputs"], doc.get("failures", [])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(path, "the score folder's JSON (model, inputs)", f"{type(exc).__name__}: {exc}") from exc
    return model, inputs, failures


def _section(anchor: str, heading: str, body: list[str]) -> str:
    return f'<section id="{anchor}"><h2>{heading}</h2>' + "".join(body) + "</section>"


def _section_model(model: dict[str, Any], thr: float) -> str:
    """1. Model: the bundle, its version and hash, the threshold and what the heat maps explain."""
    heat = model.get("heatmap") or {}
    rows = [
        ["bundle", model.get("name")],
        ["family / classifier", f"{model.get('family')} / {model.get('classifier')}"],
        ["usher2 version", model.get("version")],
        ["SHA-256 (config + model)", model.get("sha256")],
        ["decision threshold", f3(thr)],
        ["heat map", f"{heat.get('method') or 'none'} on {heat.get('backbone') or '-'}: {heat.get('target')}"],
    ]
    return _section("model", "1. Model", [table(["field", "value"], rows)])


def _section_summary(
    inputs: list[dict[str, Any]], frames: list[dict[str, Any]], n_scored: int, failures: list[Any]
) -> str:
    """2. Summary: counts of inputs, frames, scored frames, flags and failures; the flag legend."""
    counts = {k: sum(bool(f.get(k)) for f in frames) for k in FLAG_TEXT}
    n_sequences = sum(r["kind"] == "sequence" for r in inputs)
    row = [len(inputs), n_sequences, len(frames), n_scored, *counts.values(), len(failures)]
    header = ["inputs", "sequences", "frames", "scored", *FLAG_TEXT, "failed inputs"]
    legend = "<ul>" + "".join(f"<li><b>{escape(k)}</b>: {escape(v)}</li>" for k, v in FLAG_TEXT.items()) + "</ul>"
    return _section("summary", "2. Summary", [table(header, [row], num=set(range(8))), legend])


def _section_cases(inputs: list[dict[str, Any]]) -> str:
    """3. Cases: one row per input with its (aggregate) probability and label."""
    rows = []
    for r in inputs:
        a = r["aggregate"]
        rows.append(
            [
                r["case_id"],
                r["kind"],
                f"{a['n_scored']}/{a['n_frames']}",
                f3(a["probability"]) if a["probability"] is not None else "-",
                "-" if a["label"] is None else a["label"],
                a["rule"],
            ]
        )
    header = ["case", "kind", "scored/frames", "probability", "label", "rule"]
    return _section("cases", "3. Cases", [table(header, rows, num={2, 3})])


def _sequence_parts(root: Path, r: dict[str, Any], thr: float) -> list[str]:
    """A sequence's summary line, probability plot, contact sheet and video link."""
    a = r["aggregate"]
    parts = [
        f"<p>{a['n_frames']} frames, {a['n_scored']} scored, {a['n_confident']} confident; "
        f"aggregate {f3(a['probability']) if a['probability'] is not None else '-'} ({escape(a['rule'])}); "
        f"median {f3(a['median'])}, max {f3(a['max'])}.</p>"
    ]
    if a["n_scored"]:
        parts.append(figure(_sequence_plot(r, thr), "Probability per frame"))
    sheet = _image(root, r.get("contact_sheet"), 1100)
    if sheet:
        parts.append(figure(sheet, "Contact sheet (red border: at or above the threshold)"))
    if r.get("video"):
        parts.append(f'<p>Annotated video: <a href="{escape(r["video"])}">{escape(r["video"])}</a></p>')
    return parts


def _still_part(uri: str | None, f: dict[str, Any]) -> str:
    """A still image's overlay (or, without one, its caption alone) with its values and flags."""
    p = "-" if f["probability"] is None else f3(f["probability"])
    caption = f"p = {p}, label {f['label'] if f['label'] is not None else '-'}; flags: {_flags(f)}"
    if f.get("error"):
        caption += f"; {f['error']}"
    return figure(uri, caption) if uri else f"<p>{escape(caption)}</p>"


def _section_frames(root: Path, inputs: list[dict[str, Any]], thr: float, max_images: int) -> str:
    """4. Frames: per input, a still image's overlay or a sequence's plot, sheet and video."""
    parts = []
    embedded = 0
    for r in inputs:
        parts.append(f'<h3 id="case-{escape(r["case_id"])}">{escape(r["case_id"])}</h3>')
        if r["kind"] == "sequence":
            parts += _sequence_parts(root, r, thr)
            continue
        f = r["frames"][0]
        uri = _image(root, f.get("overlay"), 360) if embedded < max_images else None
        embedded += uri is not None
        parts.append(_still_part(uri, f))
    if embedded >= max_images:
        parts.append(f"<p>Only the first {max_images} overlays are embedded; all are in overlays/.</p>")
    return _section("frames", "4. Frames", parts)


def _section_failures(failures: list[dict[str, Any]]) -> str:
    """5. Failures: the inputs that could not be read, with the reason."""
    if failures:
        body = table(["case", "error"], [[x["case_id"], x["error"]] for x in failures])
    else:
        body = "<p>None: every input was read.</p>"
    return _section("failures", "5. Failures", [body])


def write_frame_report(score_dir: str | Path, out_html: str | Path, *, max_images: int = 200) -> Path:
    """Write the per-frame report of a score folder (see the module docstring).

    Args:
        score_dir: A folder written by :func:`~usher2.score.folder.score_to_dir`.
        out_html: The HTML file (written atomically).
        max_images: At most this many overlays embedded.

    Raises:
        InputError: ``scores.json`` is missing or invalid.

    Example:
        >>> import tempfile
        >>> try:
        ...     write_frame_report(tempfile.mkdtemp(), "r.html")
        ... except InputError as exc:
        ...     "scores.json" in str(exc)
        True
    """
    root = Path(score_dir)
    model, inputs, failures = _read_scores(root)
    thr = float(model.get("threshold", 0.5))
    parts = [_section_model(model, thr)]
    frames = [f for r in inputs for f in r["frames"]]
    n_scored = sum(f["probability"] is not None for f in frames)
    parts.append(_section_summary(inputs, frames, n_scored, failures))
    parts.append(_section_cases(inputs))
    parts.append(_section_frames(root, inputs, thr, max_images))
    parts.append(_section_failures(failures))
    if n_scored == 0 and frames:
        parts.insert(0, fail("No frame could be scored (see the flags and failures)."))
    out_html = Path(out_html)
    atomic_write_text(out_html, document(f"usher2 scores: {model.get('name')}", "".join(parts)))
    return out_html
