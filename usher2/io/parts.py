"""The part store of a resumable cohort run: finished chunks kept on disk, found again after a kill.

A chunk of cases is written as ``NAME.rows.parquet`` (its rows), ``NAME.perturb.parquet`` (its
perturbation rows, if any) and ``NAME.json`` (its index: the cases with the SHA-256 of their image
and mask files, and their failures), the index last and every file atomically, so a part whose
index exists is complete. ``NAME`` is a digest of the chunk's cases and file hashes
(:func:`part_name`). A re-run reads :func:`finished_parts` and computes only the cases not in
them (failed cases are tried again); :func:`run_parts` is that loop, and :func:`parts_folder`
gives a table's store. Used by the ultrasound extraction
(:func:`usher2.features.extract.extract_cohort`) and the MRI extraction
(:func:`usher2.mri.features.extract_mri_cohort`) and the scores table
(:func:`usher2.score.table.score_inputs`); :func:`dask_results` computes their chunks on Dask
workers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pandas as pd

from usher2.io.atomic import atomic_path, atomic_write_text
from usher2.io.errors import InputError

__all__ = [
    "ChunkResults",
    "dask_client",
    "dask_results",
    "finished_parts",
    "latest_failures",
    "part_name",
    "parts_folder",
    "run_parts",
    "write_parquet",
    "write_part",
]

ChunkResults = Iterable[tuple[list[dict[str, Any]], dict[str, Any]]]
"""``(chunk, result)`` pairs, in the order the chunks finish (see :func:`run_parts`)."""


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


def parts_folder(out: Path, digest: str, settings: dict[str, Any]) -> Path:
    """The part store of the table ``out`` for one set of settings, created.

    Args:
        out: The table the parts are for (``NAME.parquet``).
        digest: The digest of the settings that change its values (the folder is named after its
            first 16 characters, so results of two settings never mix).
        settings: All the settings, written to ``NAME.parts/settings.json``.

    Returns:
        ``NAME.parts/<digest[:16]>/``.
    """
    parts = out.with_name(out.stem + ".parts") / digest[:16]
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_text(parts.parent / "settings.json", json.dumps(settings, indent=2, default=str))
    return parts


def run_parts(
    cases: Sequence[dict[str, Any]],
    folder: Path,
    chunk_size: int,
    compute: Callable[[list[dict[str, Any]]], dict[str, Any]],
    *,
    executor: Callable[[list[list[dict[str, Any]]]], AbstractContextManager[ChunkResults | None]] | None = None,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> int:
    """Compute the cases not yet in the part store ``folder``, chunk by chunk, writing every chunk as a part.

    The cases of a finished part (same case id, image and mask hashes: :func:`finished_parts`) are
    skipped; the others are cut, in their order, into chunks of ``chunk_size`` cases, and each
    chunk's result is written (:func:`write_part`) as soon as it is there.

    Args:
        cases: The cohort's cases (``case_id``, ``image_sha256``, ``mask_sha256`` and whatever
            ``compute`` reads).
        folder: The part store (:func:`parts_folder`).
        chunk_size: Cases per chunk.
        compute: ``compute(chunk)``: one chunk's result (``rows``, ``perturbations``, ``failures``).
        executor: ``executor(chunks)``: a context manager giving the chunks' results computed
            elsewhere (workers), as ``(chunk, result)`` pairs in the order they finish, or None to
            compute them here with ``compute``, in order. It is entered after the first progress
            call and left (workers shut down) when every part is written or something raised.
        progress: ``progress(cases_done, n_cases)``: once with the reused cases, then after every chunk.
        log: Receives one line per event.

    Returns:
        The number of cases computed (those not reused).
    """
    done = finished_parts(folder)
    pending = [c for c in cases if (c["case_id"], c["image_sha256"], c["mask_sha256"]) not in done]
    n_done = len(cases) - len(pending)
    if n_done and log is not None:
        log(f"{n_done} of {len(cases)} cases reused from {folder}")
    chunks = [pending[i : i + chunk_size] for i in range(0, len(pending), chunk_size)]
    if progress:
        progress(n_done, len(cases))
    with executor(chunks) if executor is not None else nullcontext() as results:
        if results is None:  # computed here, in order
            results = ((chunk, compute(chunk)) for chunk in chunks)
        for chunk, result in results:
            write_part(folder, part_name(chunk), result, chunk)
            n_done += len(chunk)
            if progress:
                progress(n_done, len(cases))
    return len(pending)


def dask_client(workers: int | None, scheduler: str | None) -> tuple[Any, Any]:
    """A Dask client and the local cluster it owns: ``scheduler`` (an address) wins; else a local
    cluster of ``workers`` single-threaded worker processes; (None, None) with neither.

    Raises:
        InputError: The scheduler cannot be reached.
    """
    if scheduler:
        from distributed import Client

        try:
            return Client(scheduler), None  # waits dask's distributed.comm.timeouts.connect (30 s)
        except OSError as exc:
            raise InputError(
                "scheduler", "a reachable Dask scheduler (tcp://HOST:PORT)", f"{scheduler!r}: {exc}"
            ) from exc
    if workers:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=int(workers),
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=50,
        )
        return Client(cluster), cluster
    return None, None


@contextmanager
def dask_results(
    compute: Callable[[list[dict[str, Any]]], dict[str, Any]],
    chunks: list[list[dict[str, Any]]],
    workers: int | None,
    scheduler: str | None,
    say: Callable[[str], None],
) -> Iterator[ChunkResults | None]:
    """The chunks computed on Dask workers (``compute(chunk)``, picklable), as they finish: the
    ``executor`` of :func:`run_parts`. None (compute them in this process) without ``workers`` or
    ``scheduler``. The client (and a local cluster) are closed on leaving."""
    client, cluster = dask_client(workers, scheduler) if chunks else (None, None)
    try:
        if client is None:
            yield None
        else:
            from distributed import as_completed

            say(f"Dask: {len(client.scheduler_info()['workers'])} workers at {client.scheduler.address}")
            futures = {client.submit(compute, chunk, pure=False): chunk for chunk in chunks}
            yield ((futures[fut], fut.result()) for fut in as_completed(futures))
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
