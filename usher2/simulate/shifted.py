"""Evaluation sets with known truth, and the shifted scanners no network is trained on (issue 23).

A learned enhancer trained on one rendering setting (or on the family of
:data:`~usher2.simulate.randomise.TRAINING_RANGES`) must be judged on frames from a scanner it never
saw. :data:`SHIFTED_SETTINGS` holds two such virtual scanners, each outside the training ranges on
centre frequency, bandwidth, lateral beam width, depth of field, noise and dynamic range, with
compounding off:

================  ============  ============  ============================  ================
setting           low-f PW      high-f PW     training range                fixed degraded
================  ============  ============  ============================  ================
f0 (MHz)          3.0           11.0          4 – 9                         5.0
bandwidth         0.9           0.3           0.4 – 0.8                     0.5
lateral FWHM      1.5 mm        1.2 mm        0.35 – 1.0 mm                 0.85 mm
depth of field    400 mm        400 mm        8 – 20 mm                     9 mm
compounding       off           off           off, ±5°, ±8°                 off
noise             −32 dB        −78 dB        −70 … −38 dB                  −42 dB
clutter           0.7           0.0           0 – 0.5                       0.35
dynamic range     32 dB         72 dB         40 – 65 dB                    45 dB
gain error        ±8 dB         0             0 – 6 dB                      ±4 dB
TGC slope error   ±0.35         0             0 – 0.25                      ±0.15
================  ============  ============  ============================  ================

"PW" is plane-wave-like: an unfocused, wide beam whose lateral width barely changes with depth
(a depth of field of 400 mm over a 40 mm frame), so there is no focal zone. The clean rendering,
anatomy, lesions and physics (sound speed, attenuation) are the simulator defaults.

The truth of every frame is its reflectivity map (:attr:`RenderedFrame.reflectivity`), scored in
dB (:func:`echogenicity_db`) over the tissue below the skin line (:func:`below_skin`).
:func:`evaluation_set` renders (or reads back from a cache folder) ``n`` frames: frame ``i`` is
patient ``i`` of :func:`~usher2.simulate.simulate_labels` ``(n, seed)`` rendered with
``configs[i % len(configs)]``.

Example:
    >>> from usher2.simulate.randomise import TRAINING_RANGES
    >>> lo, hi = TRAINING_RANGES["f0_mhz"]
    >>> [not lo <= s.f0_mhz <= hi for s in SHIFTED_SETTINGS.values()]
    [True, True]
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from usher2.io.atomic import atomic_path, atomic_write_text
from usher2.simulate.anatomy import LesionTraits
from usher2.simulate.config import RenderSettings, SimulationConfig
from usher2.simulate.labels import simulate_labels
from usher2.simulate.render import render_frame

__all__ = [
    "SHIFTED_SEED",
    "SHIFTED_SETTINGS",
    "SKIN_MARGIN_MM",
    "TRUTH_FLOOR_DB",
    "EvalFrame",
    "below_skin",
    "echogenicity_db",
    "echogenicity_display",
    "evaluation_set",
    "shifted_configs",
]

#: Cohort seed of the shifted evaluation set; reserved for evaluation, never for training.
SHIFTED_SEED = 2300

#: The truth in dB is floored here (relative to glandular tissue): below it nothing is displayed.
TRUTH_FLOOR_DB = -60.0

#: Depth below the first tissue row that scoring skips: the skin line (≤ 0.45 mm thick) and the
#: blur of the gel/skin edge.
SKIN_MARGIN_MM = 1.0

#: The virtual scanners outside the training ranges, one column each, as in the module docstring's
#: table (the settings not listed keep their defaults).
_SHIFTED_NAMES = ("lowf_planewave", "highf_planewave")
_SHIFTED_COLUMNS: dict[str, tuple[Any, ...]] = {
    "f0_mhz": (3.0, 11.0),
    "bandwidth": (0.9, 0.3),
    "lateral_fwhm_mm": (1.5, 1.2),
    "focus_mm": (20.0, 20.0),
    "depth_of_field_mm": (400.0, 400.0),
    "compound_angles_deg": ((0.0,), (0.0,)),
    "noise_db": (-32.0, -78.0),
    "clutter": (0.7, 0.0),
    "dynamic_range_db": (32.0, 72.0),
    "gain_error_db": (8.0, 0.0),
    "tgc_error": (0.35, 0.0),
}

#: Virtual scanners outside the training ranges (see the module docstring).
SHIFTED_SETTINGS: dict[str, RenderSettings] = {
    name: RenderSettings(**{key: column[i] for key, column in _SHIFTED_COLUMNS.items()})
    for i, name in enumerate(_SHIFTED_NAMES)
}

_FORMAT = "usher2-evalset/1"  # bump when a stored frame would change meaning


def shifted_configs(image_size: int = 256) -> list[SimulationConfig]:
    """One :class:`SimulationConfig` per shifted scanner (degraded rendering = the shifted setting).

    Example:
        >>> [c.degraded.f0_mhz for c in shifted_configs(64)]
        [3.0, 11.0]
    """
    return [SimulationConfig(image_size=(image_size, image_size), degraded=s) for s in SHIFTED_SETTINGS.values()]


def echogenicity_db(reflectivity: np.ndarray, *, floor_db: float = TRUTH_FLOOR_DB) -> np.ndarray:
    """True echogenicity in dB relative to glandular tissue, ``20 log10(R)`` floored at ``floor_db``.

    The log-compressed display is affine in this quantity (until it clips), so it is the truth to
    correlate a display with; the floor keeps the gel (R = 0) finite.

    Example:
        >>> echogenicity_db(np.array([1.0, 0.1, 0.0])).tolist()
        [0.0, -20.0, -60.0]
    """
    r = np.asarray(reflectivity, dtype=np.float64)
    return (20.0 * np.log10(np.maximum(r, 10.0 ** (floor_db / 20.0)))).astype(np.float32)


def echogenicity_display(reflectivity: np.ndarray, dynamic_range_db: float = 60.0) -> np.ndarray:
    """The true echogenicity shown like a log-compressed frame: ``(H, W)`` float32 in [0, 1].

    The same display law as :func:`~usher2.simulate.speckle.log_compress` (white
    ``WHITE_HEADROOM_DB`` = 10 dB above glandular tissue, black ``dynamic_range_db`` below white)
    applied to :func:`echogenicity_db`: ``clip(1 + (echogenicity_db(R) - 10) / dynamic_range_db, 0, 1)``.
    With the clean rendering's 60 dB it is the clean frame without its speckle (gland at 5/6; the
    speckle's log-mean bias of about -1.5 dB is not added). An enhancer target, affine in the truth
    that the fidelity metric scores until it clips.

    Example:
        >>> [round(float(v), 4) for v in echogenicity_display(np.array([1.0, 10 ** (-2.5), 0.0]))]
        [0.8333, 0.0, 0.0]
    """
    from usher2.simulate.speckle import WHITE_HEADROOM_DB

    if not dynamic_range_db > 0:
        raise ValueError(f"dynamic_range_db must be > 0, got {dynamic_range_db}")
    db = echogenicity_db(reflectivity).astype(np.float64)
    return np.clip(1.0 + (db - WHITE_HEADROOM_DB) / dynamic_range_db, 0.0, 1.0).astype(np.float32)


def below_skin(reflectivity: np.ndarray, spacing_mm: float, *, margin_mm: float = SKIN_MARGIN_MM) -> np.ndarray:
    """``(H, W)`` bool: tissue more than ``margin_mm`` below the first tissue row of each column.

    The coupling gel above the skin holds no scatterers (reflectivity 0), so the first non-zero row
    of a column is the top of the skin line.

    Example:
        >>> r = np.zeros((6, 2), np.float32); r[2:] = 1.0
        >>> below_skin(r, 0.5, margin_mm=1.0)[:, 0].tolist()
        [False, False, False, False, True, True]
    """
    r = np.asarray(reflectivity)
    if r.ndim != 2:
        raise ValueError(f"reflectivity must be (H, W), got shape {r.shape}")
    tissue = np.maximum.accumulate(r > 0, axis=0)
    skip = math.ceil(margin_mm / spacing_mm - 1e-9)
    if skip == 0:
        return tissue
    out = np.zeros_like(tissue)
    out[skip:] = tissue[:-skip]
    return out


@dataclass(frozen=True)
class EvalFrame:
    """One frame of an evaluation set, with its truth.

    Attributes:
        case_id: ``sim_<patient>_f0``.
        patient_id: ``sim_<patient>``.
        setting: Index into the set's configs.
        image: ``(H, W)`` uint8 degraded frame (the enhancer input).
        clean: ``(H, W)`` uint8 clean rendering of the same scatterers.
        mask: ``(H, W)`` bool lesion mask.
        reflectivity: ``(H, W)`` float32 true echogenicity map (linear, gland = 1).
        spacing_mm: Pixel size (mm).
    """

    case_id: str
    patient_id: str
    setting: int
    image: np.ndarray
    clean: np.ndarray
    mask: np.ndarray
    reflectivity: np.ndarray
    spacing_mm: float

    @property
    def truth_db(self) -> np.ndarray:
        """``(H, W)`` float32 :func:`echogenicity_db` of the reflectivity."""
        return echogenicity_db(self.reflectivity)

    @property
    def below_skin(self) -> np.ndarray:
        """``(H, W)`` bool :func:`below_skin` region scored by the fidelity metric."""
        return below_skin(self.reflectivity, self.spacing_mm)


def _set_key(seed: int, configs: Sequence[SimulationConfig]) -> str:
    blob = json.dumps({"format": _FORMAT, "seed": seed, "configs": [c.to_dict() for c in configs]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _render(i: int, traits: LesionTraits, seed: int, configs: Sequence[SimulationConfig]) -> EvalFrame:
    k = i % len(configs)
    f = render_frame(traits, seed, i, 0, configs[k])
    assert f.reflectivity is not None
    return EvalFrame(
        case_id=f"sim_{i:06d}_f0",
        patient_id=f"sim_{i:06d}",
        setting=k,
        image=f.image,
        clean=f.clean,
        mask=f.mask > 0,
        reflectivity=f.reflectivity,
        spacing_mm=f.spacing_mm,
    )


def _save(path: Path, fr: EvalFrame) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(
            fh,
            image=fr.image,
            clean=fr.clean,
            mask=fr.mask,
            reflectivity=fr.reflectivity,
            meta=np.array(json.dumps({"setting": fr.setting, "spacing_mm": fr.spacing_mm})),
        )


def _load(path: Path, i: int) -> EvalFrame:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return EvalFrame(
            case_id=f"sim_{i:06d}_f0",
            patient_id=f"sim_{i:06d}",
            setting=int(meta["setting"]),
            image=z["image"],
            clean=z["clean"],
            mask=z["mask"],
            reflectivity=z["reflectivity"],
            spacing_mm=float(meta["spacing_mm"]),
        )


def evaluation_set(
    n: int,
    seed: int,
    configs: Sequence[SimulationConfig],
    *,
    cache: str | Path | None = None,
    name: str = "set",
) -> list[EvalFrame]:
    """Render ``n`` frames with known truth, or read them back from ``cache``.

    Frame ``i`` is patient ``i`` of ``simulate_labels(n, seed)`` rendered (frame 0) with
    ``configs[i % len(configs)]``; the first ``k`` frames do not depend on ``n``. With ``cache``,
    frames live in ``cache/<name>-seed<seed>-<key>/frame_<i>.npz`` (``key`` hashes the seed and
    every config), written atomically, so a larger ``n`` renders only the missing frames.

    Args:
        n: Number of frames (>= 1).
        seed: Cohort seed (patients, anatomy, scatterers, noise).
        configs: Acquisition settings, cycled over the frames.
        cache: Optional folder to keep the frames in (e.g. ``runs/shifted_set``).
        name: Prefix of the set's folder in ``cache``.

    Returns:
        The frames, in order.

    Example:
        >>> fs = evaluation_set(2, SHIFTED_SEED, shifted_configs(64))
        >>> [f.setting for f in fs], fs[0].image.dtype.name, fs[0].truth_db.shape
        ([0, 1], 'uint8', (64, 64))
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not configs:
        raise ValueError("configs is empty; pass at least one SimulationConfig")
    labels = simulate_labels(int(n), int(seed))
    folder = None
    if cache is not None:
        folder = Path(cache) / f"{name}-seed{seed}-{_set_key(int(seed), configs)}"
        folder.mkdir(parents=True, exist_ok=True)
        info = folder / "set.json"
        if not info.exists():
            meta = {"format": _FORMAT, "seed": int(seed), "configs": [c.to_dict() for c in configs]}
            atomic_write_text(info, json.dumps(meta, indent=2) + "\n")
    frames = []
    for i in range(int(n)):
        path = None if folder is None else folder / f"frame_{i:05d}.npz"
        if path is not None and path.exists():
            frames.append(_load(path, i))
            continue
        fr = _render(i, LesionTraits.from_row(labels.iloc[i].to_dict()), int(seed), configs)
        if path is not None:
            _save(path, fr)
        frames.append(fr)
    return frames
