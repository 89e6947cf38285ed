"""The MRI cohort manifest: one row per case, one path column per sequence, plus the lesion mask.

Columns:

* ``case_id`` (required, unique) and ``patient_id`` (defaults to ``case_id``);
* path columns, resolved to absolute paths (relative ones are taken from the manifest's
  folder): every known sequence column present (``t1``, ``t2``, ``dce`` (4D), ``adc``,
  ``dwi_b<number>``), any other column named in ``sequences``, and ``mask`` (required);
* optional ``label``, ``dce_times_s`` (``";"``-joined seconds, parsed to a tuple of floats),
  and anything else (clinical columns are kept as they are).

A sequence the caller needs is *available* when its column exists, except two derived ones:
``adc`` is also available from two or more ``dwi_b<b>`` columns (the map is computed later,
:func:`usher2.mri.adc.adc_map`), and ``dce_p<k>`` is phase ``k`` (1-based, phase 1 is the
pre-contrast baseline) of the 4D ``dce`` column. An empty cell is allowed: that case fails at
extraction, not the whole cohort.

Example:
    >>> df = pd.DataFrame({"case_id": ["a"], "t2": ["/x/t2.nii.gz"], "mask": ["/x/m.nii.gz"]})
    >>> out = read_mri_manifest(df, sequences=["t2"], check_files=False)
    >>> out.loc[0, "patient_id"], out.loc[0, "t2"]
    ('a', '/x/t2.nii.gz')
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from usher2.io.errors import InputError

__all__ = ["KNOWN_SEQUENCES", "dwi_columns", "read_mri_manifest", "sequence_column"]

KNOWN_SEQUENCES: tuple[str, ...] = ("t1", "t2", "dce", "adc")
"""Sequence columns recognised by name (besides ``dwi_b<number>``)."""

_DWI = re.compile(r"^dwi_b(\d+(?:\.\d+)?)$")
_DCE_PHASE = re.compile(r"^dce_p([1-9]\d*)$")


def dwi_columns(columns: Sequence[str]) -> dict[float, str]:
    """``{b-value: column}`` of the ``dwi_b<b>`` columns, sorted by b.

    Example:
        >>> dwi_columns(["case_id", "dwi_b800", "dwi_b0"])
        {0.0: 'dwi_b0', 800.0: 'dwi_b800'}
    """
    found = {float(m.group(1)): c for c in columns if (m := _DWI.match(str(c)))}
    return dict(sorted(found.items()))


def sequence_column(name: str) -> str | None:
    """The manifest column a derived sequence is read from (``dce_p3`` -> ``dce``), else None.

    Example:
        >>> sequence_column("dce_p3"), sequence_column("t2")
        ('dce', None)
    """
    return "dce" if _DCE_PHASE.match(name) else None


def _available(name: str, columns: Sequence[str]) -> bool:
    if name in columns:
        return True
    if name == "adc":
        return len(dwi_columns(columns)) >= 2
    if _DCE_PHASE.match(name):
        return "dce" in columns
    return False


def _times(value: object, where: str) -> tuple[float, ...] | None:
    if value is None or (np.ndim(value) == 0 and pd.isna(value)) or str(value).strip() == "":
        return None
    if isinstance(value, list | tuple | np.ndarray):
        parts = list(value)
    else:
        parts = [p for p in str(value).split(";") if p.strip()]
    try:
        return tuple(float(p) for p in parts)
    except ValueError as exc:
        raise InputError(where, "';'-joined seconds, e.g. '0;60;120'", repr(value)) from exc


def read_mri_manifest(
    manifest: str | Path | pd.DataFrame,
    *,
    sequences: Sequence[str] | None = None,
    check_files: bool = True,
    base: Path | None = None,
) -> pd.DataFrame:
    """Read and check an MRI manifest (CSV or Parquet, or a DataFrame).

    Args:
        manifest: A ``.csv``/``.parquet`` file or a DataFrame.
        sequences: Sequences the caller needs (``t2``, ``adc``, ``dce``, ``dce_p3``, ``dwi_b800``,
            or any other column name); None: no requirement beyond ``mask``.
        check_files: Check that every non-empty path exists.
        base: Folder relative paths are resolved against; default the manifest's folder (the
            current folder for a DataFrame).

    Returns:
        A copy with absolute path strings (None for empty cells), ``patient_id`` filled in and
        ``dce_times_s`` parsed to tuples of floats (None where empty).

    Raises:
        InputError: Unreadable file, no or duplicate ``case_id``, no ``mask`` column, a needed
            sequence that is not available (naming it and the columns present), a missing file
            (naming file and row), or unparsable ``dce_times_s``.
    """
    if isinstance(manifest, pd.DataFrame):
        df, where, folder = manifest.copy(), "manifest", Path(base or Path.cwd())
    else:
        path = Path(manifest)
        where = str(path)
        if not path.is_file():
            raise InputError(path, "an MRI manifest (.csv or .parquet)", "no such file")
        try:
            df = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
        except Exception as exc:  # pandas/pyarrow raise many types for a bad file
            raise InputError(path, "a readable CSV or Parquet manifest", f"{type(exc).__name__}: {exc}") from exc
        folder = Path(base) if base is not None else path.resolve().parent
    if "case_id" not in df.columns:
        raise InputError(where, "a 'case_id' column", f"columns {list(df.columns)}")
    df["case_id"] = df["case_id"].astype(str)
    dup = df["case_id"][df["case_id"].duplicated()].unique().tolist()
    if dup:
        raise InputError(where, "unique case_id values", f"duplicates {dup[:5]}")
    if "mask" not in df.columns:
        raise InputError(where, "a 'mask' column (the lesion mask of each case)", f"columns {list(df.columns)}")
    if "patient_id" not in df.columns:
        df["patient_id"] = df["case_id"]
    else:
        empty = df["patient_id"].isna() | (df["patient_id"].astype(str).str.strip() == "")
        df["patient_id"] = df["patient_id"].astype(str).where(~empty, df["case_id"])
    cols = [str(c) for c in df.columns]
    needed = list(dict.fromkeys(sequences or ()))
    missing = [s for s in needed if not _available(s, cols)]
    if missing:
        raise InputError(
            where,
            f"columns for the sequences {needed}",
            f"no column for {missing} (columns present: {cols})",
            fix="adc may come from two or more dwi_b<b> columns, dce_p<k> from a 4D 'dce' column",
        )
    path_cols = [c for c in cols if c in KNOWN_SEQUENCES or _DWI.match(c)]
    path_cols += [c for c in needed if c in cols and c not in path_cols]
    path_cols.append("mask")
    for col in path_cols:
        values = []
        for i, v in enumerate(df[col].tolist()):
            if v is None or (np.ndim(v) == 0 and pd.isna(v)) or str(v).strip() == "":
                values.append(None)
                continue
            p = Path(str(v)).expanduser()
            p = p if p.is_absolute() else folder / p
            if check_files and not p.exists():
                raise InputError(
                    p,
                    f"an existing file for column {col!r}",
                    f"nothing there (row {i}, case {df['case_id'].iloc[i]!r})",
                )
            values.append(str(p))
        df[col] = pd.Series(values, index=df.index, dtype=object)
    if "dce_times_s" in df.columns:
        df["dce_times_s"] = pd.Series(
            [
                _times(v, f"{where}: dce_times_s of case {c!r}")
                for v, c in zip(df["dce_times_s"], df["case_id"], strict=True)
            ],
            index=df.index,
            dtype=object,
        )
    return df.reset_index(drop=True)
