"""The single end-to-end entry point: frames and a manifest in, bundles, scores and a report out.

:class:`Pipeline` is configured by one YAML file (:class:`PipelineConfig`): the enhancer, the
segmenter and mask source, the radiomics parameters, the deep backbones, the fusion models and
the report options. The CLI (``usher2 fit``/``score``/``evaluate``/``report``/``demo``) and the
service are thin shells around it.

* :meth:`Pipeline.extract` — enhance → segment (or the given masks) → radiomics + lexicon + deep
  features, one Parquet table (resumable; see :mod:`usher2.features.extract`).
* :meth:`Pipeline.fit` — patient-grouped nested CV and the final refit of every configured model
  family, one bundle each (:mod:`usher2.fusion`).
* :meth:`Pipeline.score` — frames (image, DICOM, directory, manifest) through a bundle.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from usher2.io.atomic import atomic_path, atomic_write_text
from usher2.io.errors import InputError

__all__ = ["FAMILY_ORACLE", "Pipeline", "PipelineConfig", "RunResult"]

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
        radiomics: pyradiomics parameters (a YAML path or a dict); None: the defaults.
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
        workers: Dask workers for extraction (None: in-process).
        cam_examples: Grad-CAM examples per group in the report.
    """

    enhancer: str | None = None
    segmenter: str = "unet"
    masks: str = "given"
    radiomics: str | dict[str, Any] | None = None
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
    cam_examples: int = 3

    def __post_init__(self) -> None:
        from usher2.fusion.models import FAMILIES

        for name in ("backbones", "models", "clinical"):
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
            raise InputError("clinical", f"clinical columns for the {need} models", "none", fix="set clinical: [...]")
        primary = self.primary_model or self.models[-1]
        if primary not in self.models:
            raise InputError("primary_model", f"one of the fitted models {list(self.models)}", repr(primary))
        object.__setattr__(self, "primary_model", primary)
        if self.calibration in ("none", ""):
            object.__setattr__(self, "calibration", None)
        if self.enhancer in ("none", ""):
            object.__setattr__(self, "enhancer", None)
        self.extract_config()  # checks masks, enhancer, backbones and the radiomics parameters

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineConfig:
        """Read a YAML file of the attributes; an unknown key is an error that lists the known ones."""
        import yaml

        p = Path(path)
        if not p.is_file():
            raise InputError(p, "a pipeline YAML file", "no such file")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise InputError(p, "valid YAML", f"a parse error: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(p, "a mapping of settings", type(data).__name__)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(p, f"keys among {', '.join(sorted(known))}", f"unknown keys {unknown}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def extract_config(self) -> Any:
        from usher2.features.extract import ExtractConfig

        return ExtractConfig(
            params=self.radiomics,
            lexicon=self.lexicon,
            backbones=self.backbones,
            masks=self.masks,
            enhancer=self.enhancer,
            segmenter=self.segmenter,
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
    def extract(self, manifest: str | Path, out: str | Path) -> tuple[pd.DataFrame, dict[str, Any], Any]:
        """Features of every case of ``manifest`` into ``out`` (Parquet); returns (table, provenance, result)."""
        from usher2.features.extract import extract_cohort, read_feature_table

        with self.progress(f"extract {Path(manifest).parent.name or Path(manifest).stem}") as update:
            res = extract_cohort(
                manifest, out, self.config.extract_config(), workers=self.config.workers, progress=update
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
        from usher2.features.extract import read_feature_table
        from usher2.fusion.fit import fit_cohort
        from usher2.io.hashing import file_sha256
        from usher2.io.manifest import read_manifest

        out = Path(out)
        cfg = self.config
        df = read_manifest(manifest, check_files=features is None)
        if features is None:
            features = out / "train_features.parquet"
            table, prov, _ = self.extract(manifest, features)
        else:
            table, prov = read_feature_table(features)
        training = {
            "features_sha256": file_sha256(features),
            "manifest_sha256": file_sha256(manifest),
            "inputs": prov.get("inputs", []),
        }
        extraction = {k: v for k, v in prov.items() if k != "inputs"}
        results = {}
        for model in cfg.models:
            with self.progress(f"nested CV: {model}") as update:
                results[model] = fit_cohort(
                    table,
                    df,
                    out / _bundle_dir(model),
                    label=cfg.label,
                    clinical=list(cfg.clinical) if model in _NEEDS_CLINICAL else [],
                    family=model,
                    classifier=cfg.classifier,
                    fusion=cfg.fusion,
                    outer_folds=cfg.outer_folds,
                    inner_folds=cfg.inner_folds,
                    calibration=cfg.calibration,
                    seed=cfg.seed,
                    provenance=extraction,
                    training_data=training,
                    overwrite=overwrite,
                    progress=update,
                )
            auc = results[model].cv.auc
            self.log(f"{model}: nested-CV AUC {auc['auc']:.3f} ({auc['ci_low']:.3f}-{auc['ci_high']:.3f})")
        return results

    def score(self, source: str | Path, bundle: str | Path, out: str | Path, **kwargs: Any) -> Any:
        """Score frames with a bundle (:func:`usher2.fusion.score.score_inputs`)."""
        from usher2.fusion.score import score_inputs

        with self.progress("score") as update:
            return score_inputs(source, bundle, out, workers=self.config.workers, progress=update, **kwargs)

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

        import usher2
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
            p = bundle.predict_proba(X)
            oof = fit.cv.oof
            preds.append(
                _predictions(model, "train_oof", oof.index, oof["patient_id"], oof["label"], oof["probability"])
            )
            preds.append(_predictions(model, "test", X.index, m["patient_id"], y_test, p))
            labelled = y_test.notna().to_numpy()
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
        predictions = pd.concat(preds, ignore_index=True)
        with atomic_path(out / "predictions.csv") as tmp:
            predictions.to_csv(tmp, index=False)
        atomic_write_text(out / "thresholds.json", json.dumps(thresholds, indent=2))
        with atomic_path(out / "manifest.csv") as tmp:
            base = Path(manifest).resolve().parent
            mm = m.reset_index()
            for col in ("image", "mask"):
                if col in mm.columns:
                    mm[col] = [str((base / v).resolve()) if isinstance(v, str) and v else v for v in mm[col]]
            mm.to_csv(tmp, index=False)
        train_oof = next(iter(fits.values())).cv.oof
        summary = {
            "title": title,
            "usher2": usher2.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cohort": {
                "train": _cohort_counts(train_oof["patient_id"], train_oof["label"]),
                "test": _cohort_counts(m["patient_id"], y_test),
            },
            "oracle_auc": {k: v for k, v in (oracle or {}).items() if k in fits},
            "primary_model": cfg.primary_model,
            "methods": self._methods(data_description, len(res.failed_cases)),
            "bundles": {model: _bundle_dir(model) for model in fits},
            "config": cfg.to_dict(),
        }
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
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


def _bundle_dir(model: str) -> str:
    """Where a model's bundle goes inside a run folder (``deep:resnet50`` -> ``bundles/deep-resnet50``)."""
    return f"bundles/{model.replace(':', '-')}"


def _predictions(model: str, split: str, cases: Any, patients: Any, labels: Any, prob: Any) -> pd.DataFrame:
    """Rows of ``predictions.csv`` for one model and split."""
    import numpy as np

    return pd.DataFrame(
        {
            "case_id": np.asarray(cases).astype(str),
            "patient_id": np.asarray(patients).astype(str),
            "label": np.asarray(labels),
            "model": model,
            "split": split,
            "probability": np.asarray(prob, dtype=float),
        }
    )


def _cohort_counts(patients: Sequence[Any], labels: Any) -> dict[str, Any]:
    y = pd.to_numeric(pd.Series(list(labels)), errors="coerce")
    return {
        "n": len(y),
        "patients": int(pd.Series(list(patients)).nunique()),
        "positives": int((y == 1).sum()),
        "unlabelled": int(y.isna().sum()),
    }
