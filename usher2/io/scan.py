"""The one input scanner: what a source path holds, for every command that reads frames.

A *source* is an image, DICOM (single- or multi-frame) or video file, a directory (searched
recursively; hidden files and folders skipped; an output folder inside it is never read back),
or a manifest (``.csv``/``.parquet``, :func:`usher2.io.manifest.read_manifest`). Files of a
directory are sorted by their path relative to it (as POSIX text), and a case's id is that path
without its suffix. ``usher2 enhance``/``segment`` (:mod:`usher2.io.runner`), ``usher2 score``
to a folder (:mod:`usher2.score.folder`) and to a table (:mod:`usher2.score.table`) all find their
inputs here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from usher2.io.dicom import DICOM_SUFFIXES
from usher2.io.errors import InputError
from usher2.io.frames import IMAGE_SUFFIXES
from usher2.io.manifest import SUFFIXES as MANIFEST_SUFFIXES
from usher2.io.manifest import read_manifest
from usher2.io.video import VIDEO_SUFFIXES

__all__ = [
    "FRAME_SUFFIXES",
    "INPUT_SUFFIXES",
    "is_inside",
    "list_files",
    "scan_frames",
    "scan_inputs",
    "walk_files",
]

#: Every file a frame can come from: images, DICOM, video.
INPUT_SUFFIXES = tuple(sorted({*IMAGE_SUFFIXES, *DICOM_SUFFIXES, *VIDEO_SUFFIXES}))
#: Files holding still frames: images and DICOM (the cohort table path reads no video).
FRAME_SUFFIXES = tuple(sorted({*IMAGE_SUFFIXES, *DICOM_SUFFIXES}))


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both as given: resolve them first)."""
    return path == folder or folder in path.parents


def walk_files(root: Path, suffixes: Iterable[str], *, exclude: Path | None = None) -> list[Path]:
    """Files under ``root`` with one of ``suffixes`` (any case), sorted by relative POSIX path.

    Hidden files and folders are skipped, and so is ``exclude`` (resolved; e.g. the run's own
    output folder) and everything under it.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> for n in ("b.png", "a/c.PNG", ".hidden/d.png", "e.txt"):
        ...     (d / n).parent.mkdir(parents=True, exist_ok=True); _ = (d / n).write_bytes(b"")
        >>> [p.relative_to(d).as_posix() for p in walk_files(d, {".png"})]
        ['a/c.PNG', 'b.png']
    """
    wanted = {s.lower() for s in suffixes}
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # prune in place so os.walk does not descend; never read an output folder back in
        dirnames[:] = [
            d
            for d in dirnames
            if not d.startswith(".") and (exclude is None or not is_inside((here / d).resolve(), exclude))
        ]
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in wanted:
                continue
            found.append(((here / name).relative_to(root).as_posix(), here / name))
    return [p for _, p in sorted(found, key=lambda t: t[0])]


def list_files(folder: Path, suffixes: Iterable[str], what: str) -> list[Path]:
    """:func:`walk_files`, refusing an empty result.

    Raises:
        InputError: None found (the message says ``what`` was looked for).
    """
    files = walk_files(folder, suffixes)
    if not files:
        raise InputError(folder, f"a folder with {what}", "none in it")
    return files


def _case_id(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def scan_frames(source: str | Path, *, masks: str = "predicted") -> pd.DataFrame:
    """A source of still frames as a manifest table (``case_id``, ``patient_id``, ``image_path``, ...).

    A manifest is read as it is (its masks, labels and clinical columns kept); an image, DICOM or
    folder gives one row per file with ``patient_id`` = ``case_id``.

    Raises:
        InputError: No such source, no frames in a folder, or ``masks="given"`` without mask cells.
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() in MANIFEST_SUFFIXES:
        df = read_manifest(source, check_files=False)
        if masks == "given" and ("mask_path" not in df.columns or df["mask_path"].isna().all()):
            raise InputError(source, "a mask column (masks='given')", "no masks", fix="use --masks predicted")
        return df
    if source.is_file():
        files, root = [source], source.parent
    elif source.is_dir():
        root = source
        files = list_files(source, FRAME_SUFFIXES, "image or DICOM files")
    else:
        raise InputError(source, "an image, DICOM, directory or manifest", "no such file or directory")
    if masks == "given":
        raise InputError("masks", "'predicted' for images and folders (only a manifest gives masks)", "'given'")
    ids = [_case_id(p, root) for p in files]
    return pd.DataFrame({"case_id": ids, "patient_id": ids, "image_path": [str(p.resolve()) for p in files]})


def scan_inputs(source: str | Path) -> list[dict[str, Any]]:
    """A source of frames and sequences as ``{"case_id", "path", "row"}`` items (``row``: the
    manifest row, ``{}`` otherwise).

    Raises:
        InputError: No such source, or no image, DICOM or video file in a folder.
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() in MANIFEST_SUFFIXES:
        rows = read_manifest(source, check_files=False).to_dict(orient="records")
        return [{"case_id": str(r["case_id"]), "path": Path(r["image_path"]), "row": r} for r in rows]
    if source.is_file():
        return [{"case_id": source.stem, "path": source, "row": {}}]
    if not source.is_dir():
        raise InputError(source, "an image, DICOM, video, directory or manifest", "no such file or directory")
    files = list_files(source, INPUT_SUFFIXES, "image, DICOM or video files")
    return [{"case_id": _case_id(p, source), "path": p, "row": {}} for p in files]
