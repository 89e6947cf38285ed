"""In-memory scoring of frames with a bundle: the core of ``usher2 score DIR`` and of the service.

:class:`FrameScorer` loads a bundle once (its fusion model, and the enhancer, segmenter, radiomics
extractor and backbones its extraction settings name) and scores frames held in memory:

1. the bundle's enhancer (if any), then the segmenter's mask and its uncertainty;
2. the features the model can read: :func:`~usher2.fusion.needed.needed_columns` walks the
   fitted model (selection steps, zero coefficients, unused tree features) and only those
   columns are computed (:func:`~usher2.features.extract.frame_features` with ``columns``: the
   pyradiomics image types, classes and features they name, the regions, lexicon and backbones
   they use; see :attr:`FrameScorer.groups`), with the torch radiomics backend by default
   (:mod:`usher2.features.torchrad`, batched). The model reads only those columns, through its
   compiled form (:attr:`~usher2.fusion.bundle.Bundle.compiled`: plain NumPy, equal to its
   ``predict_proba``, ~0.1 ms a frame). The computed values are those of ``usher2 extract`` (to
   float tolerance with the torch backend);
3. the probability, the label at the bundle's threshold, and the flags (``no_lesion``,
   ``low_segmentation_confidence``, ``clinical_missing``, ``clinical_out_of_range``): the same
   clinical check (:func:`~usher2.fusion.clinical.check_clinical`, before any network runs) and
   the same model call (:meth:`Bundle.predict_proba <usher2.fusion.bundle.Bundle.predict_proba>`)
   as :func:`score_table`, the step every door runs from a feature table (``Pipeline.evaluate``
   and the MRI recipes), without building a table (the step costs ~0.1 ms a frame);
4. optionally a Grad-CAM heat map of the deep backbone's ROI crop, pasted into the frame
   (:func:`~usher2.explain.frame.explain_frame`). When the model is linear in that backbone's
   features the map shows the evidence for the *predicted* class: its target is the model's own
   logit restricted to those features (:class:`~usher2.explain.targets.LinearTarget` from the
   model's linear form) for a frame labelled 1, and its negative for a frame labelled 0
   (Grad-CAM keeps positive evidence only, so one sign alone leaves the other class's frames
   blank). Otherwise the target is the sum of the pooled features (``heatmap_target`` says which).

**Batches.** Frames of the same shape go through the enhancer, the segmenter and the backbone
together, :data:`BATCH` at a time (:data:`GPU_BATCH` on CUDA). While one such step's features
are extracted (pyradiomics runs on one core), the networks already run on the next step's
frames in the calling thread, so a call with many frames keeps two cores busy. On the CPU a
network's float32 output for a frame can differ in the last bits with the batch it is in: the
folder output scores each input's frames together, the table output (``--out SCORES.csv``) a
chunk's frames, so the two agree to about 1e-7 in probability (measured on the golden frames:
1.5e-8) rather than bit for bit.

**Given masks.** ``score(..., masks=[...])`` skips the segmenter for frames with a mask (the table
output's ``--masks given``); their uncertainty is NaN.

A frame that cannot be scored (no lesion found, a radiomics failure) gives a :class:`FrameScore`
with ``error`` set and ``probability`` None; it never raises, so one bad frame of a video does
not stop the rest.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.explain.targets import model_target
from usher2.features.extract import ExtractConfig, frame_features
from usher2.features.models import (
    deep_extractor,
    enhancer,
    on_cpu,
    segmenter,
    torch_threads,
    with_segmenter_weights,
)
from usher2.features.models import (
    radiomics_backend as radiomics_backend_of,
)
from usher2.fusion.bundle import Bundle, BundleConfig, load_bundle
from usher2.fusion.clinical import check_clinical
from usher2.fusion.confidence import LOW_CONFIDENCE, confidence_threshold
from usher2.fusion.needed import find_needed
from usher2.io.errors import InputError, NoLesion
from usher2.io.hashing import file_sha256
from usher2.io.overlay import detect_overlays, inpaint_overlays
from usher2.types import Frame

__all__ = ["BATCH", "GPU_BATCH", "FrameScore", "FrameScorer", "bundle_extract_config", "score_table"]

#: Frames of one shape that go through the networks together: one step of the two-stage
#: pipeline (networks | features). 32 frames at 256 px on 2 CPU cores (bench bundle, heat maps
#: off, malloc keeping freed memory, three interleaved pairs): 24.0-24.9 frames/s in steps of 4,
#: 24.1-25.9 in steps of 8 (steps of 2: 17-19). With pyradiomics' slower features, steps of 4
#: had been best (12.5 vs 11.5 frames/s).
BATCH = 8
#: The step on CUDA, where the networks want large batches and nothing else runs on the device.
GPU_BATCH = 256
#: The shipped pix2pix enhancer on 256-px frames is fastest per frame at 1-4 frames a call on
#: the CPU (49 ms) and slower at 8 or more (75-100 ms: its full-resolution activations leave the
#: cache); on CUDA a call takes the whole batch.
ENHANCE_CPU_BATCH = 4
#: ROI crops per Grad-CAM pass (:meth:`FrameScorer._heatmaps`).
CAM_BATCH = 16
#: Worker threads extracting features while the networks run. pyradiomics holds the GIL for much
#: of its work: two threads extract about 1.4x as fast as one, and on 2 cores a second worker
#: gained nothing measurable against the networks it competes with.
FEATURE_THREADS = 1


@dataclass
class FrameScore:
    """The result for one frame.

    Attributes:
        probability: P(class 1), or None when the frame could not be scored.
        label: 1 when ``probability >= threshold``; None when not scored.
        threshold: The bundle's decision threshold.
        no_lesion: The segmenter found no lesion.
        low_segmentation_confidence: Mask uncertainty above the bundle's flag threshold
            (:func:`~usher2.fusion.confidence.confidence_threshold`).
        mask_uncertainty: The segmenter's mean binary entropy (NaN for a given mask).
        clinical_missing: Clinical values the model reads were missing (imputed by the model).
        clinical_out_of_range: A clinical value lay outside the bundle's training range (within
            :data:`~usher2.fusion.clinical.CLINICAL_MARGIN` of it; farther is an error).
        mask: ``(H, W)`` bool lesion mask, or None.
        heat: ``(H, W)`` float32 heat map in [0, 1] (0 outside the ROI box), or None.
        pixels: The frame as scored (after the enhancer), ``(H, W)`` float32 in [0, 1].
        features: The feature values computed for the model (the columns it can read, see
            :attr:`FrameScorer.groups`), or None when the frame was not scored.
        error: Why the frame was not scored, or None.
        seconds: Time per stage and frame (a batch's time divided by its frames): ``enhance``,
            ``segment``, ``prepare`` (both, with overlay handling), ``features``, ``model``, ``heatmap``.
    """

    probability: float | None
    label: int | None
    threshold: float
    no_lesion: bool = False
    low_segmentation_confidence: bool = False
    mask_uncertainty: float = float("nan")
    clinical_missing: bool = False
    clinical_out_of_range: bool = False
    mask: np.ndarray | None = None
    heat: np.ndarray | None = None
    pixels: np.ndarray | None = None
    features: dict[str, float] | None = None
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def flags(self) -> list[str]:
        """The names of the flags that are set.

        Example:
            >>> FrameScore(0.5, 1, 0.4, low_segmentation_confidence=True).flags()
            ['low_segmentation_confidence']
        """
        names = ("no_lesion", "low_segmentation_confidence", "clinical_missing", "clinical_out_of_range")
        return [n for n in names if getattr(self, n)]

    def record(self) -> dict[str, Any]:
        """The JSON-ready fields (no arrays)."""
        return {
            "probability": self.probability,
            "label": self.label,
            "threshold": self.threshold,
            "no_lesion": self.no_lesion,
            "low_segmentation_confidence": self.low_segmentation_confidence,
            "mask_uncertainty": None if not np.isfinite(self.mask_uncertainty) else round(self.mask_uncertainty, 6),
            "clinical_missing": self.clinical_missing,
            "clinical_out_of_range": self.clinical_out_of_range,
            "mask_area_px": None if self.mask is None else int(self.mask.sum()),
            "error": self.error,
        }


def bundle_extract_config(bundle_config: BundleConfig, masks: str) -> ExtractConfig:
    """The extraction settings a bundle was fitted with, for scoring with ``masks``
    (:meth:`~usher2.fusion.bundle_config.BundleConfig.extract_config`)."""
    return bundle_config.extract_config(masks)


def score_table(
    bundle: Bundle, table: pd.DataFrame, *, low_confidence: float | None = None, check_ranges: bool = True
) -> pd.DataFrame:
    """The one step from a feature table to probabilities, labels and flags: what every door runs
    (:class:`FrameScorer` on the features it computed, ``Pipeline.evaluate`` and the MRI recipes on
    their extracted tables).

    Each row's clinical values are read by :func:`~usher2.fusion.clinical.check_clinical` (a
    non-numeric value or one far outside the training range: the row is not scored and ``error``
    says why; missing values are imputed by the model and flagged); the scored rows go through
    the model together.

    Args:
        bundle: The loaded bundle.
        table: One row per case (the index names it) with the bundle's :attr:`~Bundle.columns`;
            ``mask_uncertainty``, when present, sets ``low_segmentation_confidence``.
        low_confidence: The uncertainty flag threshold (None: the bundle's,
            :func:`~usher2.fusion.confidence.confidence_threshold`).
        check_ranges: Refuse a clinical value far outside the training range (scoring). False
            (an evaluation of a labelled cohort, which scores every case it can): no range check,
            ``clinical_out_of_range`` is False.

    Returns:
        Indexed like ``table``: ``probability`` (NaN when not scored), ``label`` (Int64),
        ``threshold``, ``low_segmentation_confidence``, ``clinical_missing``,
        ``clinical_out_of_range``, ``error`` (None when scored).

    Raises:
        InputError: Columns the model needs are missing from ``table``.
    """
    cfg = bundle.config
    clinical = list(cfg.clinical)
    used = bundle.compiled.columns  # the columns the model reads; it provably ignores the others
    absent = [c for c in used if c not in table.columns and c not in clinical]
    if absent:  # a clinical column left out is a missing value (imputed, flagged); a feature column is an error
        raise InputError(
            "features",
            f"the {len(used)} columns the model reads (of the {len(bundle.columns)} columns the bundle was fitted on)",
            f"{len(absent)} missing (e.g. {absent[:3]})",
        )
    low = confidence_threshold(cfg, LOW_CONFIDENCE) if low_confidence is None else low_confidence
    n = len(table)
    missing, outside, errors = np.zeros(n, bool), np.zeros(n, bool), [None] * n
    values = table.reindex(columns=clinical).astype(object)
    checked = np.full((n, len(clinical)), np.nan)
    for k, cid in enumerate(table.index if clinical else ()):
        try:
            ranges = cfg.clinical_ranges if check_ranges else None
            got, off = check_clinical(values.iloc[k].to_dict(), clinical, ranges, where=f"case {cid}")
        except InputError as exc:
            errors[k] = f"InputError: {exc}"
            continue
        checked[k] = [got[c] for c in clinical]
        missing[k], outside[k] = bool(np.isnan(checked[k]).any()), bool(off)
    X = table.reindex(columns=used)  # the feature columns keep their dtype
    read = set(used)
    if clinical:
        X = X.assign(**{c: checked[:, j] for j, c in enumerate(clinical) if c in read})
    ok = np.array([e is None for e in errors], bool)
    prob = np.full(n, np.nan)
    if ok.any():
        prob[ok] = bundle.predict_proba(X.loc[ok])
    unc = table["mask_uncertainty"].to_numpy(float) if "mask_uncertainty" in table.columns else np.full(n, np.nan)
    label = pd.array(np.where(ok, prob >= bundle.threshold, 0).astype(int), dtype="Int64")
    label[~ok] = pd.NA
    return pd.DataFrame(
        {
            "probability": prob,
            "label": label,
            "threshold": bundle.threshold,
            "low_segmentation_confidence": unc > low,
            "clinical_missing": missing,
            "clinical_out_of_range": outside,
            "error": errors,
        },
        index=table.index,
    )


def _pixels(frame: Frame | np.ndarray, i: int) -> tuple[np.ndarray, tuple[float, float] | None]:
    if isinstance(frame, Frame):
        return frame.pixels, frame.spacing
    arr = np.asarray(frame)
    if arr.ndim != 2:
        raise InputError(f"frame {i}", "a grey (H, W) array", f"shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise InputError(f"frame {i}", "float pixels in [0, 1] (usher2.io.read_frame gives them)", str(arr.dtype))
    return arr.astype(np.float32, copy=False), None


class FrameScorer:
    """Score in-memory frames with a bundle (see the module docstring).

    Args:
        bundle: A bundle folder (from ``usher2 fit``) or a loaded :class:`~usher2.fusion.bundle.Bundle`.
        cam: CAM method for the heat map (``gradcam``, ...), or None for no heat maps.
        device: Torch device for the networks (None: CUDA when available).
        segmenter_weights: Other weights of the bundle's segmenter network (None: its own).
        radiomics_backend: ``"torch"`` (default: :mod:`usher2.features.torchrad`, batched, on
            ``device``; pyradiomics when the bundle's parameters need what it cannot compute) or
            ``"pyradiomics"``. The bundle's training features came from the backend its
            extraction settings record (``model_info["radiomics_backend"]`` shows both); the two
            give the same probabilities to float tolerance (``tests/score/test_engine.py``).

    The ``low_segmentation_confidence`` flag uses the bundle's calibrated threshold when it has one
    (:mod:`usher2.fusion.confidence`), else :data:`~usher2.fusion.confidence.LOW_CONFIDENCE`.

    Raises:
        InputError: A bad bundle, or one without extraction settings.
    """

    def __init__(
        self,
        bundle: Any,
        *,
        cam: str | None = "gradcam",
        device: str | None = None,
        segmenter_weights: str | Path | None = None,
        radiomics_backend: str = "torch",
    ) -> None:
        self.bundle: Bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        cfg = with_segmenter_weights(bundle_extract_config(self.bundle.config, "predicted"), segmenter_weights)
        cfg = replace(cfg, radiomics_backend=radiomics_backend)
        self.low_confidence = confidence_threshold(self.bundle.config, LOW_CONFIDENCE)
        self.cam = cam
        self.clinical = list(self.bundle.config.clinical)
        self.clinical_ranges = dict(self.bundle.config.clinical_ranges)
        self.needed = find_needed(self.bundle.model, self.bundle.columns)
        clinical = set(self.clinical)
        self._columns = [c for c in self.needed.columns if c not in clinical]  # the ones to compute
        need = set(self._columns)
        self._extractors = {spec: deep_extractor(replace(cfg, device=device), spec) for spec in cfg.backbones}
        used = set(self.bundle.columns)
        self._used_backbones = tuple(s for s, ex in self._extractors.items() if used & set(ex.columns))
        backbones = tuple(s for s, ex in self._extractors.items() if need & set(ex.columns))
        rad = {c for c in need if c.startswith("radiomics_")}
        regions = tuple(r for r in cfg.regions if r == "lesion" or any(c.startswith(f"radiomics_{r}_") for c in rad))
        lexicon = cfg.lexicon and any(c.startswith("radiomics_lexicon_") for c in rad)
        # a model that reads no imaging column still needs a lesion: the frame is segmented, nothing extracted
        self.config = replace(
            cfg,
            radiomics=bool(rad) or not backbones,
            backbones=backbones,
            regions=regions,
            lexicon=lexicon,
            device=device,
        )
        self.groups = {
            "radiomics": bool(rad),
            "regions": [r for r in regions if r != "lesion"],
            "lexicon": lexicon,
            "backbones": list(backbones),
        }
        self._used = list(self.bundle.compiled.columns)  # what the compiled model reads (the needed columns)
        self._index = {c: i for i, c in enumerate(self._used)}
        self._step = BATCH if on_cpu(self.config) else GPU_BATCH
        self._cam_spec = (
            self._used_backbones[0] if self._used_backbones else (cfg.backbones[0] if cfg.backbones else None)
        )
        self._target, self.heatmap_target = self._cam_target()
        files = ("config.json", "model.skops")
        digest = "".join(file_sha256(self.bundle.path / f) for f in files)
        self.model_info = {
            "name": self.bundle.path.name,
            "family": self.bundle.config.family,
            "classifier": self.bundle.config.classifier,
            "version": self.bundle.config.versions.get("usher2"),
            "format": self.bundle.config.format,
            "sha256": hashlib.sha256(digest.encode()).hexdigest(),
            "threshold": self.bundle.threshold,
            "low_confidence_threshold": self.low_confidence,
            "segmenter": cfg.segmenter,
            "clinical": self.clinical,
            "clinical_ranges": self.clinical_ranges,
            "features": len(self.bundle.columns),
            "radiomics_backend": {
                "scoring": radiomics_backend_of(self.config.params, radiomics_backend) if rad else None,
                "training": self.bundle.config.extraction_settings.get("radiomics_backend", "pyradiomics"),
            },
            "heatmap": {"method": cam, "backbone": self._cam_spec, "target": self.heatmap_target},
        }

    # ------------------------------------------------------------------ heat-map target
    def _cam_target(self) -> tuple[Any, str]:
        if self._cam_spec is None or self.cam is None:
            return None, "none"
        ex = self._extractors[self._cam_spec]
        return model_target(self.bundle.model, ex.columns, self._cam_spec in self._used_backbones)

    # ------------------------------------------------------------------ scoring
    def _prepare(
        self, pixels: list[np.ndarray], index: list[int], given: list[np.ndarray | None], names: list[str]
    ) -> list[dict[str, Any] | InputError]:
        """Overlays, enhancer and segmenter on frames of one shape, as one batch: what
        :func:`~usher2.features.extract.prepare_pixels` does to one frame. A frame with a
        ``given`` mask is not segmented (its uncertainty is NaN)."""

        cfg = self.config
        t0 = time.perf_counter()
        if cfg.overlays == "inpaint":
            for j, px in enumerate(pixels):
                found = detect_overlays(px)
                if found.has_overlay:
                    pixels[j] = inpaint_overlays(px, found.mask)
        x = np.stack(pixels)[:, None]
        if cfg.enhancer:
            net = enhancer(cfg.enhancer)
            device = getattr(net, "device", None)
            step = len(x) if device is not None and device.type == "cuda" else ENHANCE_CPU_BATCH
            x = np.concatenate([np.asarray(net(x[k : k + step]), np.float32) for k in range(0, len(x), step)])
        t1 = time.perf_counter()
        todo = [j for j, m in enumerate(given) if m is None]
        segs = dict(zip(todo, segmenter(cfg.segmenter).segment(x[todo]) if todo else [], strict=True))
        t2 = time.perf_counter()
        n = len(pixels)
        times = {"enhance": (t1 - t0) / n, "segment": (t2 - t1) / n, "prepare": (t2 - t0) / n}
        out: list[dict[str, Any] | InputError] = []
        for j in range(n):
            where = names[index[j]]
            seg = segs.get(j)
            if seg is not None and seg.no_lesion:
                out.append(NoLesion(where))
                continue
            mask, unc = (seg.mask, float(seg.uncertainty)) if seg is not None else (given[j], float("nan"))
            if mask.shape != x.shape[2:]:
                out.append(InputError(f"{where} mask", f"a mask of the frame's shape {x.shape[2:]}", str(mask.shape)))
            elif not mask.any():
                out.append(InputError(f"{where} mask", "at least one lesion pixel", "an empty mask"))
            else:
                out.append({"pixels": x[j, 0], "mask": mask, "uncertainty": unc, "seconds": times})
        return out

    def score(
        self,
        frames: Sequence[Frame | np.ndarray],
        clinical: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        *,
        heatmaps: bool = True,
        masks: Sequence[np.ndarray | None] | None = None,
        names: Sequence[str] | None = None,
    ) -> list[FrameScore]:
        """Score frames (each independently; one frame's failure does not affect the others).

        Args:
            frames: :class:`~usher2.types.Frame` objects or ``(H, W)`` float arrays in [0, 1].
            clinical: One mapping of clinical values for every frame, or one per frame (None:
                none given; the model imputes and ``clinical_missing`` is set). Values are read by
                :func:`~usher2.fusion.clinical.check_clinical`: a frame with a non-numeric value or
                one far outside the training range is not scored (its ``error`` says why).
            heatmaps: Compute heat maps (when the scorer has a CAM method).
            masks: One ``(H, W)`` bool lesion mask or None per frame: a frame with a mask is not
                segmented (``usher2 score --masks given``); None: every frame is segmented.
            names: How errors name each frame (``"case bus_0042"``); None: ``"frame i"``.

        Returns:
            One :class:`FrameScore` per frame, in order.
        """
        n = len(frames)
        if clinical is None or isinstance(clinical, Mapping):
            clinical = [clinical] * n
        if len(clinical) != n:
            raise InputError("clinical", f"one mapping per frame ({n})", str(len(clinical)))
        given = list(masks) if masks is not None else [None] * n
        names = list(names) if names is not None else [f"frame {i}" for i in range(n)]
        if len(given) != n or len(names) != n:
            raise InputError("masks/names", f"one per frame ({n})", f"{len(given)} masks, {len(names)} names")
        results: list[FrameScore | None] = [None] * n
        inputs = [_pixels(f, i) for i, f in enumerate(frames)]
        values: list[tuple[dict[str, float], list[str]] | None] = [None] * n
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, (px, _) in enumerate(inputs):
            try:  # before any network runs: a frame with bad clinical values is not scored
                where = "clinical" if names[i] == f"frame {i}" else names[i]
                values[i] = check_clinical(clinical[i], self.clinical, self.clinical_ranges, where=where)
            except InputError as exc:
                results[i] = FrameScore(None, None, self.bundle.threshold, pixels=px, error=str(exc))
                continue
            by_shape.setdefault(px.shape, []).append(i)
        steps = [idx[k : k + self._step] for idx in by_shape.values() for k in range(0, len(idx), self._step)]
        extracted = self._run_steps(steps, inputs, results, given, names)
        ok = self._predict(extracted, values, results)
        if heatmaps and self.cam and self._cam_spec is not None:
            self._heatmaps([results[i] for i in ok])
        return [r for r in results if r is not None]

    def _run_steps(
        self,
        steps: list[list[int]],
        inputs: list[tuple[np.ndarray, Any]],
        results: list[FrameScore | None],
        given: list[np.ndarray | None],
        names: list[str],
    ) -> list[tuple[list, list, float]]:
        """The networks of each step, and the features of its frames with a lesion: ``(ready, rows,
        seconds per frame)`` per step. The networks of step k+1 run in this thread while a worker
        extracts the features of step k; a frame without a lesion gets its result here."""
        thr = self.bundle.threshold

        def extract(ready: list[tuple[int, dict[str, Any]]]) -> tuple[list, list, float]:
            t0 = time.perf_counter()
            items = [(p["pixels"], p["mask"], inputs[i][1]) for i, p in ready]
            rows = frame_features(self.config, items, columns=self._columns)
            return ready, rows, (time.perf_counter() - t0) / len(ready)

        pool = ThreadPoolExecutor(FEATURE_THREADS, thread_name_prefix="usher2-features") if len(steps) > 1 else None
        extracted: list[Any] = []
        try:
            for step in steps:
                ready = []
                prepared = self._prepare([inputs[i][0] for i in step], step, [given[i] for i in step], names)
                for i, p in zip(step, prepared, strict=True):
                    if isinstance(p, InputError):
                        no_lesion = isinstance(p, NoLesion)
                        results[i] = FrameScore(None, None, thr, no_lesion=no_lesion, pixels=inputs[i][0], error=str(p))
                    else:
                        ready.append((i, p))
                if ready:
                    extracted.append(pool.submit(extract, ready) if pool is not None else extract(ready))
            return [e.result() if pool is not None else e for e in extracted]
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _predict(
        self,
        extracted: list[tuple[list, list, float]],
        values: list[tuple[dict[str, float], list[str]] | None],
        results: list[FrameScore | None],
    ) -> list[int]:
        """The model's probabilities for every extracted frame; returns the indices scored."""
        thr = self.bundle.threshold
        ok: list[int] = []
        n_ready = sum(len(ready) for ready, _, _ in extracted)
        X = np.zeros((n_ready, len(self._index)))
        for ready, rows, t_feat in extracted:
            for (i, p), fe in zip(ready, rows, strict=True):
                unc = p["uncertainty"]
                base = FrameScore(
                    None,
                    None,
                    thr,
                    low_segmentation_confidence=bool(unc > self.low_confidence),
                    mask_uncertainty=unc,
                    mask=p["mask"],
                    pixels=p["pixels"],
                    seconds={**p["seconds"], "features": t_feat},
                )
                results[i] = base
                if isinstance(fe, Exception):
                    base.error = f"{type(fe).__name__}: {fe}"
                    continue
                base.features = fe
                row = X[len(ok)]
                clin, outside = values[i]
                for c, v in (*fe.items(), *clin.items()):
                    j = self._index.get(c)
                    if j is not None:
                        row[j] = v
                base.clinical_missing = any(np.isnan(v) for v in clin.values())
                base.clinical_out_of_range = bool(outside)
                ok.append(i)
        if ok:
            t0 = time.perf_counter()
            # the clinical values were checked (check_clinical, as score_table does) before any network
            # ran; the rows hold the used columns in the compiled model's order: no table to build
            prob = self.bundle.predict_proba(X[: len(ok)])
            t_model = (time.perf_counter() - t0) / len(ok)
            for i, pr in zip(ok, prob, strict=True):
                r = results[i]
                r.probability, r.label = float(pr), int(pr >= thr)
                r.seconds["model"] = t_model
        return ok

    def _heatmaps(self, scored: list[FrameScore]) -> None:
        """Grad-CAM of the deep backbone's ROI crop for every scored frame (see the module docstring),
        :data:`CAM_BATCH` crops per backward pass: what :func:`~usher2.explain.frame.explain_frame`
        does to one frame. Grad-CAM weighs each crop by its own gradients and scales each map alone
        and the backbone runs in eval mode, so a frame's map does not depend on its batch (to the
        float32 rounding of a batched convolution, far below a PNG's 1/255); 16 crops in one pass
        take a quarter of the time of 16 passes on 2 CPU cores."""
        import torch

        from usher2.explain.cam import explain
        from usher2.explain.frame import paste_back
        from usher2.explain.targets import PooledFeatureTarget

        ex = self._extractors[self._cam_spec]

        def target(r: FrameScore) -> Any:  # a (positive, negative) pair: the evidence for the predicted class
            t = self._target[0 if r.label == 1 else 1] if isinstance(self._target, tuple) else self._target
            return t or PooledFeatureTarget()

        with torch_threads(None), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for k in range(0, len(scored), CAM_BATCH):
                chunk = scored[k : k + CAM_BATCH]
                t0 = time.perf_counter()
                x = torch.from_numpy(ex.crops([r.pixels for r in chunk], [r.mask for r in chunk])).to(ex.device)
                maps = explain(ex.inference_model, x, method=self.cam, targets=[target(r) for r in chunk])
                per_frame = (time.perf_counter() - t0) / len(chunk)
                for r, heat in zip(chunk, maps, strict=True):
                    r.heat = paste_back(heat, r.mask, margin=ex.margin)[0]
                    r.seconds["heatmap"] = per_frame

    def score_frame(
        self, frame: Frame | np.ndarray, clinical: Mapping[str, Any] | None = None, **kw: Any
    ) -> FrameScore:
        """Score one frame (see :meth:`score`)."""
        return self.score([frame], clinical, **kw)[0]
