"""Cohort manifests (CSV or Parquet): read with full validation, write atomically.

Columns (the public contract, see DESIGN.md):

=============  ========  ==========================================================
column         required  meaning
=============  ========  ==========================================================
``case_id``    yes       unique per row
``patient_id`` no        defaults to ``case_id``; all splitting is by patient
``image``      yes       the frame, relative to the manifest's directory (or absolute)
``mask``       no        0/255 lesion mask, same rule; an empty cell means "no mask"
``label``      no        0, 1 or empty
anything else  no        clinical or metadata columns (``clinical=`` checks them)
=============  ========  ==========================================================

**Resolved paths.** :func:`read_manifest` keeps ``image`` and ``mask`` exactly as written in
the file (relative) and adds two columns, ``image_path`` and ``mask_path``, holding absolute
paths (``mask_path`` is missing where ``mask`` is empty, and present even when the file has
no ``mask`` column). ``df.attrs["manifest_path"]`` and ``df.attrs["manifest_dir"]`` record
where it was read from. ``image_path`` and ``mask_path`` are therefore reserved names in a
manifest file. :func:`write_manifest` drops them again and rewrites ``image``/``mask``
relative to the new manifest's directory, so a read -> write round trip anywhere keeps every
path valid.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.io.atomic import atomic_path
from usher2.io.errors import InputError
from usher2.io.pixels import check_file

REQUIRED_COLUMNS = ("case_id", "image")
KEY_COLUMNS = ("case_id", "patient_id", "image", "mask", "label")
RESOLVED_COLUMNS = ("image_path", "mask_path")
SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class Problem:
    """One problem in a manifest.

    Attributes:
        row: 1-based data row (the header is not counted, so a CSV's line is ``row + 1``), or
            None for a problem with the whole file or a whole column.
        column: The column, or None.
        message: What was expected and what arrived.
    """

    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where) or 'file'}: {self.message}"


class ManifestError(InputError):
    """Every problem found in a manifest, in one error.

    Attributes:
        problems: The :class:`Problem` list, in row order after whole-file problems.

    Example:
        >>> e = ManifestError("m.csv", [Problem(2, "label", "expected 0, 1 or empty, got '7'")])
        >>> e.problems[0].row, e.problems[0].column
        (2, 'label')
    """

    def __init__(self, where: str | Path, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            where,
            "a valid manifest (rows count from 1 below the header)",
            f"{len(self.problems)} problem(s):\n{listing}\n",
            fix="correct each listed cell and read it again",
        )


_BAD = object()


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float | np.floating) and math.isnan(v))


def _text(v: Any) -> Any:
    """A key cell as stripped text, None when empty, or ``_BAD`` for a wrong type."""
    if _missing(v):
        return None
    if isinstance(v, str):
        return v.strip() or None
    if isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_):
        return str(int(v))
    return _BAD


def _label(v: Any) -> Any:
    """A label cell as 0, 1, None (empty) or ``_BAD``."""
    if _missing(v):
        return None
    if isinstance(v, bool | np.bool_):
        return _BAD
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        try:
            v = float(s)
        except ValueError:
            return _BAD
    if isinstance(v, int | float | np.integer | np.floating) and float(v) in (0.0, 1.0):
        return int(v)
    return _BAD


def _load(p: Path) -> pd.DataFrame:
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(p, "a manifest ending in .csv or .parquet", f"suffix {suffix or '(none)'!r}")
    try:
        if suffix == ".csv":
            return pd.read_csv(p, dtype={c: str for c in KEY_COLUMNS})
        return pd.read_parquet(p)
    except Exception as exc:  # parser errors differ between engines; re-raised as one, chained
        raise InputError(
            p,
            f"a readable {suffix[1:].upper()} manifest",
            f"an unreadable file ({type(exc).__name__}: {exc})",
        ) from exc


def _check_file_cell(base: Path, value: str) -> tuple[str, str | None]:
    """The absolute path of a path cell, and a problem message when the file is unusable."""
    resolved = (base / value).resolve() if not os.path.isabs(value) else Path(value)
    if not resolved.is_file():
        return str(resolved), f"file not found: {value!r} (resolved to {resolved})"
    if resolved.stat().st_size == 0:
        return str(resolved), f"file is empty (0 bytes): {value!r}"
    return str(resolved), None


def _column_problems(raw: pd.DataFrame, clinical: list[str]) -> list[Problem]:
    """Problems with the whole file or whole columns: missing, reserved or misused columns, no rows."""
    problems: list[Problem] = []
    columns = [str(c) for c in raw.columns]
    for col in REQUIRED_COLUMNS:
        if col not in columns:
            problems.append(Problem(None, col, f"required column is missing (columns found: {columns})"))
    for col in RESOLVED_COLUMNS:
        if col in columns:
            problems.append(Problem(None, col, "is reserved (read_manifest adds it); rename the column"))
    if len(raw) == 0:
        problems.append(Problem(None, None, "the manifest has no rows"))
    for col in clinical:
        if col in KEY_COLUMNS or col in RESOLVED_COLUMNS:
            problems.append(Problem(None, col, "is a manifest key column, not a clinical column"))
        elif col not in columns:
            problems.append(Problem(None, col, f"requested clinical column is missing (columns found: {columns})"))
    return problems


def _parse_text_columns(raw: pd.DataFrame, problems: list[Problem]) -> dict[str, list[Any]]:
    """``case_id``, ``patient_id``, ``image`` and ``mask`` (those present) as :func:`_text` values."""
    parsed: dict[str, list[Any]] = {}
    for col in ("case_id", "patient_id", "image", "mask"):
        if col not in raw.columns:
            continue
        values = [_text(v) for v in raw[col].tolist()]
        for i, (v, orig) in enumerate(zip(values, raw[col].tolist(), strict=True)):
            if v is _BAD:
                problems.append(Problem(i + 1, col, f"expected text, got {type(orig).__name__} {orig!r}"))
            elif v is None and col in ("case_id", "image"):
                problems.append(Problem(i + 1, col, "expected a value, got an empty cell"))
            elif v is None and col == "patient_id":
                problems.append(
                    Problem(
                        i + 1,
                        col,
                        "expected a value, got an empty cell (or drop the column: it defaults to case_id)",
                    )
                )
        parsed[col] = values
    return parsed


def _duplicate_problems(case_ids: list[Any], problems: list[Problem]) -> None:
    """Append a problem for every case_id already seen in an earlier row."""
    first_row: dict[str, int] = {}
    for i, cid in enumerate(case_ids):
        if not isinstance(cid, str):
            continue
        if cid in first_row:
            problems.append(Problem(i + 1, "case_id", f"duplicate case_id {cid!r} (first in row {first_row[cid]})"))
        else:
            first_row[cid] = i + 1


def _resolve_files(
    parsed: dict[str, list[Any]], base: Path, n: int, check_files: bool, problems: list[Problem]
) -> dict[str, list[str | None]]:
    """Absolute paths of the ``image`` and ``mask`` cells (None where empty or invalid)."""
    resolved: dict[str, list[str | None]] = {"image": [None] * n, "mask": [None] * n}
    for col in ("image", "mask"):
        for i, v in enumerate(parsed.get(col, [])):
            if not isinstance(v, str):
                continue
            abs_path, problem = _check_file_cell(base, v)
            resolved[col][i] = abs_path
            if check_files and problem is not None:
                problems.append(Problem(i + 1, col, problem))
    return resolved


def _parse_labels(raw: pd.DataFrame, problems: list[Problem]) -> list[Any]:
    """The ``label`` column as :func:`_label` values (empty when there is no such column)."""
    labels: list[Any] = []
    if "label" in raw.columns:
        for i, orig in enumerate(raw["label"].tolist()):
            v = _label(orig)
            if v is _BAD:
                problems.append(Problem(i + 1, "label", f"expected 0, 1 or empty, got {orig!r}"))
            labels.append(v)
    return labels


def _parse_clinical(raw: pd.DataFrame, clinical: list[str], problems: list[Problem]) -> dict[str, pd.Series]:
    """The present, non-key ``clinical`` columns as float64; a problem per missing or non-finite cell."""
    numeric: dict[str, pd.Series] = {}
    for col in clinical:
        if col not in raw.columns or col in KEY_COLUMNS:
            continue
        values = pd.to_numeric(raw[col], errors="coerce").astype("float64")
        for i, (orig, num) in enumerate(zip(raw[col].tolist(), values.tolist(), strict=True)):
            if _missing(orig) or (isinstance(orig, str) and not orig.strip()):
                problems.append(Problem(i + 1, col, "expected a number, got a missing value (NaN/empty)"))
            elif math.isnan(num):
                problems.append(Problem(i + 1, col, f"expected a number, got non-numeric {orig!r}"))
            elif not math.isfinite(num):
                problems.append(Problem(i + 1, col, f"expected a finite number, got {orig!r}"))
        numeric[col] = values
    return numeric


def _assemble(
    raw: pd.DataFrame,
    parsed: dict[str, list[Any]],
    labels: list[Any],
    numeric: dict[str, pd.Series],
    resolved: dict[str, list[str | None]],
) -> pd.DataFrame:
    """The validated table: parsed key columns, resolved paths, key columns first."""
    df = raw.copy()
    df["case_id"] = pd.Series(parsed["case_id"], dtype="str")
    df["patient_id"] = pd.Series(parsed["patient_id"] if "patient_id" in parsed else parsed["case_id"], dtype="str")
    df["image"] = pd.Series(parsed["image"], dtype="str")
    if "mask" in parsed:
        df["mask"] = pd.Series(parsed["mask"], dtype="str")
    if "label" in raw.columns:
        df["label"] = pd.array(labels, dtype="Int64")
    for col, values in numeric.items():
        df[col] = values
    df["image_path"] = pd.Series(resolved["image"], dtype="str")
    df["mask_path"] = pd.Series(resolved["mask"], dtype="str")
    front = [c for c in ("case_id", "patient_id", "image", "mask", "label") if c in df.columns]
    return df[front + [c for c in df.columns if c not in front]].reset_index(drop=True)


def read_manifest(path: str | Path, *, check_files: bool = True, clinical: Sequence[str] | None = None) -> pd.DataFrame:
    """Read and validate a manifest; every problem is reported at once.

    Args:
        path: A ``.csv`` or ``.parquet`` manifest. Paths in it are relative to its directory.
        check_files: Check that every image (and given mask) exists and is not empty.
        clinical: Columns that must be present and hold finite numbers in every row.

    Returns:
        One row per case, in file order, with a fresh ``RangeIndex``: ``case_id``,
        ``patient_id`` and ``image`` as str; ``mask`` as str or missing; ``label`` (when present)
        as nullable ``Int64``; the ``clinical`` columns as float64; every other column as read;
        plus absolute ``image_path`` and ``mask_path`` (see the module docstring).

    Raises:
        InputError: The file is missing, empty, unreadable or has the wrong suffix.
        ManifestError: Anything else; ``.problems`` lists each with its row and column.

    Example:
        >>> import pathlib, tempfile
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "a.png").write_bytes(b"x")
        >>> _ = (d / "m.csv").write_text("case_id,image,label,age\\nc1,a.png,1,54\\n")
        >>> df = read_manifest(d / "m.csv", clinical=["age"])
        >>> df.loc[0, "patient_id"], int(df.loc[0, "label"]), df.loc[0, "image_path"] == str(d / "a.png")
        ('c1', 1, True)
    """
    p = check_file(path, what="manifest (.csv or .parquet)")
    raw = _load(p).reset_index(drop=True)  # a Parquet file may carry its own index; rows align by position
    raw.columns = [str(c).strip() for c in raw.columns]  # " label" from a hand-edited header is still label
    base = p.parent.resolve()
    clinical = list(clinical or [])
    # Problems are collected in this order; the stable sort below keeps it within a row.
    problems = _column_problems(raw, clinical)
    parsed = _parse_text_columns(raw, problems)
    if "case_id" in parsed:
        _duplicate_problems(parsed["case_id"], problems)
    resolved = _resolve_files(parsed, base, len(raw), check_files, problems)
    labels = _parse_labels(raw, problems)
    numeric = _parse_clinical(raw, clinical, problems)
    if problems:
        problems.sort(key=lambda q: (q.row is not None, q.row or 0))
        raise ManifestError(p, problems)

    df = _assemble(raw, parsed, labels, numeric, resolved)
    df.attrs["manifest_path"] = str(p.resolve())
    df.attrs["manifest_dir"] = str(base)
    return df


def _relative(paths: pd.Series, out_dir: Path) -> pd.Series:
    return pd.Series(
        [None if _missing(v) else Path(os.path.relpath(str(v), out_dir)).as_posix() for v in paths],
        index=paths.index,
        dtype="str",
    )


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a manifest atomically, as CSV or Parquet by the suffix of ``path``.

    When ``df`` has ``image_path``/``mask_path`` (as :func:`read_manifest` returns), ``image``
    and ``mask`` are rewritten relative to ``path``'s directory and the absolute columns are
    dropped; otherwise ``image``/``mask`` are written as they are. Empty labels and masks are
    written as empty cells.

    Args:
        df: At least ``case_id`` and ``image``.
        path: ``*.csv`` or ``*.parquet``; its directory is created when needed.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        InputError: Wrong suffix or a required column missing.

    Example:
        >>> import pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "m.csv"
        >>> _ = write_manifest(pd.DataFrame({"case_id": ["c1"], "image": ["a.png"]}), out)
        >>> out.read_text().splitlines()
        ['case_id,image', 'c1,a.png']
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(out, "a manifest path ending in .csv or .parquet", f"suffix {suffix or '(none)'!r}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(out, f"a DataFrame with columns {list(REQUIRED_COLUMNS)}", f"missing {missing}")
    table = df.copy()
    table.attrs = {}
    out_dir = out.parent.resolve() if out.parent.exists() else Path(os.path.abspath(out.parent))
    for col, abs_col in (("image", "image_path"), ("mask", "mask_path")):
        if abs_col in table.columns and (col in table.columns or table[abs_col].notna().any()):
            table[col] = _relative(table[abs_col], out_dir)
    table = table.drop(columns=[c for c in RESOLVED_COLUMNS if c in table.columns])
    with atomic_path(out) as tmp:
        if suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
    return out
