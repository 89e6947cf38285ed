"""Cohort feature extraction: a manifest in, one named feature table (Parquet) out.

For every manifest row the frame level (:func:`~usher2.features.extract.extract_chunk`) reads the
frame, optionally cleans it of burned-in overlays and enhances it, takes its lesion mask from the
manifest (``masks="given"``) or the segmenter (``masks="predicted"``), and computes one row of
radiomics (:mod:`usher2.features.radiomics`, plus the BI-RADS lexicon descriptors of
:mod:`usher2.features.lexicon` and the regions of :mod:`usher2.features.regions`) and deep
features (:mod:`usher2.features.deep`, one block per backbone). This module runs that over a
cohort, keeps what is finished, and writes the tables.

**Outputs** (beside ``OUT = FEATURES.parquet``, named after its stem):

* ``OUT``: ``case_id``, ``patient_id``, ``label`` (when the manifest has one), ``mask_source``,
  ``mask_area_px``, ``mask_uncertainty`` (the segmenter's, for predicted masks; NaN for given),
  then ``radiomics_*`` and ``deep_<backbone>_<i>`` columns, in manifest order.
  The Parquet file's metadata key ``usher2`` holds the provenance (below).
* ``FEATURES.provenance.json``: the same provenance as a sidecar: usher2/pyradiomics/timm/torch
  versions, the radiomics parameters, each backbone's weights hash, the enhancer, segmenter,
  mask and overlay handling, the manifest's SHA-256, and per case the SHA-256 of its image and
  mask files.
* ``FEATURES.failures.csv``: ``case_id``, ``stage``, ``error``, one line per case that produced no row
  (stage ``features``; stage ``no_lesion`` when the segmenter found no lesion,
  :class:`~usher2.io.errors.NoLesion`) or per perturbation that could not be computed (stage
  ``perturbation:<name>``, e.g. a 1-pixel mask cannot be eroded). Written on every run, header
  only when nothing failed. A failed case never becomes a NaN row.
* ``FEATURES.perturbations.parquet`` (``perturb=True``): the long table ``case_id``,
  ``perturbation``, features, read by the fusion core's ICC filter; the perturbations
  (``original``, erosions, dilations, rotations, shifts, the enhancer and mask toggles, and the
  ``contour-<k>`` redraws) are described in :mod:`usher2.features.perturb`.

**Execution.** In-process by default; with ``workers=N`` a local ``dask.distributed`` cluster of
N single-threaded worker processes; with ``scheduler="tcp://HOST:PORT"`` an existing Dask
cluster (its workers need usher2 installed and read access to the images). Work is sent in
chunks of ``chunk_size`` cases; the driver writes every finished chunk. The three give the
same table, bit for bit: on the CPU every chunk runs its networks on one torch thread (a
float sum's order depends on the thread count), so scale a CPU run out with ``workers``.
Inside a Dask worker the ITK filters (LoG, resampling) also run on one thread, so that N
workers use N cores; in-process they use every core (their results do not depend on it).

**Resume.** Finished chunks are kept under ``FEATURES.parts/<settings digest>/`` (written
atomically). A re-run with the same settings reuses every finished case whose image and mask
files are unchanged (by SHA-256) and computes only the rest, so a killed run picks up where it
stopped, and cases added to a manifest are the only ones computed. Failed cases are tried
again. Other settings use another parts folder, so results of two settings never mix.

* :func:`extract_cohort`: the run; :class:`ExtractResult`: what it produced;
* :func:`read_feature_table`: a written table and its provenance;
* :func:`run_extraction`, :func:`collect_parts`, :func:`write_extraction`: the resumable run, the
  finished parts and the atomic writes, shared with the MRI extraction
  (:mod:`usher2.mri.features`); :func:`manifest_cases`: a manifest's cases with their files' hashes.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.features.config import CASE_STAGES, FAILURE_COLUMNS, ID_COLUMNS, ExtractConfig
from usher2.features.extract import extract_chunk
from usher2.features.models import deep_extractor as _deep
from usher2.features.models import enhancer as _enhancer
from usher2.features.models import radiomics_extractor as _radiomics
from usher2.features.models import segmenter as _segmenter
from usher2.io.atomic import atomic_path, atomic_write_text
from usher2.io.errors import InputError
from usher2.io.hashing import file_sha256
from usher2.io.parts import (
    ChunkResults,
    dask_results,
    finished_parts,
    latest_failures,
    parts_folder,
    run_parts,
    write_parquet,
)

__all__ = [
    "ExtractResult",
    "collect_parts",
    "extract_cohort",
    "manifest_cases",
    "read_feature_table",
    "run_extraction",
    "write_extraction",
]

_Chunks = list[list[dict[str, Any]]]  # a cohort's pending cases, cut into chunks


@dataclass
class ExtractResult:
    """What a cohort extraction produced.

    Attributes:
        table: The feature table (as written to ``out``).
        failures: ``case_id``, ``stage``, ``error`` rows (as written to the failures CSV).
        perturbations: The long perturbation table, or None.
        n_cases: Cases in the manifest.
        computed: Cases computed by this run (the rest were reused from an earlier run).
        paths: Output files by kind (``table``, ``provenance``, ``failures``, ``perturbations``).
    """

    table: pd.DataFrame
    failures: pd.DataFrame
    perturbations: pd.DataFrame | None
    n_cases: int
    computed: int
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def failed_cases(self) -> list[str]:
        return sorted(set(self.failures.loc[self.failures["stage"].isin(CASE_STAGES), "case_id"]))


def read_feature_table(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A feature table and its provenance (from the Parquet metadata).

    Raises:
        InputError: Missing file, not Parquet, or no usher2 provenance in it.
    """
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "a feature table (.parquet) from usher2 extract", "no such file")
    try:
        table = pq.read_table(p)
    except Exception as exc:  # pyarrow raises ArrowInvalid and OSError variants
        raise InputError(p, "a Parquet feature table", f"an unreadable file ({type(exc).__name__}: {exc})") from exc
    meta = (table.schema.metadata or {}).get(b"usher2")
    if meta is None:
        raise InputError(p, "a feature table written by usher2 extract (provenance metadata)", "none")
    return table.to_pandas(), json.loads(meta)


def _sha256(path: str | None) -> str:
    return file_sha256(path) if path else ""


def manifest_cases(manifest: str | Path | pd.DataFrame) -> tuple[list[dict[str, Any]], str]:
    """A manifest's cases (rows with ``image_sha256`` and ``mask_sha256`` of their files; "" for an
    unreadable one) and the manifest's SHA-256 (of its file, or of a DataFrame's values)."""
    from usher2.io.manifest import read_manifest

    if isinstance(manifest, pd.DataFrame):
        df, digest = manifest, hashlib.sha256(pd.util.hash_pandas_object(manifest.astype(str)).values).hexdigest()
    else:
        df, digest = read_manifest(manifest, check_files=False), _sha256(str(manifest))
    cases = []
    for row in df.to_dict("records"):
        row = {k: (None if np.ndim(v) == 0 and pd.isna(v) else v) for k, v in row.items()}
        row["case_id"], row["patient_id"] = str(row["case_id"]), str(row.get("patient_id") or row["case_id"])
        label = row.get("label")
        row["label"] = None if label is None else int(label)
        try:
            row["image_sha256"] = _sha256(row.get("image_path"))
        except OSError:
            row["image_sha256"] = ""  # the chunk reports the unreadable file
        try:
            row["mask_sha256"] = _sha256(row.get("mask_path"))
        except OSError:
            row["mask_sha256"] = ""
        cases.append(row)
    return cases, digest


def _provenance(cfg: ExtractConfig, cases: list[dict[str, Any]], manifest_sha: str) -> dict[str, Any]:
    import usher2

    prov: dict[str, Any] = {
        "usher2": usher2.__version__,
        "settings": cfg.to_dict(),
        "settings_sha256": cfg.digest(),
        "manifest_sha256": manifest_sha,
        "overlay_handling": cfg.overlays,
        "mask_source": cfg.masks,
        "enhancer": cfg.enhancer or "none",
        "inputs": [{k: c[k] for k in ("case_id", "image_sha256", "mask_sha256")} for c in cases],
    }
    if cfg.radiomics:
        prov["radiomics"] = _radiomics(cfg).provenance()
    prov["deep"] = [_deep(cfg, spec).provenance() for spec in cfg.backbones]
    toggles = cfg.perturbation_names() if cfg.perturb else ()
    if cfg.masks == "predicted" or "mask" in toggles:
        prov["segmenter"] = _network_settings(_segmenter(cfg.segmenter))
    for name in {cfg.enhancer, "pix2pix" if "enhancer" in toggles and not cfg.enhancer else None} - {None}:
        prov.setdefault("enhancers", {})[name] = _network_settings(_enhancer(name))
    return prov


def _network_settings(model: Any) -> dict[str, Any]:
    """A stage's settings plus the full SHA-256 of its weights file (when it has one)."""
    out = dict(model.settings())
    weights = getattr(model, "weights", None)
    if weights is not None and Path(weights).is_file():
        out["weights_file_sha256"] = file_sha256(weights)
    return out


def extract_cohort(
    manifest: str | Path | pd.DataFrame,
    out: str | Path,
    config: ExtractConfig | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> ExtractResult:
    """Extract the feature table of a cohort (see the module docstring for outputs, Dask and resume).

    Args:
        manifest: A manifest file, or a DataFrame as :func:`~usher2.io.manifest.read_manifest` returns.
        out: The feature table to write (``.parquet``).
        config: What to extract; None: :class:`ExtractConfig` defaults.
        workers: Start a local Dask cluster with this many worker processes.
        scheduler: Address of an existing Dask scheduler (wins over ``workers``).
        progress: ``progress(cases_done, n_cases)`` after every chunk.
        log: Receives one line per event.

    Raises:
        InputError: A bad manifest, settings or scheduler address. Bad cases do not raise.
    """
    cfg = config or ExtractConfig()
    compute = functools.partial(extract_chunk, cfg)
    return run_extraction(
        cfg,
        manifest,
        out,
        lambda: manifest_cases(manifest),
        compute,
        lambda chunks, say: dask_results(compute, chunks, workers, scheduler, say),
        functools.partial(_assemble, cfg),
        progress=progress,
        log=log,
    )


def run_extraction(
    cfg: Any,
    manifest: object,
    out: str | Path,
    read_cases: Callable[[], tuple[list[dict[str, Any]], str]],
    compute: Callable[[list[dict[str, Any]]], dict[str, Any]],
    executor: Callable[[_Chunks, Callable[[str], None]], AbstractContextManager[ChunkResults | None]],
    assemble: Callable[[list[dict[str, Any]], str, Path, Path, int], ExtractResult],
    *,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> ExtractResult:
    """The resumable cohort extraction every modality shares: check ``out``, read the cases, compute
    those not yet in the part store (:func:`~usher2.io.parts.run_parts`), assemble the table.

    Args:
        cfg: The extraction settings (``digest()``, ``to_dict()`` and ``chunk_size``).
        manifest: What the cases were read from (named in the error when it holds none).
        out: The feature table to write (``.parquet``); checked before the manifest is read.
        read_cases: ``read_cases()``: the cases and the manifest's SHA-256.
        compute: ``compute(chunk)``: one chunk's result, in this process.
        executor: ``executor(chunks, log)``: the chunks' results computed elsewhere (see
            :func:`~usher2.io.parts.run_parts`), or None to compute them here.
        assemble: ``assemble(cases, manifest_sha, parts, out, computed)``: writes the table.
        progress: ``progress(cases_done, n_cases)`` after every chunk.
        log: Receives one line per event.

    Raises:
        InputError: ``out`` does not end in ``.parquet``, or the manifest holds no case.
    """
    out = Path(out)
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise InputError(out, "an output path ending in .parquet", repr(out.suffix or out.name))
    say = log or (lambda _msg: None)
    cases, manifest_sha = read_cases()
    if not cases:
        raise InputError(str(manifest), "a manifest with at least one case", "no rows")
    parts = parts_folder(out, cfg.digest(), cfg.to_dict())
    computed = run_parts(
        cases, parts, cfg.chunk_size, compute, executor=lambda chunks: executor(chunks, say), progress=progress, log=say
    )
    return assemble(cases, manifest_sha, parts, out, computed)


def _assemble(
    cfg: ExtractConfig, cases: list[dict[str, Any]], manifest_sha: str, parts: Path, out: Path, computed: int
) -> ExtractResult:
    frames, pframes, failures, order = collect_parts(parts, cases)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ID_COLUMNS)
    table = table.sort_values("case_id", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    if all(c.get("label") is None for c in cases):
        table = table.drop(columns=["label"])
    prov = _provenance(cfg, cases, manifest_sha)
    return write_extraction(out, table, failures, pframes if cfg.perturb else None, prov, order, computed)


def collect_parts(
    parts: Path, cases: Sequence[dict[str, Any]]
) -> tuple[list[pd.DataFrame], list[pd.DataFrame], list[dict[str, Any]], dict[str, int]]:
    """The finished parts of a resumable extraction: feature frames, perturbation frames, failures
    (the latest attempt of a case still failing included) and each case's manifest position."""
    done = finished_parts(parts)
    wanted = {(c["case_id"], c["image_sha256"], c["mask_sha256"]) for c in cases}
    order = {c["case_id"]: i for i, c in enumerate(cases)}
    by_part: dict[str, set[str]] = {}
    for key, (name, _) in done.items():
        if key in wanted:
            by_part.setdefault(name, set()).add(key[0])
    frames, pframes, failures = [], [], []
    for name in sorted(by_part):
        index = json.loads((parts / f"{name}.json").read_text())
        keep = by_part[name]
        if index["rows"]:
            df = pd.read_parquet(parts / f"{name}.rows.parquet")
            frames.append(df[df["case_id"].isin(keep)])
        if index["perturbations"]:
            df = pd.read_parquet(parts / f"{name}.perturb.parquet")
            pframes.append(df[df["case_id"].isin(keep)])
        failures += [f for f in index["failures"] if f["case_id"] in keep]
    # the latest attempt of a case that failed (it is not in `done`, so read its newest part)
    failed_now = [c for c in cases if (c["case_id"], c["image_sha256"], c["mask_sha256"]) not in done]
    failures += latest_failures(parts, failed_now)
    return frames, pframes, failures, order


def write_extraction(
    out: Path,
    table: pd.DataFrame,
    failures: list[dict[str, Any]],
    pframes: list[pd.DataFrame] | None,
    prov: dict[str, Any],
    order: dict[str, int],
    computed: int,
) -> ExtractResult:
    """Write a cohort extraction atomically: the table, its provenance, failures and (unless
    ``pframes`` is None) the perturbation table, all beside ``out``."""
    fail_df = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
    fail_df = fail_df.sort_values(["case_id", "stage"], key=lambda s: s.map(order) if s.name == "case_id" else s)
    fail_df = fail_df.reset_index(drop=True)
    prov["n_cases"], prov["n_rows"], prov["n_failed"] = (
        len(order),
        len(table),
        int(fail_df["stage"].isin(CASE_STAGES).sum()),
    )
    paths = {
        "table": out,
        "provenance": out.with_name(out.stem + ".provenance.json"),
        "failures": out.with_name(out.stem + ".failures.csv"),
    }
    write_parquet(out, table, prov)
    atomic_write_text(paths["provenance"], json.dumps(prov, indent=2, default=str))
    with atomic_path(paths["failures"]) as tmp:
        fail_df.to_csv(tmp, index=False)
    perturbations = None
    if pframes is not None:
        perturbations = (
            pd.concat(pframes, ignore_index=True) if pframes else pd.DataFrame(columns=["case_id", "perturbation"])
        )
        perturbations = perturbations.sort_values(
            ["case_id", "perturbation"], key=lambda s: s.map(order) if s.name == "case_id" else s, kind="stable"
        ).reset_index(drop=True)
        paths["perturbations"] = out.with_name(out.stem + ".perturbations.parquet")
        write_parquet(paths["perturbations"], perturbations, {**prov, "table": "perturbations"})
    return ExtractResult(table, fail_df, perturbations, len(order), computed, paths)
