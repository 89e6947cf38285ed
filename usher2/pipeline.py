"""The single end-to-end entry point: frames and a manifest in, bundles, scores and a report out.

:class:`Pipeline` is configured by one YAML file (:class:`PipelineConfig`): the enhancer, the
segmenter and mask source, the radiomics parameters, the deep backbones, the fusion models and
the report options. The CLI (``usher2 fit``/``score``/``evaluate``/``report``/``demo``) and the
service are thin shells around it.

* :meth:`Pipeline.extract` — enhance → segment (or the given masks) → radiomics + lexicon + deep
  features, one Parquet table (resumable; see :mod:`usher2.features.extract`).
* :meth:`Pipeline.fit` — patient-grouped nested CV and the final refit of every configured model
  family, one bundle each (:mod:`usher2.fusion`).
* :meth:`Pipeline.score` — frames in memory, or an image, DICOM, video, directory or manifest,
  through a bundle: per-frame probability, mask, heat map and flags.
* :meth:`Pipeline.evaluate` — a held-out labelled cohort through the fitted bundles: the
  evaluation directory that :mod:`usher2.report` renders (``predictions.csv``,
  ``thresholds.json``, ``summary.json``, ``manifest.csv``, ``features.parquet``, ``bundles/``).
* :meth:`Pipeline.run` — all of it: fit on a training manifest, evaluate on a test manifest,
  write the HTML report.

Thresholds are chosen on the training cohort's out-of-fold predictions (Youden) and only applied
to the test cohort.

Example:
    >>> cfg = PipelineConfig(models=("radiomics", "dlr"))
    >>> cfg.extract_config().masks, cfg.primary_model
    ('given', 'dlr')
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from usher2.evaluate.summary import CohortCounts, EvaluationSummary, predictions_table, write_predictions
from usher2.io.atomic import atomic_path, atomic_write_text
from usher2.io.config import check_keys, read_mapping
from usher2.io.errors import InputError
from usher2.score.engine import score_table

__all__ = [
    "FAMILY_ORACLE",
    "FitInputs",
    "Pipeline",
    "PipelineConfig",
    "RunResult",
    "calibrate_segmentation_confidence",
    "evaluate_scores",
    "evaluation_from_bundle",
    "fit_inputs",
    "training_record",
]

# The oracle subset each family is compared with on simulated cohorts.
FAMILY_ORACLE = {"clinical": "clinical", "radiomics": "image", "deep": "image", "dlr": "image", "combined": "all"}
_NEEDS_CLINICAL = {"clinical", "combined"}

ProgressFactory = Callable[[str], AbstractContextManager[Callable[[int, int], None]]]


@contextmanager
def _no_progress(_: str) -> Iterator[Callable[[int, int], None]]:
    yield lambda done, total: None


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a run depends on; read from YAML with :meth:`from_yaml`, saved with every run.

    Attributes:
        enhancer: Enhancer name (``pix2pix``) or None.
        segmenter: Segmenter name, used when ``masks="predicted"``.
        masks: ``"given"`` (the manifest's) or ``"predicted"``.
        radiomics: pyradiomics parameters (a YAML path or a dict); None or True: the defaults;
            False: no radiomics features (``usher2 extract --no-radiomics``).
        lexicon: Also the BI-RADS lexicon descriptors.
        backbones: Deep backbones (``NAME``, ``NAME=PATH``).
        models: Model families to fit (clinical, radiomics, deep, dlr, combined); empty: all five
            when ``clinical`` names columns, else radiomics, deep and dlr.
        primary_model: The model the report details (calibration, nomogram, SHAP, CAMs); default
            the last of ``models``.
        classifier: lr, rf, xgboost, lightgbm, svm or mlp.
        fusion: ``early`` or ``late``.
        clinical: Clinical columns of the manifest (numeric).
        label: Label column.
        outer_folds, inner_folds: Nested-CV folds (patient-grouped).
        calibration: ``sigmoid``, ``isotonic`` or None.
        seed: Seed of every split.
        workers: Dask workers for extraction and table scoring (None: in-process).
        scheduler: Address of an existing Dask scheduler for extraction (wins over ``workers``).
        chunk_size: Cases per unit of extraction work (one resumable part).
        cam_examples: Grad-CAM examples per group in the report.
        overlays: ``keep`` or ``inpaint`` burned-in text and calipers before anything else.
        regions: Radiomics regions: ``lesion`` plus any of ``peritumoral``, ``posterior``.
        device: Torch device for the networks (None: CUDA when available).
        perturb: When fitting extracts: also the default perturbation table (ICC filter).
        scoring_masks: The masks the models will be scored on, ``predicted`` or ``given``, as
            ``usher2 fit --scoring-masks`` and ``usher2 score --masks`` (:meth:`Pipeline.score`
            of a ``.csv``; None there: ``predicted``). ``predicted``: fitting redraws every training lesion
            contour at a segmenter's error scale (``contour-1``), the ICC filter keeps only
            features robust to it and the redrawn frames are trained on too (``augment`` 1), the
            recipe issue 23 measured best on held-out devices. None (the default here; the CLI's is
            ``predicted``): no preparation, which keeps ``usher2 demo`` at its speed (with
            ``predicted``, ``usher2 demo --n-train 40 --n-test 20`` took 415 s instead of 117-135 s
            on 2 cores: the contour extraction and the doubled training rows).
        augment: Training copies per frame with a redrawn contour (``contour-1..N``); None: 1 with
            predicted scoring masks when the perturbation table holds contour-1 rows, else 0.
        icc: Apply the ICC filter when a perturbation table lies beside the features.
        icc_perturbations: Compute the ICC over only these perturbations (+ original); empty: all.
        radiomics_backend: ``pyradiomics`` or ``torch`` (:mod:`usher2.features.torchrad`); None:
            each job's default, pyradiomics (the reference) for extraction and fitting, torch for
            scoring (:class:`~usher2.score.engine.FrameScorer`). The two agree to float tolerance.

    The CLI's ``usher2 fit``, ``extract`` and ``score`` flags have the same names
    (``--scoring-masks``, ``--augment``, ``--icc/--no-icc``, ``--icc-perturbation``, ``--perturb``,
    ``--radiomics/--no-radiomics``, ``--chunk-size``, ``--workers``, ``--scheduler``,
    ``--device``) and build this record.
    """

    enhancer: str | None = None
    segmenter: str = "unet"
    masks: str = "given"
    radiomics: str | dict[str, Any] | bool | None = None
    lexicon: bool = True
    backbones: tuple[str, ...] = ("usresnet10t",)
    models: tuple[str, ...] = ()
    primary_model: str | None = None
    classifier: str = "lr"
    fusion: str = "early"
    clinical: tuple[str, ...] = ()
    label: str = "label"
    outer_folds: int = 5
    inner_folds: int = 3
    calibration: str | None = "sigmoid"
    seed: int = 0
    workers: int | None = None
    scheduler: str | None = None
    chunk_size: int = 16
    cam_examples: int = 3
    overlays: str = "keep"
    regions: tuple[str, ...] = ("lesion", "peritumoral", "posterior")
    device: str | None = None
    perturb: bool = False
    scoring_masks: str | None = None
    augment: int | None = None
    icc: bool = True
    icc_perturbations: tuple[str, ...] = ()
    radiomics_backend: str | None = None

    def __post_init__(self) -> None:
        from usher2.fusion.models import FAMILIES

        for name in ("backbones", "models", "clinical", "regions", "icc_perturbations"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(str(v) for v in value))
        if not self.models:
            imaging = ("radiomics", "deep", "dlr")
            auto = ("clinical", *imaging, "combined") if self.clinical else imaging
            object.__setattr__(self, "models", auto)
        bad = [m for m in self.models if m.partition(":")[0] not in FAMILIES]
        if bad:
            raise InputError("models", f"names among {', '.join(FAMILIES)}", str(bad))
        need = [m for m in self.models if m in _NEEDS_CLINICAL]
        if need and not self.clinical:
            raise InputError(
                "clinical", f"clinical columns for the {need} models", "none", fix="set clinical: [...] or --clinical"
            )
        primary = self.primary_model or self.models[-1]
        if primary not in self.models:
            raise InputError("primary_model", f"one of the fitted models {list(self.models)}", repr(primary))
        object.__setattr__(self, "primary_model", primary)
        if self.calibration in ("none", ""):
            object.__setattr__(self, "calibration", None)
        if self.enhancer in ("none", ""):
            object.__setattr__(self, "enhancer", None)
        if self.scoring_masks not in (None, "predicted", "given"):
            raise InputError("scoring_masks", "predicted or given", repr(self.scoring_masks))
        if self.augment is not None and self.augment < 0:
            raise InputError("augment", "a number of training copies >= 0", str(self.augment))
        self.extract_config(fit=True)  # checks masks, enhancer, backbones, regions and the radiomics parameters

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineConfig:
        """Read a YAML file of the attributes; an unknown key is an error that lists the known ones."""
        data = read_mapping(path, "a pipeline YAML file")
        check_keys(path, data, (f.name for f in fields(cls)))
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def contours(self) -> list[str]:
        """The redrawn contours a fit extracts (``contour-1..N``): at least one for predicted scoring masks.

        Example:
            >>> PipelineConfig(scoring_masks="predicted").contours(), PipelineConfig(augment=2).contours()
            (['contour-1'], ['contour-1', 'contour-2'])
        """
        n = max(self.augment or 0, 1 if self.scoring_masks == "predicted" else 0)
        return [f"contour-{k}" for k in range(1, n + 1)]

    def extract_config(self, *, fit: bool = False) -> Any:
        """The extraction settings; ``fit``: with the perturbations a fit uses (:meth:`contours`, ``perturb``)."""
        from usher2.features.extract import PERTURBATION_CHOICES, ExtractConfig

        contours = self.contours() if fit else []
        chosen = None  # the default perturbations (perturb), plus the redrawn contours
        if contours:
            chosen = (*PERTURBATION_CHOICES, *contours) if self.perturb else tuple(contours)
        return ExtractConfig(
            params=None if isinstance(self.radiomics, bool) else self.radiomics,
            radiomics=self.radiomics is not False,
            chunk_size=self.chunk_size,
            lexicon=self.lexicon,
            backbones=self.backbones,
            masks=self.masks,
            enhancer=self.enhancer,
            segmenter=self.segmenter,
            overlays=self.overlays,
            regions=self.regions,
            device=self.device,
            radiomics_backend=self.radiomics_backend or "pyradiomics",
            perturb=fit and (self.perturb or bool(contours)),
            perturbations=chosen,
        )


@dataclass
class RunResult:
    """What :meth:`Pipeline.run` produced.

    Attributes:
        table: Per model: training nested-CV AUC (CI), test AUC (CI), oracle AUC when known.
        out: The evaluation directory.
        report: The HTML report (None when not written).
        seconds: Wall time per stage.
    """

    table: pd.DataFrame
    out: Path
    report: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


class Pipeline:
    """The configured pipeline (see the module docstring).

    Args:
        config: A :class:`PipelineConfig`, a dict of its attributes, a YAML path, or None (defaults).
        progress: ``progress(description)`` -> context manager yielding ``update(done, total)``.
        log: Where progress messages go (e.g. ``print``); None: nowhere.
    """

    def __init__(
        self,
        config: PipelineConfig | dict[str, Any] | str | Path | None = None,
        *,
        progress: ProgressFactory | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if config is None:
            config = PipelineConfig()
        elif isinstance(config, dict):
            config = PipelineConfig(**config)
        elif isinstance(config, str | Path):
            config = PipelineConfig.from_yaml(config)
        self.config = config
        self.progress: ProgressFactory = progress or _no_progress
        self.log = log or (lambda msg: None)

    # ------------------------------------------------------------------ stages
    def extract(
        self, manifest: str | Path, out: str | Path, *, fit: bool = False
    ) -> tuple[pd.DataFrame, dict[str, Any], Any]:
        """Features of every case of ``manifest`` into ``out`` (Parquet); returns (table, provenance, result).

        ``fit``: also the perturbation table a fit reads (see :meth:`PipelineConfig.extract_config`).
        """
        from usher2.features.extract import extract_cohort, read_feature_table

        with self.progress(f"extract {Path(manifest).parent.name or Path(manifest).stem}") as update:
            res = extract_cohort(
                manifest,
                out,
                self.config.extract_config(fit=fit),
                workers=self.config.workers,
                scheduler=self.config.scheduler,
                progress=update,
                log=self.log,
            )
        if res.failed_cases:
            self.log(f"{len(res.failed_cases)} cases failed extraction and are left out (see {res.paths['failures']})")
        table, prov = read_feature_table(out)
        return table, prov, res

    def fit(
        self, manifest: str | Path, out: str | Path, *, features: str | Path | None = None, overwrite: bool = True
    ) -> dict[str, Any]:
        """Nested CV and final bundle of every configured model into ``out/bundles/<model>``.

        Returns:
            ``{model: FitResult}``.
        """
        from usher2.io.manifest import read_manifest

        out = Path(out)
        df = read_manifest(manifest, check_files=features is None)
        if features is None:
            features = out / "train_features.parquet"
            self.extract(manifest, features, fit=True)
        data = self._fit_data(manifest, df, Path(features), None)  # read and hashed once for every model
        results = {}
        for model in self.config.models:
            results[model] = self._fit_one(data, out / _bundle_dir(model), model, overwrite=overwrite)
            auc = results[model].cv.auc
            self.log(f"{model}: nested-CV AUC {auc['auc']:.3f} ({auc['ci_low']:.3f}-{auc['ci_high']:.3f})")
        return results

    def fit_model(
        self,
        manifest: str | Path,
        out: str | Path,
        model: str,
        *,
        features: str | Path | None = None,
        overwrite: bool = True,
        clinical: Sequence[str] | None = None,
        sequences: Sequence[str] | None = None,
        test_ids: Sequence[str] | None = None,
        folds_column: str | None = None,
        training_masks: str | None = None,
        confidence_probs: Sequence[str | Path] | None = None,
        sign_key: bytes | None = None,
        track: str | None = None,
    ) -> Any:
        """Nested CV and the final bundle of one model family into the folder ``out`` (``usher2 fit``).

        Args:
            manifest: The labelled training manifest.
            out: The bundle folder.
            model: A family (``clinical``, ``radiomics``, ``deep``/``deep:BACKBONE``, ``dlr``, ``combined``).
            features: The feature table (``usher2 extract``); None: extracted first beside ``out``
                (``OUT.features.parquet``, with the perturbations the fit uses).
            overwrite: Replace an existing bundle folder.
            clinical: The clinical columns this model reads; None: the configured ones for the
                clinical and combined families, none for the imaging ones.
            sequences: MRI: use only these sequences' columns.
            test_ids: A fixed test split (case ids) instead of the nested CV's outer folds.
            folds_column: A manifest column of predefined outer folds.
            training_masks: What the training masks are, for the bundle's record.
            confidence_probs: Folders of a segmenter's out-of-fold probability maps: calibrate the
                ``low_segmentation_confidence`` threshold on them (:func:`calibrate_segmentation_confidence`).
            sign_key: Sign the bundle with this key.
            track: MLflow tracking URI (None: no tracking).

        Returns:
            The :class:`~usher2.fusion.fit.FitResult`.
        """
        from usher2.io.manifest import read_manifest

        out = Path(out)
        df = read_manifest(manifest, check_files=features is None)
        if features is None:
            features = out.with_name(out.name + ".features.parquet")
            self.log(f"no feature table: extracting first -> {features}")
            self.extract(manifest, features, fit=True)
        data = self._fit_data(manifest, df, Path(features), confidence_probs)
        return self._fit_one(
            data,
            out,
            model,
            overwrite=overwrite,
            clinical=clinical,
            sequences=sequences,
            test_ids=test_ids,
            folds_column=folds_column,
            training_masks=training_masks,
            sign_key=sign_key,
            track=track,
        )

    def _fit_data(
        self, manifest: str | Path, df: pd.DataFrame, features: Path, confidence_probs: Sequence[str | Path] | None
    ) -> _FitData:
        """What every model of one fit reads: the manifest, the feature and perturbation tables, the
        training record (file hashes) and the calibrated confidence threshold."""
        inputs = fit_inputs(features, self.config, log=self.log)
        return _FitData(
            df=df,
            inputs=inputs,
            training=training_record(features, manifest, inputs.provenance),
            confidence=calibrate_segmentation_confidence(df, manifest, confidence_probs, log=self.log),
        )

    def _fit_one(
        self,
        data: _FitData,
        out: Path,
        model: str,
        *,
        overwrite: bool,
        clinical: Sequence[str] | None = None,
        sequences: Sequence[str] | None = None,
        test_ids: Sequence[str] | None = None,
        folds_column: str | None = None,
        training_masks: str | None = None,
        sign_key: bytes | None = None,
        track: str | None = None,
    ) -> Any:
        """Nested CV and the final bundle of one model on prepared data (see :meth:`fit_model`)."""
        from usher2.fusion.fit import fit_cohort

        cfg = self.config
        if clinical is None:
            clinical = list(cfg.clinical) if model in _NEEDS_CLINICAL else []
        inputs = data.inputs
        with self.progress(f"nested CV ({model}, {cfg.classifier})") as update:
            return fit_cohort(
                inputs.table,
                data.df,
                out,
                label=cfg.label,
                clinical=list(clinical),
                family=model,
                sequences=sequences,
                classifier=cfg.classifier,
                fusion=cfg.fusion,
                outer_folds=cfg.outer_folds,
                inner_folds=cfg.inner_folds,
                calibration=cfg.calibration,
                seed=cfg.seed,
                perturbations=inputs.perturbations,
                test_ids=test_ids,
                folds_column=folds_column,
                provenance=inputs.extraction,
                training_data=data.training,
                overwrite=overwrite,
                progress=update,
                sign_key=sign_key,
                track=track,
                augment=inputs.augment_table,
                augment_perturbations=inputs.augment_perturbations,
                icc_perturbations=inputs.icc_perturbations,
                training_masks=training_masks,
                segmentation_confidence=data.confidence,
                scoring_masks=cfg.scoring_masks,
            )

    def score(self, source: Any, bundle: str | Path, out: str | Path | None = None, **kwargs: Any) -> Any:
        """Score frames with a bundle.

        * ``out`` None: ``source`` is a sequence of frames (:class:`~usher2.types.Frame` or ``(H, W)``
          arrays in [0, 1]) or one image/DICOM/video path; returns one
          :class:`~usher2.score.engine.FrameScore` per frame (probability, label, flags, mask, heat map).
        * ``out`` a folder: per-frame CSV/JSON, overlays, sequences and the per-frame report
          (:func:`usher2.score.folder.score_to_dir`).
        * ``out`` a ``.csv`` file: one scores CSV, cohort scale (resumable, Dask ``workers``;
          :func:`usher2.score.table.score_inputs`), with the config's ``scoring_masks``.

        All three run :class:`~usher2.score.engine.FrameScorer` on the config's ``device``.

        Raises:
            InputError: ``scoring_masks="given"`` without a ``.csv`` output (only a manifest gives masks).
        """
        kwargs.setdefault("device", self.config.device)
        if self.config.radiomics_backend is not None:
            kwargs.setdefault("radiomics_backend", self.config.radiomics_backend)
        if out is None:
            from usher2.io.frames import iter_frames
            from usher2.score.engine import FrameScorer

            frames = list(iter_frames(source)) if isinstance(source, str | Path) else list(source)
            return FrameScorer(bundle, **kwargs).score(frames)
        if Path(out).suffix.lower() != ".csv":
            from usher2.score.folder import score_to_dir

            if self.config.scoring_masks == "given":
                raise InputError(
                    "scoring_masks (--masks)",
                    "'predicted' for folder output (use a .csv output for given masks)",
                    "given",
                )
            with self.progress("scoring inputs") as update:
                return score_to_dir(source, bundle, out, progress=update, **kwargs)
        from usher2.score.table import score_inputs

        masks = self.config.scoring_masks or "predicted"
        with self.progress("scoring") as update:
            return score_inputs(
                source, bundle, out, masks=masks, workers=self.config.workers, progress=update, log=self.log, **kwargs
            )

    def evaluate(
        self,
        manifest: str | Path,
        out: str | Path,
        fits: dict[str, Any],
        *,
        title: str = "usher2 cohort report",
        oracle: dict[str, float] | None = None,
        data_description: str | None = None,
    ) -> pd.DataFrame:
        """Score a held-out labelled cohort with the fitted bundles; write the evaluation directory.

        Returns:
            The AUC table (see :class:`RunResult`).
        """
        import numpy as np

        from usher2.evaluate import roc_auc_ci
        from usher2.fusion.bundle import load_bundle
        from usher2.io.manifest import read_manifest

        out = Path(out)
        cfg = self.config
        test = read_manifest(manifest, check_files=True)
        table, _, res = self.extract(manifest, out / "features.parquet")
        X = table.set_index(table["case_id"].astype(str))
        m = test.assign(case_id=test["case_id"].astype(str)).drop_duplicates("case_id").set_index("case_id")
        m = m.loc[[c for c in X.index if c in m.index]]
        X = X.loc[m.index]
        for c in cfg.clinical:
            X[c] = pd.to_numeric(m[c], errors="coerce")
        y_test = pd.to_numeric(m[cfg.label], errors="coerce")
        rows, preds, thresholds = [], [], {}
        for model, fit in fits.items():
            bundle = load_bundle(fit.bundle)
            thresholds[model] = float(bundle.threshold)
            p = score_table(bundle, X, check_ranges=False)["probability"].to_numpy()  # the scoring doors' table step
            oof = fit.cv.oof
            preds.append(
                predictions_table(model, "train_oof", oof.index, oof["patient_id"], oof["label"], oof["probability"])
            )
            preds.append(predictions_table(model, "test", X.index, m["patient_id"], y_test, p))
            labelled = y_test.notna().to_numpy() & np.isfinite(p)  # a case with bad clinical values is not scored
            r = roc_auc_ci(y_test.to_numpy()[labelled].astype(int), p[labelled])
            cv = fit.cv.auc
            rows.append(
                {
                    "model": model,
                    "cv_auc": cv["auc"],
                    "cv_ci_low": cv["ci_low"],
                    "cv_ci_high": cv["ci_high"],
                    "test_auc": r.auc,
                    "test_ci_low": r.ci_low,
                    "test_ci_high": r.ci_high,
                    "oracle_auc": (oracle or {}).get(model, np.nan),
                    "n_features": len(fit.selected),
                }
            )
        write_predictions(out, preds, thresholds)
        _write_manifest_copy(out, m, manifest, keep_resolved=True)
        train_oof = next(iter(fits.values())).cv.oof
        EvaluationSummary(
            title=title,
            primary_model=cfg.primary_model,
            cohort={
                "train": CohortCounts.from_labels(train_oof["patient_id"], train_oof["label"]),
                "test": CohortCounts.from_labels(m["patient_id"], y_test),
            },
            methods=self._methods(data_description, len(res.failed_cases)),
            bundles={model: _bundle_dir(model) for model in fits},
            oracle_auc={k: v for k, v in (oracle or {}).items() if k in fits},
            config=json.loads(json.dumps(cfg.to_dict(), default=str)),
        ).write(out)
        auc_table = pd.DataFrame(rows)
        with atomic_path(out / "auc.csv") as tmp:
            auc_table.to_csv(tmp, index=False)
        return auc_table

    def _methods(self, data: str | None, failed: int) -> dict[str, str]:
        cfg = self.config
        masks = "predicted by the U-Net segmenter" if cfg.masks == "predicted" else "given with the data"
        return {
            "data": data or "Frames and labels of the manifests given to the run.",
            "outcome": f"Binary label column {cfg.label!r}.",
            "predictors": (
                f"Enhancer: {cfg.enhancer or 'none'}; lesion masks {masks}; radiomics (pyradiomics, "
                f"{'default parameters' if cfg.radiomics is None else 'user parameters'}) with peritumoral and "
                f"posterior regions{' and BI-RADS lexicon descriptors' if cfg.lexicon else ''}; deep features "
                f"from {', '.join(cfg.backbones) or 'no backbone'}; clinical: {', '.join(cfg.clinical) or 'none'}."
            ),
            "missing_data": (
                "Missing feature and clinical values are imputed with the training-fold median inside each fold; "
                f"{failed} test frames failed extraction and are not scored."
            ),
            "splits": (
                "A separate held-out test cohort; within the training cohort, patient-grouped "
                f"{cfg.outer_folds}-fold outer and {cfg.inner_folds}-fold inner cross-validation (seed {cfg.seed})."
            ),
            "model": (
                f"{cfg.fusion} fusion, classifier {cfg.classifier}; feature selection (univariate, Spearman "
                f"pruning, LASSO) and tuning inside the folds; calibration: {cfg.calibration or 'none'}."
            ),
            "validation": (
                "Nested-CV out-of-fold AUC on the training cohort; the final model refitted on all training data "
                "and applied once to the test cohort; threshold (Youden) chosen on training out-of-fold predictions."
            ),
            "software": "usher2 (pyradiomics, timm, scikit-learn, statsmodels, lifelines, shap, grad-cam).",
        }

    def run(
        self,
        train: str | Path,
        test: str | Path,
        out: str | Path,
        *,
        title: str = "usher2 cohort report",
        oracle: dict[str, float] | None = None,
        data_description: str | None = None,
        report: bool = True,
    ) -> RunResult:
        """Fit on ``train``, evaluate on ``test``, write the report into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "pipeline.json", json.dumps(self.config.to_dict(), indent=2, default=str))
        seconds: dict[str, float] = {}
        t = time.perf_counter()
        fits = self.fit(train, out)
        seconds["fit"] = time.perf_counter() - t
        t = time.perf_counter()
        table = self.evaluate(test, out, fits, title=title, oracle=oracle, data_description=data_description)
        seconds["evaluate"] = time.perf_counter() - t
        path = None
        if report:
            from usher2.report import write_cohort_report

            t = time.perf_counter()
            with self.progress("report") as update:
                update(0, 1)
                path = write_cohort_report(out, out / "report.html", cam_examples=self.config.cam_examples)
                update(1, 1)
            seconds["report"] = time.perf_counter() - t
        return RunResult(table=table, out=out, report=path, seconds=seconds)


@dataclass
class _FitData:
    """What :meth:`Pipeline.fit` reads once for all its models."""

    df: pd.DataFrame
    inputs: FitInputs
    training: dict[str, Any]
    confidence: dict[str, Any] | None


@dataclass
class FitInputs:
    """What a fit reads beside its feature table (see :func:`fit_inputs`).

    Attributes:
        table: The feature table.
        provenance: Its provenance (the extraction settings and per-case input hashes).
        perturbations: The perturbation table for the ICC filter, or None (no table, or ``icc`` off).
        icc_perturbations: The perturbations the ICC is computed over, or None.
        augment_table: The perturbation table the training copies come from, or None.
        augment_perturbations: The redrawn contours trained on (``contour-1..N``), or None.
    """

    table: pd.DataFrame
    provenance: dict[str, Any]
    perturbations: pd.DataFrame | None
    icc_perturbations: list[str] | None
    augment_table: pd.DataFrame | None
    augment_perturbations: list[str] | None

    @property
    def extraction(self) -> dict[str, Any]:
        """The provenance without the per-case inputs: the bundle's extraction record."""
        return {k: v for k, v in self.provenance.items() if k != "inputs"}


def fit_inputs(features: Path, cfg: PipelineConfig, *, log: Callable[[str], None] = print) -> FitInputs:
    """The feature table and, from the perturbation table beside it, the ICC filter and training copies.

    The one place ``usher2 fit`` and :meth:`Pipeline.fit` decide them: the ICC filter runs over
    ``FEATURES.perturbations.parquet`` when it exists and ``cfg.icc`` is on (over
    ``cfg.icc_perturbations``, else every perturbation in it); ``cfg.augment`` copies (default: 1 with
    predicted scoring masks when the table holds ``contour-1`` rows) are trained on.

    Raises:
        InputError: ``augment`` asked for without a perturbation table.
    """
    from usher2.features.extract import read_feature_table

    table, prov = read_feature_table(features)
    ppath = features.with_name(features.stem + ".perturbations.parquet")
    table_p = pd.read_parquet(ppath) if ppath.is_file() else None
    held = sorted(set(table_p["perturbation"].astype(str)) - {"original"}) if table_p is not None else []
    augment = cfg.augment
    if augment is None:  # the default: one training copy when the table holds it and predicted masks are ahead
        augment = 1 if cfg.scoring_masks == "predicted" and "contour-1" in held else 0
    if augment and table_p is None:
        raise InputError(ppath, "the perturbation table with contour-<k> rows (augment)", "no such file")
    perturbations = table_p if cfg.icc and held else None
    icc = list(cfg.icc_perturbations or held) if perturbations is not None else None
    if cfg.scoring_masks == "predicted" and not any(n.startswith("contour-") for n in held):
        log(
            "note: the model will be scored on predicted masks, but the perturbation table has no contour-<k> "
            "rows, so the fit cannot prepare for segmentation error (ICC filter, training copies): let fit "
            "extract, or extract with ExtractConfig(perturb=True, perturbations=('contour-1', ...))"
        )
    icc_text = f"perturbation table {ppath} ({', '.join(icc or [])})" if perturbations is not None else "off"
    aug_text = f"; augmentation: {augment} contour copies per training frame" if augment else ""
    log(f"ICC filter: {icc_text}{aug_text}")
    return FitInputs(
        table=table,
        provenance=prov,
        perturbations=perturbations,
        icc_perturbations=icc,
        augment_table=table_p if augment else None,
        augment_perturbations=cfg.contours()[:augment] or None,
    )


def calibrate_segmentation_confidence(
    df: pd.DataFrame,
    manifest: str | Path,
    probs: Sequence[str | Path] | None,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """The ``low_segmentation_confidence`` threshold calibrated on a segmenter's out-of-fold
    probability maps against the manifest's masks (:func:`~usher2.fusion.confidence.calibrate_confidence`);
    None without ``probs``.

    Raises:
        InputError: The manifest has no masks.
    """
    if not probs:
        return None
    import tempfile

    from usher2.features.extract import predicted_masks
    from usher2.fusion.confidence import calibrate_confidence

    if "mask_path" not in df.columns or df["mask_path"].isna().all():
        raise InputError(manifest, "a mask column (to calibrate --confidence-probs against)", "no masks")
    with tempfile.TemporaryDirectory(prefix="usher2-oof-masks-") as tmp:
        pm = predicted_masks(df[df["mask_path"].notna()], list(probs), tmp)
    found = pm[~pm["no_lesion"] & pm["dice"].notna()]
    cal = calibrate_confidence(found["uncertainty"], found["dice"], source=", ".join(str(p) for p in probs))
    log(
        f"low_segmentation_confidence: threshold {cal.threshold:.3f} bits from {cal.n} out-of-fold masks "
        f"({cal.n_flagged} flagged; Dice unflagged {cal.dice_unflagged:.3f}, flagged {cal.dice_flagged:.3f})"
    )
    return cal.to_dict()


def training_record(features: str | Path, manifest: str | Path, provenance: dict[str, Any]) -> dict[str, Any]:
    """The bundle's training-data record: the feature table's and manifest's SHA-256 and the per-case inputs."""
    from usher2.io.hashing import file_sha256

    return {
        "features_sha256": file_sha256(features),
        "manifest_sha256": file_sha256(manifest),
        "inputs": provenance.get("inputs", []),
    }


def _read_scores(path: Path) -> tuple[pd.DataFrame, str, Any, Path | None]:
    """(scores, model name, loaded bundle or None, feature table or None) of one SCORES input.

    SCORES is ``usher2 score``'s CSV (with its ``.json`` sidecar naming the bundle) or its output
    folder (``cases.csv`` + ``scores.json``); a ``model`` column names the model, else the bundle's
    family, else the file's stem. The bundle named by the scores is loaded with every check of
    :func:`~usher2.fusion.bundle.load_bundle` before its out-of-fold numbers are reported.
    """
    bundle = features = None
    name = path.stem
    if path.is_dir():
        meta_path, csv = path / "scores.json", path / "cases.csv"
        doc = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        name = str(doc.get("model", {}).get("family") or path.name)
        bundle_hint = doc.get("bundle")
    else:
        csv = path
        side = path.with_suffix(".json")
        meta = json.loads(side.read_text(encoding="utf-8")) if side.is_file() else {}
        bundle_hint = meta.get("bundle")
        feats = path.with_name(path.stem + ".features.parquet")
        features = feats if feats.is_file() else None
    if not csv.is_file():
        raise InputError(path, "a scores CSV or an usher2 score output folder (cases.csv)", "no such file")
    df = pd.read_csv(csv, dtype={"case_id": str})
    missing = [c for c in ("case_id", "probability") if c not in df.columns]
    if missing:
        raise InputError(csv, "columns case_id and probability", f"no {missing}")
    if bundle_hint and (Path(bundle_hint) / "hashes.json").is_file():
        from usher2.fusion.bundle import load_bundle

        bundle = load_bundle(bundle_hint)
        name = str(bundle.config.family or name)
    if "model" in df.columns and df["model"].nunique() == 1:
        name = str(df["model"].iloc[0])
    return df, name, bundle, features


def _evaluate_one(
    path: Path, taken: Mapping[str, float], man: pd.DataFrame, y: pd.Series, labelled: pd.Index
) -> tuple[str, list[pd.DataFrame], dict[str, Any], float | None, str | None, Path | None]:
    """One SCORES input of :func:`evaluate_scores`: (model name, prediction rows, AUC row, threshold,
    bundle folder, feature table)."""
    import numpy as np

    from usher2.evaluate import roc_auc_ci

    df, name, bundle, features = _read_scores(path)
    if name in taken:
        name = f"{name}-{len(taken) + 1}"
    df = df.drop_duplicates("case_id").set_index("case_id")
    prob = pd.to_numeric(df["probability"], errors="coerce").reindex(labelled)
    ok = prob.notna()
    if not ok.any():
        raise InputError(path, f"scores for the manifest's labelled cases ({len(labelled)})", "none match by case_id")
    ids = labelled[ok.to_numpy()]
    preds = [predictions_table(name, "test", ids, man.loc[ids, "patient_id"], y.loc[ids].astype(int), prob[ok])]
    r = roc_auc_ci(y.loc[ids].astype(int).to_numpy(), prob[ok].to_numpy())
    row = {"model": name, "n": int(ok.sum()), "n_unscored": int((~ok).sum()), "test_auc": r.auc}
    row.update(test_ci_low=r.ci_low, test_ci_high=r.ci_high, cv_auc=np.nan)
    threshold = None
    if "threshold" in df.columns and df["threshold"].notna().any():
        threshold = float(df["threshold"].dropna().iloc[0])
    folder = None
    if bundle is not None:
        folder = str(bundle.path.resolve())
        oof = pd.read_csv(bundle.path / "oof.csv", dtype={"case_id": str})
        preds.append(
            predictions_table(name, "train_oof", oof["case_id"], oof["patient_id"], oof["label"], oof["probability"])
        )
        row["cv_auc"] = bundle.metrics.get("auc", {}).get("auc", np.nan)
    return name, preds, row, threshold, folder, features


def _write_manifest_copy(out: Path, table: pd.DataFrame, manifest: str | Path, *, keep_resolved: bool) -> None:
    """``out/manifest.csv``: the evaluated cases with absolute ``image``/``mask`` paths (the report's
    Grad-CAM reads them); ``keep_resolved`` keeps the reader's ``image_path``/``mask_path`` columns."""
    base = Path(manifest).resolve().parent
    mm = table.reset_index()
    for col in ("image", "mask"):
        if col in mm.columns:
            mm[col] = [str((base / v).resolve()) if isinstance(v, str) and v else v for v in mm[col]]
    if not keep_resolved:
        mm = mm.drop(columns=[c for c in ("image_path", "mask_path") if c in mm.columns])
    with atomic_path(out / "manifest.csv") as tmp:
        mm.to_csv(tmp, index=False)


def evaluate_scores(
    scores: Sequence[str | Path],
    manifest: str | Path,
    out: str | Path,
    *,
    label: str = "label",
    title: str = "usher2 evaluation",
    report: bool = True,
    cam_examples: int = 4,
) -> pd.DataFrame:
    """Evaluate saved scores against a labelled manifest: the evaluation directory and its report.

    Args:
        scores: One or more outputs of ``usher2 score`` (a scores CSV with its sidecar, or an output
            folder); each is one model. Their bundles (named by the sidecar) add the training
            out-of-fold predictions, the nested-CV AUC, nomogram and SHAP.
        manifest: The labelled manifest (``case_id``, ``patient_id``, ``label``; images and masks
            for the Grad-CAM examples).
        out: The evaluation directory (``predictions.csv``, ``thresholds.json``, ``summary.json``,
            ``manifest.csv``, ``auc.csv``; see :mod:`usher2.report.cohort`).
        label: The manifest's label column.
        title: The report's title.
        report: Also write ``out/report.html``.
        cam_examples: Grad-CAM examples per group in the report.

    Returns:
        The AUC table: ``model, n, n_unscored, test_auc, test_ci_low, test_ci_high, cv_auc``.

    Raises:
        InputError: Unreadable scores or manifest, no label column, or no scored labelled case.
    """

    from usher2.io.manifest import read_manifest

    out = Path(out)
    man = read_manifest(manifest, check_files=False)
    if label not in man.columns:
        raise InputError(manifest, f"a label column {label!r}", f"columns {list(man.columns)[:8]}")
    man = man.assign(case_id=man["case_id"].astype(str)).drop_duplicates("case_id").set_index("case_id")
    y = pd.to_numeric(man[label], errors="coerce")
    labelled = man.index[y.notna()]
    preds, rows, thresholds, bundles, feature_files = [], [], {}, {}, []
    for s in scores:
        name, model_preds, row, threshold, bundle, features = _evaluate_one(Path(s), thresholds, man, y, labelled)
        preds += model_preds
        if threshold is not None:
            thresholds[name] = threshold
        if bundle is not None:
            bundles[name] = bundle
        if features is not None:
            feature_files.append(features)
        rows.append(row)
    write_predictions(out, preds, thresholds)
    _write_manifest_copy(out, man.loc[labelled], manifest, keep_resolved=False)
    if feature_files:
        import shutil

        with atomic_path(out / "features.parquet") as tmp:
            shutil.copyfile(feature_files[-1], tmp)
    auc = pd.DataFrame(rows)
    with atomic_path(out / "auc.csv") as tmp:
        auc.to_csv(tmp, index=False)
    EvaluationSummary(
        title=title,
        cohort={"test": CohortCounts.from_labels(man.loc[labelled, "patient_id"], y.loc[labelled])},
        primary_model=rows[-1]["model"],
        methods={
            "data": f"Scores {', '.join(str(s) for s in scores)} against the labels of {manifest}.",
            "outcome": f"Binary label column {label!r}.",
            "missing_data": (
                f"{int(sum(r['n_unscored'] for r in rows))} labelled case-model pairs had no score (no lesion "
                "found or failed) and are left out of that model's metrics."
            ),
            "validation": "Scores of an already fitted model on this cohort; thresholds are the bundles' own.",
        },
        bundles=bundles,
    ).write(out)
    if report:
        from usher2.report import write_cohort_report

        write_cohort_report(out, out / "report.html", cam_examples=cam_examples)
    return auc


def evaluation_from_bundle(bundle: str | Path, out: str | Path) -> Path:
    """An evaluation directory of a bundle's own nested-CV results, for :func:`usher2.report.write_cohort_report`.

    ``predictions.csv`` holds the bundle's out-of-fold predictions (split ``train_oof``), the threshold is
    the bundle's, and ``bundles`` points at the bundle (nomogram, SHAP need a feature table: none here).

    Raises:
        InputError: Not a bundle (see :func:`usher2.fusion.bundle.load_bundle`).
    """
    from usher2.fusion.bundle import load_bundle

    b = load_bundle(bundle)
    out = Path(out)
    oof = pd.read_csv(b.path / "oof.csv", dtype={"case_id": str})
    name = str(b.config.family or b.path.name)
    pred = predictions_table(name, "train_oof", oof["case_id"], oof["patient_id"], oof["label"], oof["probability"])
    write_predictions(out, [pred], {name: b.threshold})
    v = b.config.validation
    EvaluationSummary(
        title=f"usher2 bundle report: {b.path.name}",
        cohort={"train": CohortCounts.from_labels(oof["patient_id"], oof["label"])},
        primary_model=name,
        methods={
            "data": f"The training cohort of the bundle {b.path} (no held-out cohort).",
            "model": f"{b.config.fusion} fusion, classifier {b.config.classifier}, calibration "
            f"{b.config.calibration or 'none'}; {len(b.config.selected_features)} selected features.",
            "validation": f"Patient-grouped nested CV ({v.get('outer_folds')} outer, {v.get('inner_folds')} inner "
            f"folds, seed {v.get('seed')}): out-of-fold predictions.",
        },
        bundles={name: str(b.path.resolve())},
    ).write(out)
    return out


def _bundle_dir(model: str) -> str:
    """Where a model's bundle goes inside a run folder (``deep:resnet50`` -> ``bundles/deep-resnet50``)."""
    return f"bundles/{model.replace(':', '-')}"
