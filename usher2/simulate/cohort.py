"""Write a simulated cohort to disk: PNGs, manifest and the settings that made them.

Layout under ``out``::

    images/<case_id>.png   degraded frame (8-bit grey) — the manifest ``image``
    masks/<case_id>.png    lesion mask, 0/255
    clean/<case_id>.png    high-quality frame of the same scatterers
    manifest.csv           one row per frame (paths relative to the manifest)
    simulation.json        seed, n and the full SimulationConfig
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from usher2 import __version__
from usher2.io.atomic import atomic_path, atomic_write_text
from usher2.io.errors import InputError
from usher2.io.manifest import write_manifest
from usher2.simulate.anatomy import LesionTraits
from usher2.simulate.config import SimulationConfig
from usher2.simulate.labels import CLINICAL_VARIABLES, simulate_labels
from usher2.simulate.render import render_frame

__all__ = ["case_ids", "simulate_cohort"]

_DIRS = {"image": "images", "mask": "masks", "clean": "clean"}


def case_ids(patient: int, frame: int) -> tuple[str, str]:
    """``(case_id, patient_id)`` of a frame, e.g. ``("sim_000042_f0", "sim_000042")``."""
    pid = f"sim_{patient:06d}"
    return f"{pid}_f{frame}", pid


def _paths(out: Path, case_id: str) -> dict[str, Path]:
    return {key: out / d / f"{case_id}.png" for key, d in _DIRS.items()}


def _write_png(path: Path, img: np.ndarray, level: int) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), img, [cv2.IMWRITE_PNG_COMPRESSION, level]):
            raise OSError(f"could not write PNG {path} (OpenCV imwrite returned False)")


def _render_case(job: tuple[int, int, int, dict[str, Any], SimulationConfig, str]) -> int:
    seed, patient, frame, row, config, out = job
    frame_img = render_frame(LesionTraits.from_row(row), seed, patient, frame, config)
    paths = _paths(Path(out), case_ids(patient, frame)[0])
    _write_png(paths["image"], frame_img.image, config.png_compression)
    _write_png(paths["clean"], frame_img.clean, config.png_compression)
    _write_png(paths["mask"], frame_img.mask, config.png_compression)
    return patient * config.frames_per_patient + frame


def _worker_init() -> None:
    # One thread per process: the pool already fills the cores, and nested threads only contend.
    cv2.setNumThreads(1)


def _check_or_write_meta(out: Path, n: int, seed: int, config: SimulationConfig) -> None:
    meta_path = out / "simulation.json"
    cfg = json.loads(json.dumps(config.to_dict()))
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(
                meta_path,
                "a simulation.json written by usher2 simulate",
                f"unreadable ({exc})",
                "delete the directory or choose another --out",
            ) from exc
        if old.get("seed") != seed:
            raise InputError(
                meta_path,
                f"seed {seed} to resume this cohort",
                f"seed {old.get('seed')}",
                "use the same seed or another output directory",
            )
        if old.get("config") != cfg:
            diff = sorted(
                k for k in set(cfg) | set(old.get("config") or {}) if cfg.get(k) != (old.get("config") or {}).get(k)
            )
            raise InputError(
                meta_path,
                "the same SimulationConfig to resume this cohort",
                f"different settings: {', '.join(diff)}",
                "use the same settings or another output directory",
            )
    meta = {"generator": "usher2.simulate", "usher2_version": __version__, "seed": seed, "n": n, "config": cfg}
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")


def _manifest(labels: pd.DataFrame, config: SimulationConfig) -> pd.DataFrame:
    fpp = config.frames_per_patient
    rep = labels.loc[labels.index.repeat(fpp)].reset_index(drop=True)
    patients = np.repeat(np.arange(len(labels)), fpp)
    frames = np.tile(np.arange(fpp), len(labels))
    ids = [case_ids(int(p), int(f)) for p, f in zip(patients, frames, strict=True)]
    df = pd.DataFrame(
        {
            "case_id": [c for c, _ in ids],
            "patient_id": [p for _, p in ids],
            "image": [f"{_DIRS['image']}/{c}.png" for c, _ in ids],
            "mask": [f"{_DIRS['mask']}/{c}.png" for c, _ in ids],
            "clean": [f"{_DIRS['clean']}/{c}.png" for c, _ in ids],
            "label": rep["label"].to_numpy(),
            "true_prob": rep["true_prob"].to_numpy(),
            "spacing_mm": config.spacing_mm,
            "frame": frames,
        }
    )
    traits = [c for c in rep.columns if c.startswith("trait_")]
    return pd.concat([df, rep[[*CLINICAL_VARIABLES, *traits]]], axis=1)


def simulate_cohort(
    n: int,
    seed: int,
    out: Path,
    config: SimulationConfig | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Simulate ``n`` patients (``n * frames_per_patient`` frames) into ``out`` and return the manifest.

    Each frame's randomness comes from ``SeedSequence([seed, stream, patient, frame])``, so files are
    byte-identical whatever ``workers`` and the order. A frame whose three PNGs exist is complete
    (they are written atomically) and is skipped, so a killed run resumes where it stopped; the
    manifest is written last. Resuming needs the same seed and config (``n`` may differ: patient
    ``i`` does not depend on ``n``).

    Args:
        n: Number of patients (>= 1).
        seed: Cohort seed (>= 0).
        out: Output directory (created).
        config: Settings; the defaults (256 × 256 px over 40 × 40 mm) when None.
        workers: Processes; ``min(2, os.cpu_count())`` when None; 1 renders in this process.
        progress: Called as ``progress(done, total)`` as frames finish (skipped ones count as done).

    Returns:
        The manifest (also in ``out/manifest.csv``): ``case_id``, ``patient_id``, ``image``, ``mask``,
        ``clean``, ``label``, ``true_prob``, ``spacing_mm``, ``frame``, the clinical columns and the
        ``trait_*`` columns.

    Raises:
        InputError: ``out`` holds a cohort made with another seed or config.

    Example:
        >>> import tempfile
        >>> cfg = SimulationConfig(image_size=(64, 64), fov_mm=(40.0, 40.0))
        >>> df = simulate_cohort(2, seed=0, out=Path(tempfile.mkdtemp()), config=cfg, workers=1)
        >>> list(df.case_id)
        ['sim_000000_f0', 'sim_000001_f0']
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer (patients), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n, seed = int(n), int(seed)
    config = config or SimulationConfig()
    if not isinstance(config, SimulationConfig):
        raise TypeError(f"config must be a SimulationConfig or None, got {type(config).__name__}")
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_or_write_meta(out, n, seed, config)
    for d in _DIRS.values():
        (out / d).mkdir(exist_ok=True)
        for stale in (out / d).glob(".*.tmp.png"):  # left by a killed run; never a finished file
            stale.unlink(missing_ok=True)

    labels = simulate_labels(n, seed, config.label_model)
    manifest = _manifest(labels, config)
    total = len(manifest)
    records = labels.to_dict(orient="records")
    fpp = config.frames_per_patient
    jobs = []
    for i, case_id in enumerate(manifest["case_id"]):
        if all(p.exists() for p in _paths(out, case_id).values()):
            continue
        p, f = divmod(i, fpp)
        jobs.append((seed, p, f, records[p], config, str(out)))
    done = total - len(jobs)
    if progress is not None and done:
        progress(done, total)

    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            _render_case(job)
            done += 1
            if progress is not None:
                progress(done, total)
    else:
        # Not "fork": a parent that already ran OpenCV or FFT threads can hand a child a held lock.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
            # A bounded number in flight keeps memory flat for large n.
            pending: set = set()
            it = iter(jobs)
            for job in it:
                pending.add(pool.submit(_render_case, job))
                if len(pending) >= 4 * workers:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        fut.result()
                        done += 1
                        if progress is not None:
                            progress(done, total)
            for fut in pending:
                fut.result()
                done += 1
                if progress is not None:
                    progress(done, total)

    write_manifest(manifest, out / "manifest.csv")
    # How much of this call was rendering, so callers can report a true rate on a resumed run.
    manifest.attrs["rendered"] = len(jobs)
    manifest.attrs["reused"] = total - len(jobs)
    return manifest
