"""Map a per-frame stage over files on disk: an image, a directory tree or a manifest in, one PNG per frame out.

This is the machinery behind ``usher2 enhance`` and ``usher2 segment``; each supplies a batch
function and a PNG writer, and gets the behaviour below.

**Inputs and output names.** ``INPUT`` is one of

* a single image, DICOM or video file: its output is ``DIR/<stem>.png``;
* a directory, searched recursively for files whose suffix is an image, DICOM or video suffix
  (``.png .jpg .jpeg .bmp .tif .tiff .dcm .dicom .mp4 ...``, any case). Hidden files and folders
  (name starting with ``.``) and anything inside ``DIR`` are not searched. Outputs keep the
  path relative to the directory, with the suffix replaced by ``.png``;
* a manifest (``.csv``/``.parquet``): its ``image`` column, each output under the image's path
  relative to the manifest's folder. Where some images lie outside that folder (``../x.png`` or
  absolute paths, as ``usher2 import`` writes for a manifest kept apart from the data), names
  are relative to the deepest folder holding the manifest's folder and every image instead, so
  that no output escapes ``DIR``. Failures are named by ``case_id``; rows naming the same image
  are processed once.

**Multi-frame inputs.** A multi-frame DICOM and every video give one PNG per frame,
``<relative stem>/frame_NNNN.png`` (``NNNN`` = 0-based frame index), plus
``<relative stem>/frames.json`` (``{"source", "frames"}``), written last: it marks the input
complete. A single-frame DICOM gives ``<relative stem>.png`` like an image.

**Failures are listed, never skipped silently.** A file that cannot be read (missing, empty,
corrupt, unsupported) becomes a :class:`~usher2.io.errors.Failure` and the rest go on. Two
inputs whose outputs would share a name (``a.png`` and ``a.tif``) are a failure of the later
one. ``DIR/failures.csv`` (columns ``case``, ``error``) is written on every run, header only
when nothing failed.

**Resume.** Every PNG is written atomically (:func:`~usher2.io.atomic.atomic_path`), so an
output that exists is complete. A settings file (``DIR/enhance.json``, ``DIR/segment.json``)
records the stage's settings, the usher2 version and the inputs processed into ``DIR``; it is
written before the first PNG. A re-run with the same settings skips every input whose output
(``<stem>.png`` or ``<stem>/frames.json``) exists, so a killed run picks up where it stopped
and a failed input is tried again. A re-run with different settings raises
:class:`~usher2.io.errors.InputError` (outputs of two settings must not mix in one folder)
unless ``overwrite=True``, which redoes every input and rewrites the settings file. Skipping
goes by output name: an input that changed on disk since its output was written is not redone
(use ``overwrite``).

**Batching.** Frames of equal shape are processed together, up to ``batch_size`` at a time, in
input order; at most ``4 * batch_size`` frames wait in memory. The stages work per frame, so a
frame's output does not depend on its batch-mates and the outputs are the same for any
``batch_size``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from usher2 import __version__
from usher2.io.atomic import atomic_path, atomic_write_text
from usher2.io.errors import Failure, InputError
from usher2.io.frames import frame_kind, iter_frames
from usher2.io.manifest import SUFFIXES as MANIFEST_SUFFIXES
from usher2.io.manifest import read_manifest
from usher2.io.scan import INPUT_SUFFIXES, is_inside, walk_files
from usher2.types import Frame

__all__ = [
    "FAILURES_FILE",
    "FRAMES_FILE",
    "INPUT_SUFFIXES",
    "RunResult",
    "map_frames",
    "to_uint8",
    "write_png",
]

FAILURES_FILE = "failures.csv"
FRAMES_FILE = "frames.json"

_KEYS = {"enhance": "enhancer", "segment": "segmenter"}  # stage -> its key in the settings file
_PENDING_FACTOR = 4  # frames waiting for batch-mates are capped at this many batches


@dataclass(frozen=True)
class RunResult:
    """What one :func:`map_frames` run did.

    Attributes:
        out: The output folder.
        written: Every PNG written by this run, in input order (frames in frame order).
        processed: The inputs processed by this run (names as in failures), in input order.
        skipped: Inputs whose outputs were already complete, in input order.
        failures: Inputs that could not be processed, in input order.
        settings: The stage's settings, as saved in the settings file.
        outputs: Every complete input (processed or skipped) -> its PNGs, in input order.
    """

    out: Path
    written: list[Path]
    processed: list[str]
    skipped: list[str]
    failures: list[Failure]
    settings: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def n_inputs(self) -> int:
        """Every input found: processed + skipped + failed."""
        return len(self.processed) + len(self.skipped) + len(self.failures)


@dataclass
class _Item:
    """One input file and where its outputs go."""

    case: str  # how failures and skips name it
    source: Path
    stem: Path  # output path without suffix, relative to ``out``
    outstanding: int = 0  # frames queued but not yet written
    read_done: bool = False
    multi: bool = False
    failed: bool = False
    frames: int = 0


@dataclass
class _Pending:
    item: int
    index: int
    pixels: np.ndarray


def _single_png(out: Path, stem: Path) -> Path:
    return out / stem.with_name(stem.name + ".png")


def _frame_png(out: Path, stem: Path, index: int) -> Path:
    return out / stem / f"frame_{index:04d}.png"


def _is_complete(out: Path, stem: Path) -> bool:
    return _single_png(out, stem).is_file() or (out / stem / FRAMES_FILE).is_file()


def _scan_directory(root: Path, out: Path) -> list[tuple[str, Path, Path]]:
    """``(case, source, stem)`` for every frame file under ``root``, sorted by relative path."""
    files = walk_files(root, INPUT_SUFFIXES, exclude=out)
    return [(p.relative_to(root).as_posix(), p, p.relative_to(root).with_suffix("")) for p in files]


def _scan_manifest(path: Path) -> tuple[list[tuple[str, Path, Path]], Path]:
    """``(case, source, stem)`` per distinct manifest image, and the folder names are relative to."""
    df = read_manifest(path, check_files=False)  # a missing image fails its own case, not the run
    folder = Path(os.path.abspath(path.parent))
    rows: list[tuple[str, Path, Path]] = []
    for case_id, cell, resolved in zip(df["case_id"], df["image"], df["image_path"], strict=True):
        # Names come from the cell as written (lexically), not the resolved path: a symlinked
        # images/ folder must still give images/... names.
        lexical = Path(os.path.normpath(folder / str(cell)))
        rows.append((str(case_id), Path(resolved), lexical))
    base = folder
    if not all(is_inside(lex, folder) for _, _, lex in rows):
        base = Path(os.path.commonpath([str(folder), *(str(lex.parent) for _, _, lex in rows)]))
    items: list[tuple[str, Path, Path]] = []
    seen: set[Path] = set()
    for case_id, resolved, lexical in rows:
        if lexical in seen:
            continue
        seen.add(lexical)
        items.append((case_id, resolved, lexical.relative_to(base).with_suffix("")))
    return items, base


def _find_inputs(source: Path, out: Path) -> tuple[list[_Item], list[Failure], dict[str, int]]:
    """The inputs in order, collision failures, and each case's position in input order."""
    if not source.exists():
        raise InputError(
            source,
            "an existing image, DICOM or video file, a directory or a manifest (.csv/.parquet)",
            "no such file or directory",
            fix="check the path",
        )
    if source.is_dir():
        base = source
        found = _scan_directory(source, out.resolve())
        if not found:
            raise InputError(
                source,
                f"a directory holding image, DICOM or video files (suffixes {', '.join(INPUT_SUFFIXES)})",
                "none found (hidden files and the output folder are not searched)",
            )
    elif source.suffix.lower() in MANIFEST_SUFFIXES:
        found, base = _scan_manifest(source)
    else:
        if source.suffix.lower() not in INPUT_SUFFIXES:
            frame_kind(source)  # content sniffing (DICOM without a suffix); unknown content -> InputError
        base = source.parent
        found = [(source.name, source, Path(source.stem))]
    if out.resolve() == base.resolve():
        raise InputError(
            "--out",
            f"a folder other than {base} (the folder the output names are relative to)",
            str(out),
            fix="outputs would overwrite the inputs; choose another folder",
        )
    items: list[_Item] = []
    failures: list[Failure] = []
    owner: dict[str, str] = {}
    for case, path, stem in found:
        key = stem.as_posix().lower()  # a.png and A.PNG collide on case-insensitive file systems
        if key in owner:
            failures.append(
                Failure(case, f"InputError: output {stem.as_posix()}.png is already taken by {owner[key]}; rename one")
            )
            continue
        owner[key] = case
        items.append(_Item(case=case, source=path, stem=stem))
    return items, failures, {case: k for k, (case, _, _) in enumerate(found)}


def _json_ready(value: Any) -> Any:
    """Settings as JSON reads them back (tuples become lists), so saved and new compare equal."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _check_settings(out: Path, stage: str, settings: dict[str, Any], source: Path, overwrite: bool) -> bool:
    """Write ``<stage>.json``; True when existing outputs may be reused (same settings)."""
    path = out / f"{stage}.json"
    inputs = [str(source.resolve())]
    reuse = False
    if path.is_file() and not overwrite:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            saved_settings, saved_inputs = saved[_KEYS[stage]], list(saved.get("inputs", []))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(
                path,
                f"the settings file usher2 {stage} writes",
                f"an unreadable file ({type(exc).__name__}: {exc})",
                fix=f"pass --overwrite to redo everything ({stage} every input again), or choose another --out",
            ) from exc
        if saved_settings != settings:
            raise InputError(
                out,
                f"outputs made with the same {_KEYS[stage]} settings ({json.dumps(settings, sort_keys=True)})",
                f"a folder already holding outputs made with {json.dumps(saved_settings, sort_keys=True)}",
                fix=f"pass --overwrite to {stage} every input again into it, or choose another --out",
            )
        reuse = True
        inputs = saved_inputs + [p for p in inputs if p not in saved_inputs]
    record = {_KEYS[stage]: settings, "usher2_version": __version__, "inputs": inputs}
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return reuse


def to_uint8(y: np.ndarray) -> np.ndarray:
    """``round(clip(y, 0, 1) * 255)`` as uint8 (NumPy's round-half-to-even: 8-bit data round-trips)."""
    return np.rint(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Write an 8-bit PNG atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), pixels):
            raise OSError(f"{path}: OpenCV could not write the PNG")


def _write_failures(out: Path, failures: list[Failure]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "error"])
    writer.writerows([f.case, f.error] for f in failures)
    atomic_write_text(out / FAILURES_FILE, buf.getvalue())


def _frames_of(item: _Item) -> Iterator[Frame]:
    """The item's frames; sets ``item.multi`` before the first is yielded."""
    kind = frame_kind(item.source)
    frames = iter_frames(item.source)
    first = next(frames)
    second = next(frames, None)
    item.multi = kind == "video" or second is not None
    yield first
    if second is not None:
        yield second
        yield from frames


def _outputs_of(out: Path, item: _Item) -> list[Path]:
    """The PNGs of a complete input."""
    single = _single_png(out, item.stem)
    if single.is_file():
        return [single]
    try:
        n = int(json.loads((out / item.stem / FRAMES_FILE).read_text(encoding="utf-8"))["frames"])
    except (OSError, ValueError, KeyError, TypeError):
        return sorted((out / item.stem).glob("frame_*.png"))
    return [_frame_png(out, item.stem, k) for k in range(n)]


def _check_arguments(batch_size: int, stage: str) -> None:
    """``ValueError`` for a ``batch_size`` below 1 (or not an integer) or an unknown ``stage``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if stage not in _KEYS:
        raise ValueError(f"stage must be one of {sorted(_KEYS)}, got {stage!r}")


@dataclass
class _Run:
    """One :func:`map_frames` run in progress: the frames waiting for batch-mates and what became of each input."""

    out: Path
    items: list[_Item]
    process: Callable[[np.ndarray], Sequence[Any]]
    write: Callable[[Path, Any], None]
    batch_size: int
    progress: Callable[[int, int], None] | None
    total: int
    done: int
    written: list[tuple[int, int, Path]] = field(default_factory=list)  # (item, frame index, png)
    processed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, Failure] = field(default_factory=dict)
    buckets: dict[tuple[int, int], list[_Pending]] = field(default_factory=dict)  # by frame shape

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total)

    def skip(self, i: int) -> None:
        """Count input ``i`` as complete from an earlier run."""
        self.skipped.append(i)
        self.done += 1
        self.report()

    def finish(self, i: int) -> None:
        """Mark input ``i`` processed once it is read and every frame of it is written."""
        item = self.items[i]
        if item.failed or not item.read_done or item.outstanding:
            return
        if item.multi:  # written last: marks every frame as present
            marker = {"source": str(item.source.resolve()), "frames": item.frames}
            atomic_write_text(self.out / item.stem / FRAMES_FILE, json.dumps(marker, indent=2) + "\n")
        self.processed.append(i)
        self.done += 1
        self.report()

    def flush(self, shape: tuple[int, int]) -> None:
        """Process and write the frames of ``shape`` waiting in their bucket."""
        batch = self.buckets.pop(shape, [])
        if not batch:
            return
        x = np.stack([p.pixels for p in batch])[:, None]
        results = self.process(x)
        for k, p in enumerate(batch):
            item = self.items[p.item]
            path = _frame_png(self.out, item.stem, p.index) if item.multi else _single_png(self.out, item.stem)
            self.write(path, results[k])
            self.written.append((p.item, p.index, path))
            item.outstanding -= 1
        for i in dict.fromkeys(p.item for p in batch):
            self.finish(i)

    def flush_all(self) -> None:
        for shape in list(self.buckets):
            self.flush(shape)

    def queue(self, i: int, frame: Frame) -> None:
        """Queue a frame of input ``i``; flush its bucket when full, every bucket when too many wait."""
        item = self.items[i]
        self.buckets.setdefault(frame.shape, []).append(_Pending(i, frame.index, frame.pixels))
        item.outstanding += 1
        item.frames += 1
        if len(self.buckets[frame.shape]) >= self.batch_size:
            self.flush(frame.shape)
        if sum(len(b) for b in self.buckets.values()) >= _PENDING_FACTOR * self.batch_size:
            self.flush_all()

    def drop(self, i: int) -> None:
        """Forget the queued frames of failed input ``i`` and count it as done."""
        for shape in list(self.buckets):
            self.buckets[shape] = [p for p in self.buckets[shape] if p.item != i]
        self.done += 1
        self.report()

    def read(self, i: int) -> None:
        """Queue every frame of input ``i``; a read error makes it a failure."""
        item = self.items[i]
        frames = _frames_of(item)
        while True:
            # Only reading is guarded: an error inside the stage is not this input's fault.
            try:
                frame = next(frames)
            except StopIteration:
                break
            except Exception as exc:  # one bad input must not stop the run; it is listed, not hidden
                item.failed = True
                self.failed[i] = Failure.from_exception(item.case, exc)
                break
            self.queue(i, frame)
        if item.failed:
            self.drop(i)
            return
        item.read_done = True
        self.finish(i)

    def result(self, failures: list[Failure], order: dict[str, int], settings: dict[str, Any]) -> RunResult:
        """Write ``failures.csv`` (collision and read failures, in input order) and sum up the run."""
        items = self.items
        all_failures = sorted([*failures, *self.failed.values()], key=lambda f: order[f.case])  # input order
        _write_failures(self.out, all_failures)
        complete = sorted([*self.processed, *self.skipped])
        return RunResult(
            out=self.out,
            written=[path for _, _, path in sorted(self.written, key=lambda t: (t[0], t[1]))],
            processed=[items[i].case for i in sorted(self.processed)],
            skipped=[items[i].case for i in sorted(self.skipped)],
            failures=all_failures,
            settings=settings,
            outputs={items[i].case: _outputs_of(self.out, items[i]) for i in complete},
        )


def map_frames(
    input: str | Path,
    out: str | Path,
    *,
    stage: str,
    settings: dict[str, Any],
    process: Callable[[np.ndarray], Sequence[Any]],
    write: Callable[[Path, Any], None],
    batch_size: int = 8,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> RunResult:
    """Run a per-frame stage over an image, a directory tree or a manifest's images into PNGs under ``out``.

    See the module docstring for output names, multi-frame inputs, resuming and failures.

    Args:
        input: An image, DICOM or video file; a directory (searched recursively); or a manifest.
        out: Output folder (created).
        stage: ``"enhance"`` or ``"segment"``: names the settings file ``<stage>.json``.
        settings: The stage's settings (JSON-serialisable); a re-run must bring the same ones.
        process: Maps a float32 ``(B, 1, H, W)`` batch in [0, 1] to ``B`` per-frame results.
        write: Writes one result as the PNG at the given path (atomically).
        batch_size: Frames of equal shape processed together.
        overwrite: Redo every input even where outputs exist, also when ``out`` holds outputs of
            other settings.
        progress: Called as ``progress(done, total)`` with counts of inputs.

    Returns:
        A :class:`RunResult`.

    Raises:
        ValueError: ``batch_size`` < 1 or an unknown ``stage``.
        InputError: ``input`` is missing or holds no frame files, the manifest is invalid,
            ``out`` is the input's folder or a file, or ``out`` holds outputs of other settings.

    Example:
        >>> import pathlib, tempfile
        >>> from PIL import Image
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> Image.new("L", (8, 8), 100).save(d / "x.png")
        >>> r = map_frames(d / "x.png", d / "out", stage="enhance", settings={"name": "invert"},
        ...                process=lambda x: list(1 - x[:, 0]), write=lambda p, y: write_png(p, to_uint8(y)))
        >>> r.processed, int(cv2.imread(str(d / "out" / "x.png"), 0)[0, 0])
        (['x.png'], 155)
    """
    _check_arguments(batch_size, stage)
    source, out = Path(input), Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "an output folder", "an existing file", fix="choose a folder for --out")
    items, failures, order = _find_inputs(source, out)
    settings = _json_ready(settings)
    out.mkdir(parents=True, exist_ok=True)
    reuse = _check_settings(out, stage, settings, source, overwrite)

    run = _Run(out, items, process, write, batch_size, progress, total=len(items) + len(failures), done=len(failures))
    run.report()
    for i, item in enumerate(items):
        if reuse and _is_complete(out, item.stem):
            run.skip(i)
        else:
            run.read(i)
    run.flush_all()
    return run.result(failures, order, settings)
