"""Segment files on disk: an image, a directory tree or a manifest in, 0/255 PNG masks and a CSV out.

This is the library behind ``usher2 segment INPUT --out DIR [--model NAME]``. Input kinds,
output names, multi-frame inputs, failures, resuming and batching are those of
:mod:`usher2.io.runner`; the settings file is ``DIR/segment.json`` and holds the segmenter's
settings (:meth:`~usher2.segment.base.Segmenter.settings`: weights hash, threshold,
post-processing, test-time augmentation).

**Masks.** One 8-bit PNG per frame, 0 (background) or 255 (lesion), the frame's size. A frame
in which the segmenter finds no lesion gets an all-zero mask and ``no_lesion = 1`` in the CSV:
it is a result, not a failure.

**The CSV** ``DIR/segmentation.csv`` has one row per mask, in input order, for every complete
input (also those a re-run skipped):

============== =====================================================================
``case``       the input's name (as in ``failures.csv``)
``frame``      frame index within the input (0 for a single image)
``mask``       the mask's path relative to ``DIR``
``height``     frame height (pixels)
``width``      frame width (pixels)
``area_px``    lesion pixels in the mask
``area_fraction`` ``area_px / (height * width)``
``max_probability`` the largest lesion probability in the frame
``uncertainty`` mean predictive entropy (bits) inside the dilated mask (see
               :mod:`usher2.segment.base`)
``no_lesion``  1 when the mask is empty, else 0
============== =====================================================================

Each mask PNG carries its row's values as PNG text (key ``usher2``), so the CSV of a resumed run
is rebuilt from the masks on disk without running the network again; the CSV is written
atomically at the end of every run.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from usher2.io.atomic import atomic_path, atomic_write_text
from usher2.io.errors import Failure, InputError
from usher2.io.runner import FAILURES_FILE, map_frames
from usher2.segment import create_segmenter
from usher2.segment.base import Segmentation, Segmenter

__all__ = [
    "CSV_COLUMNS",
    "CSV_FILE",
    "DEFAULT_SEGMENTER",
    "FAILURES_FILE",
    "SETTINGS_FILE",
    "SegmentResult",
    "read_mask_record",
    "segment_paths",
]

DEFAULT_SEGMENTER = "unet"
"""The segmenter ``usher2 segment`` uses without ``--model``."""

SETTINGS_FILE = "segment.json"
CSV_FILE = "segmentation.csv"
CSV_COLUMNS = (
    "case",
    "frame",
    "mask",
    "height",
    "width",
    "area_px",
    "area_fraction",
    "max_probability",
    "uncertainty",
    "no_lesion",
)
_TEXT_KEY = "usher2"


@dataclass(frozen=True)
class SegmentResult:
    """What one :func:`segment_paths` run did.

    Attributes:
        out: The output folder.
        written: Every mask PNG written by this run, in input order (frames in frame order).
        segmented: The inputs segmented by this run (names as in failures), in input order.
        skipped: Inputs whose masks were already complete, in input order.
        failures: Inputs that could not be segmented, in input order.
        rows: ``segmentation.csv`` as records (every complete input, see the module docstring).
        settings: The segmenter's settings, as saved in ``segment.json``.
    """

    out: Path
    written: list[Path]
    segmented: list[str]
    skipped: list[str]
    failures: list[Failure]
    rows: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_inputs(self) -> int:
        """Every input found: segmented + skipped + failed."""
        return len(self.segmented) + len(self.skipped) + len(self.failures)

    @property
    def n_no_lesion(self) -> int:
        """Masks (frames) in which no lesion was found."""
        return sum(int(r["no_lesion"]) for r in self.rows)


def _record(result: Segmentation) -> dict[str, Any]:
    h, w = result.mask.shape
    return {
        "height": int(h),
        "width": int(w),
        "area_px": result.area_px,
        "area_fraction": round(result.area_px / float(h * w), 6),
        "max_probability": round(float(result.probability.max()), 6),
        "uncertainty": round(float(result.uncertainty), 6),
        "no_lesion": int(result.no_lesion),
    }


def _write_mask(path: Path, result: Segmentation) -> None:
    """The 0/255 mask, its CSV values as PNG text, written atomically."""
    info = PngImagePlugin.PngInfo()
    info.add_text(_TEXT_KEY, json.dumps(_record(result), sort_keys=True))
    with atomic_path(path) as tmp:
        Image.fromarray(np.where(result.mask, 255, 0).astype(np.uint8)).save(tmp, format="PNG", pnginfo=info)


def read_mask_record(path: str | Path) -> dict[str, Any]:
    """The per-frame values ``usher2 segment`` stored in a mask PNG (the CSV columns after ``mask``).

    Raises:
        InputError: The file is not a mask written by ``usher2 segment``.
    """
    try:
        with Image.open(path) as im:
            return dict(json.loads(im.text[_TEXT_KEY]))
    except (OSError, KeyError, ValueError, AttributeError, TypeError) as exc:
        raise InputError(
            path,
            "a mask PNG written by usher2 segment (with its values as PNG text)",
            f"{type(exc).__name__}: {exc}",
            fix="re-run with --overwrite",
        ) from exc


def _rows(out: Path, outputs: dict[str, list[Path]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for case, paths in outputs.items():
        for frame, path in enumerate(paths):  # the runner lists a multi-frame input's masks by frame index
            rows.append(
                {"case": case, "frame": frame, "mask": path.relative_to(out).as_posix(), **read_mask_record(path)}
            )
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def segment_paths(
    input: str | Path,
    out: str | Path,
    *,
    model: str | Segmenter = DEFAULT_SEGMENTER,
    weights: str | Path | None = None,
    tta: bool = False,
    device: str | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SegmentResult:
    """Segment an image, a directory tree or a manifest's images into 0/255 PNG masks and a CSV.

    See :mod:`usher2.io.runner` for output names, multi-frame inputs, resuming and failures, and
    the module docstring for the masks and the CSV.

    Args:
        input: An image, DICOM or video file; a directory (searched recursively); or a manifest.
        out: Output folder (created).
        model: A registered segmenter name (``usher2.segment.available_segmenters()``) or a
            :class:`~usher2.segment.base.Segmenter`.
        weights: A weights file instead of the shipped one (only with a name).
        tta: Flip test-time augmentation (only with a name).
        device: ``"cpu"``, ``"cuda"``…; default CUDA when available (only with a name).
        batch_size: Frames of equal shape segmented together.
        overwrite: Re-segment every input even where masks exist, also when ``out`` holds
            masks made with other settings.
        progress: Called as ``progress(done, total)`` with counts of inputs.

    Returns:
        A :class:`SegmentResult`.

    Raises:
        ValueError: Unknown ``model`` (the message lists the available ones) or ``batch_size`` < 1.
        InputError: ``input`` is missing or holds no frame files, the manifest is invalid, the
            weights file is missing or corrupt, ``out`` is the input's folder or a file, or
            ``out`` holds masks of other settings.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(model, Segmenter):
        segmenter = model
    else:
        try:
            segmenter = create_segmenter(model, weights=weights, tta=tta, device=device)
        except KeyError as exc:  # the registry's message already lists every available name
            raise ValueError(exc.args[0]) from None
    out = Path(out)
    r = map_frames(
        input,
        out,
        stage="segment",
        settings=segmenter.settings(),
        process=segmenter.segment,
        write=_write_mask,
        batch_size=batch_size,
        overwrite=overwrite,
        progress=progress,
    )
    rows = _rows(r.out, r.outputs)
    _write_csv(r.out / CSV_FILE, rows)
    return SegmentResult(r.out, r.written, r.processed, r.skipped, r.failures, rows, r.settings)
