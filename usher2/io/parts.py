"""The part store of a resumable cohort run: finished chunks kept on disk, found again after a kill.

A chunk of cases is written as ``NAME.rows.parquet`` (its rows), ``NAME.perturb.parquet`` (its
perturbation rows, if any) and ``NAME.json`` (its index: the cases with the SHA-256 of their image
and mask files, and their failures), the index last and every file atomically, so a part whose
index exists is complete. ``NAME`` is a digest of the chunk's cases and file hashes
(:func:`part_name`). A re-run reads :func:`finished_parts` and computes only the cases not in
them (failed cases are tried again). Used by the ultrasound extraction
(:func:`usher2.features.extract.extract_cohort`) and the MRI extraction
(:func:`usher2.mri.features.extract_mri_cohort`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from usher2.io.atomic import atomic_path, atomic_write_text

__all__ = ["finished_parts", "latest_failures", "part_name", "write_parquet", "write_part"]


def write_parquet(path: Path, df: pd.DataFrame, metadata: dict[str, Any] | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata is not None:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), b"usher2": json.dumps(metadata, default=str).encode()}
        )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def part_name(cases: list[dict[str, Any]]) -> str:
    key = "\n".join(f"{c['case_id']}|{c['image_sha256']}|{c['mask_sha256']}" for c in cases)
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def write_part(folder: Path, name: str, result: dict[str, Any], cases: list[dict[str, Any]]) -> None:
    """One finished chunk: its rows, perturbation rows and failures, then the index (written last)."""
    if result["rows"]:
        write_parquet(folder / f"{name}.rows.parquet", pd.DataFrame(result["rows"]))
    if result["perturbations"]:
        write_parquet(folder / f"{name}.perturb.parquet", pd.DataFrame(result["perturbations"]))
    index = {
        "cases": [{k: c[k] for k in ("case_id", "image_sha256", "mask_sha256")} for c in cases],
        "failures": result["failures"],
        "rows": bool(result["rows"]),
        "perturbations": bool(result["perturbations"]),
    }
    atomic_write_text(folder / f"{name}.json", json.dumps(index))


def finished_parts(folder: Path) -> dict[tuple[str, str, str], tuple[str, dict[str, Any]]]:
    """(case_id, image hash, mask hash) -> (part name, index) for every complete part."""
    done: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {}
    for f in sorted(folder.glob("*.json")):
        try:
            index = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        failed = {x["case_id"] for x in index["failures"] if x["stage"] in ("features", "no_lesion")}
        for c in index["cases"]:
            if c["case_id"] not in failed:  # failed cases are tried again
                done[(c["case_id"], c["image_sha256"], c["mask_sha256"])] = (f.stem, index)
    return done


def latest_failures(parts: Path, cases: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The failure records of the newest part holding each of ``cases``."""
    if not cases:
        return []
    wanted = {(c["case_id"], c["image_sha256"], c["mask_sha256"]) for c in cases}
    newest: dict[str, tuple[float, list[dict[str, Any]]]] = {}
    for f in parts.glob("*.json"):
        try:
            index = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        mtime = os.path.getmtime(f)
        for c in index["cases"]:
            if (c["case_id"], c["image_sha256"], c["mask_sha256"]) in wanted:
                recs = [x for x in index["failures"] if x["case_id"] == c["case_id"]]
                if c["case_id"] not in newest or mtime >= newest[c["case_id"]][0]:
                    newest[c["case_id"]] = (mtime, recs)
    return [r for _, recs in newest.values() for r in recs]
