"""``usher2 fit``: feature table + manifest labels/clinical columns -> nested-CV estimate + model bundle.

Rows are joined on ``case_id``. Cases without a label are not used for fitting (their count is
reported). Clinical columns must be numeric (missing values are imputed inside the folds); the
error names a column that is not. The decision threshold stored in the bundle is Youden's on
the out-of-fold probabilities of the training cohort (never on test data).

**Fitting for the masks the model will see** (issue 23). A model scored on segmenter masks can be
fitted for them in three ways, recorded in the bundle as ``config["mask_robustness"]`` (and in
``metrics.json``):

* ``training_masks``: the masks the feature table was extracted from: ``given`` (annotated),
  ``predicted`` (a segmenter that saw those frames) or ``out-of-fold`` (a segmenter's
  predictions for frames of patients it did not train on; pass ``training_masks``).
* ``augment``: a long table (``case_id``, ``perturbation``, features; e.g. the ``contour-<k>``
  rows of ``usher2 extract --perturb``, redrawn contours at a segmenter's error scale) whose rows
  are added to the training data as copies of their case (:func:`augmentation_rows`); they stay
  with their patient in every split and are never evaluated (:mod:`usher2.fusion.cv`).
* ``perturbations`` (the ICC filter): the ICC is computed over whatever perturbations the table
  holds; ``icc_perturbations`` restricts it (e.g. ``["mask_predicted"]``: features reproducible
  between given and predicted masks).

``segmentation_confidence`` (from :func:`~usher2.fusion.confidence.calibrate_confidence`) sets
the uncertainty above which ``usher2 score`` flags ``low_segmentation_confidence`` for this
bundle (instead of :data:`~usher2.fusion.confidence.LOW_CONFIDENCE`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.evaluate.threshold import youden_threshold
from usher2.features.extract import ID_COLUMNS
from usher2.fusion.bundle import save_bundle
from usher2.fusion.bundle_config import FORMAT as BUNDLE_FORMAT
from usher2.fusion.bundle_config import BundleConfig
from usher2.fusion.clinical import clinical_ranges
from usher2.fusion.confidence import check_confidence
from usher2.fusion.cv import CVResult, fit_final, nested_cv, selected_features
from usher2.fusion.models import build_model, check_selection, family_columns
from usher2.io.errors import InputError
from usher2.tracking import track_run

__all__ = ["FitResult", "augmentation_rows", "fit_cohort", "mask_robustness", "youden_threshold"]


@dataclass
class FitResult:
    """What ``fit_cohort`` produced."""

    bundle: Path
    cv: CVResult
    threshold: float
    n_used: int
    n_unlabelled: int
    selected: list[str]


def _clinical(df: pd.DataFrame, clinical: Sequence[str]) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for c in clinical:
        if c not in df.columns:
            raise InputError("clinical", f"a column of the manifest or feature table named {c!r}", "none")
        values = pd.to_numeric(df[c], errors="coerce")
        bad = values.isna() & df[c].notna()
        if bad.any():
            examples = sorted(map(str, df.loc[bad, c].unique()))[:3]
            raise InputError(f"clinical column {c!r}", "numbers (or empty cells)", f"values like {examples}")
        out[c] = values.astype(float)
    return out


def augmentation_rows(
    augment: pd.DataFrame, columns: Sequence[str], cases: Sequence[str], perturbations: Sequence[str] | None = None
) -> pd.DataFrame:
    """The training copies in a long perturbation table: rows of ``cases`` (not ``original``), indexed by
    ``case_id``, with ``columns``.

    Args:
        augment: ``case_id``, ``perturbation`` and feature columns (``usher2 extract --perturb``).
        columns: The feature columns the model reads (clinical columns are filled in by the caller).
        cases: The training cases (copies of other cases are dropped).
        perturbations: Which perturbations to use; None: every one but ``original``.

    Raises:
        InputError: No ``case_id``/``perturbation`` column, a feature column missing, or no rows left.

    Example:
        >>> t = pd.DataFrame({"case_id": ["a", "a", "b"], "perturbation": ["original", "contour-1", "contour-1"],
        ...                   "radiomics_x": [1.0, 1.1, 2.0]})
        >>> augmentation_rows(t, ["radiomics_x"], ["a"]).to_dict("index")
        {'a': {'radiomics_x': 1.1}}
    """
    missing = {"case_id", "perturbation"} - set(augment.columns)
    if missing:
        raise InputError("augmentation table", "case_id and perturbation columns", f"missing {sorted(missing)}")
    lacking = [c for c in columns if c not in augment.columns]
    if lacking:
        raise InputError("augmentation table", "every feature column the model reads", f"missing {lacking[:3]}")
    rows = augment[augment["perturbation"].astype(str) != "original"]
    if perturbations is not None:
        rows = rows[rows["perturbation"].astype(str).isin(list(perturbations))]
    rows = rows[rows["case_id"].astype(str).isin(set(map(str, cases)))]
    if rows.empty:
        what = f"perturbations {sorted(perturbations)}" if perturbations is not None else "perturbed rows"
        raise InputError("augmentation table", f"{what} of training cases", "none")
    out = rows[list(columns)].copy()
    out.index = pd.Index(rows["case_id"].astype(str).tolist(), name="case_id")
    out.attrs["perturbations"] = sorted(map(str, rows["perturbation"].unique()))
    return out


def mask_robustness(
    *,
    variant: str | None,
    training_masks: str,
    augment_rows: pd.DataFrame | None,
    augment_perturbations: Sequence[str],
    perturbations: pd.DataFrame | None,
    icc_threshold: float,
) -> dict[str, Any]:
    """The record of how a fit prepared for segmentation error (``config["mask_robustness"]``)."""
    icc = None
    if perturbations is not None and "perturbation" in perturbations.columns:
        icc = {"perturbations": sorted(map(str, perturbations["perturbation"].unique())), "threshold": icc_threshold}
    aug = None
    if augment_rows is not None:
        per_case = augment_rows.groupby(level=0).size()
        aug = {
            "perturbations": sorted(augment_perturbations),
            "rows": len(augment_rows),
            "cases": len(per_case),
            "copies_per_case": float(per_case.mean()),
        }
    if variant is None:
        variant = "+".join(
            [training_masks if training_masks != "given" else "given"]
            + (["augment"] if aug else [])
            + (["icc"] if icc else [])
        )
    return {"variant": variant, "training_masks": training_masks, "augmentation": aug, "icc": icc}


@dataclass
class _FitArgs:
    """The arguments of :func:`fit_cohort`, by name (see there); ``selection``, ``perturbations`` and
    ``training_masks`` hold their checked values once :func:`fit_cohort` has set them."""

    features: pd.DataFrame
    manifest: pd.DataFrame
    out: str | Path
    label: str
    clinical: Sequence[str]
    family: str
    sequences: Sequence[str] | None
    classifier: str
    fusion: str
    late_sources: str
    outer_folds: int
    inner_folds: int
    calibration: str | None
    seed: int
    perturbations: pd.DataFrame | None
    test_ids: Sequence[str] | None
    folds_column: str | None
    provenance: dict[str, Any] | None
    training_data: dict[str, Any] | None
    overwrite: bool
    progress: Callable[[int, int], None] | None
    selection: dict[str, Any] | None
    sign_key: bytes | None
    track: str | None
    augment: pd.DataFrame | None
    augment_perturbations: Sequence[str] | None
    icc_perturbations: Sequence[str] | None
    training_masks: str | None
    mask_variant: str | None
    segmentation_confidence: dict[str, Any] | None
    scoring_masks: str | None

    @property
    def search(self) -> dict[str, Any]:
        """The settings of the inner search and calibration (:func:`nested_cv`, :func:`fit_final`)."""
        return {"inner_folds": self.inner_folds, "calibration": self.calibration, "seed": self.seed}


@dataclass
class _Cohort:
    """The rows a fit learns from: the labelled cases shared by manifest and feature table, then any
    augmented copies (appended after them)."""

    manifest: pd.DataFrame  # one row per case, indexed by case_id
    common: list[str]  # cases in both the manifest and the feature table
    used: list[str]  # those with a label, in feature-table order
    labels: pd.Series  # the numeric label of every common case (NaN: unlabelled)
    clinical: pd.DataFrame  # the clinical columns of the used cases
    cols: dict[str, list[str]]  # the family's columns by source (family_columns)
    columns: list[str]  # the columns the model reads, in order
    X: pd.DataFrame
    y: np.ndarray
    groups: pd.Series  # patient of every row
    copies: pd.DataFrame | None = None  # the augmented rows of X (None: no augmentation)
    names: list[str] = field(default_factory=list)  # their perturbations

    @property
    def augmented(self) -> np.ndarray:
        """True for the rows of ``X`` that are augmented copies."""
        return np.r_[np.zeros(len(self.used), bool), np.ones(0 if self.copies is None else len(self.copies), bool)]

    @property
    def n_positive(self) -> int:
        """Positive cases (copies not counted)."""
        return int(self.y[: len(self.used)].sum())


def _icc_rows(perturbations: pd.DataFrame | None, icc_perturbations: Sequence[str] | None) -> pd.DataFrame | None:
    """The rows of the perturbation table the ICC filter uses: ``original`` and ``icc_perturbations``
    (all rows when None).

    Raises:
        InputError: The table lacks ``original`` rows or rows of every other perturbation asked for.
    """
    if perturbations is None or icc_perturbations is None:
        return perturbations
    wanted = {"original", *map(str, icc_perturbations)}
    perturbations = perturbations[perturbations["perturbation"].astype(str).isin(wanted)]
    found = set(perturbations["perturbation"].astype(str))
    if not found - {"original"} or "original" not in found:
        raise InputError(
            "ICC perturbations", f"'original' and {sorted(wanted - {'original'})} rows in the table", sorted(found)
        )
    return perturbations


def _settings(a: _FitArgs) -> dict[str, Any]:
    """The settings of a fit, as the tracked run's parameters."""
    return {
        "family": a.family,
        "sequences": list(a.sequences or []),
        "classifier": a.classifier,
        "fusion": a.fusion,
        "late_sources": a.late_sources if a.fusion == "late" else None,
        "label": a.label,
        "clinical": list(a.clinical),
        "outer_folds": a.outer_folds if a.test_ids is None and a.folds_column is None else None,
        "inner_folds": a.inner_folds,
        "calibration": a.calibration or "none",
        "seed": a.seed,
        "folds_column": a.folds_column,
        "fixed_test_cases": len(a.test_ids) if a.test_ids is not None else None,
        "icc_filter": a.perturbations is not None,
        "selection": a.selection,
        "augment": sorted(map(str, a.augment_perturbations)) if a.augment_perturbations else a.augment is not None,
        "training_masks": a.training_masks,
    }


def _cohort(a: _FitArgs) -> _Cohort:
    """Join the feature table and the manifest on ``case_id``: the labelled cases, with their clinical
    columns, reduced to the columns of the model family.

    Raises:
        InputError: No ``case_id`` or label column, no case in common, a bad clinical column or family.
    """
    manifest, features, label = a.manifest, a.features, a.label
    if "case_id" not in manifest.columns or "case_id" not in features.columns:
        raise InputError("case_id", "a case_id column in both the manifest and the feature table", "none")
    if label not in manifest.columns:
        raise InputError("label", f"a manifest column named {label!r}", f"columns {list(manifest.columns)[:8]}")
    m = manifest.drop_duplicates("case_id")
    m.index = pd.Index(m["case_id"].astype(str).tolist())
    f = features.copy()
    f.index = pd.Index(f["case_id"].astype(str).tolist())
    f = f[[c for c in f.columns if c not in ID_COLUMNS]]
    common = [c for c in f.index if c in m.index]
    if not common:
        raise InputError("case_id", "cases shared by the manifest and the feature table", "none in common")
    y_all = pd.to_numeric(m.loc[common, label], errors="coerce")
    used = [c for c in common if pd.notna(y_all[c])]
    X = f.loc[used].copy()
    clin = _clinical(m.loc[used], a.clinical)
    for c in clin.columns:
        X[c] = clin[c]
    X.index.name = "case_id"
    y = y_all[used].astype(int).to_numpy()
    groups = (m.loc[used, "patient_id"] if "patient_id" in m.columns else pd.Series(used, index=used)).astype(str)
    cols = family_columns(list(X.columns), a.family, clinical=list(a.clinical), sequences=a.sequences)
    columns = cols["radiomics"] + cols["deep"] + cols["clinical"]
    # The model is fitted on exactly the columns the bundle records, in that order, so every door
    # (feature table, frame scorer, service) feeds it the same input (issue 22 §4: a family's
    # bundle used to be fitted on the whole table while config["columns"] named only its own).
    X = X[columns]
    return _Cohort(m, common, used, y_all, clin, cols, columns, X, y, groups)


def _add_copies(data: _Cohort, a: _FitArgs) -> _Cohort:
    """Append the augmented copies of the training cases (``a.augment``) to ``data``, in place.

    A copy has its case's label, patient and clinical values; copies of test cases are left out.
    """
    if a.augment is None:
        return data
    train_cases = [c for c in data.used if a.test_ids is None or c not in set(map(str, a.test_ids))]
    imaging = data.cols["radiomics"] + data.cols["deep"]
    copies = augmentation_rows(a.augment, imaging, train_cases, a.augment_perturbations)
    data.names = list(copies.attrs["perturbations"])
    for c in data.clinical.columns:  # a copy's clinical values are its case's
        copies[c] = data.clinical.loc[copies.index, c].to_numpy()
    data.copies = copies = copies[data.columns]
    data.groups = pd.concat([data.groups, data.groups.loc[copies.index]])
    data.y = np.r_[data.y, data.labels.loc[copies.index].astype(int).to_numpy()]
    data.X = pd.concat([data.X, copies])
    data.X.index.name = "case_id"
    return data


def _robustness(a: _FitArgs, data: _Cohort) -> dict[str, Any]:
    """The mask-robustness record of the fit (:func:`mask_robustness`) with its ``scoring_masks``."""
    robustness = mask_robustness(
        perturbations=a.perturbations,
        icc_threshold=float(a.selection.get("icc_threshold", 0.9)),
        variant=a.mask_variant,
        training_masks=a.training_masks,
        augment_rows=data.copies,
        augment_perturbations=data.names,
    )
    robustness["scoring_masks"] = a.scoring_masks
    return robustness


def _model(a: _FitArgs, data: _Cohort) -> tuple[Any, dict[str, list[Any]]]:
    """The unfitted model and its search grid (:func:`~usher2.fusion.models.build_model`)."""
    return build_model(
        data.cols,
        a.classifier,
        fusion=a.fusion,
        perturbations=a.perturbations,
        late_sources=a.late_sources,
        selector_params=a.selection,
        random_state=a.seed,
    )


def _cross_validate(a: _FitArgs, data: _Cohort, model: Any, grid: dict[str, list[Any]]) -> CVResult:
    """Nested CV of the model on the cohort (outer folds, a fixed test part or a folds column).

    Raises:
        InputError: ``folds_column`` is not a manifest column (and whatever :func:`nested_cv` raises).
    """
    fold_ids = None
    if a.folds_column is not None:
        if a.folds_column not in data.manifest.columns:
            raise InputError("folds column", f"a manifest column named {a.folds_column!r}", "none")
        fold_ids = data.manifest.loc[data.used, a.folds_column].to_numpy()
        if data.copies is not None:
            fold_ids = np.r_[fold_ids, data.manifest.loc[data.copies.index, a.folds_column].to_numpy()]
    return nested_cv(
        model,
        grid,
        data.X,
        data.y,
        data.groups.to_numpy(),
        outer_folds=a.outer_folds,
        test_ids=a.test_ids,
        fold_ids=fold_ids,
        progress=a.progress,
        augmented=data.augmented if data.copies is not None else None,
        **a.search,
    )


def _log_folds(tracker: Any, data: _Cohort, cv: CVResult) -> None:
    """Track the data's size and each outer fold's metrics (``step`` = fold)."""
    tracker.log_params({"n_cases": len(data.used), "n_positive": data.n_positive, "n_columns": len(data.columns)})
    for fold in cv.folds:
        fold_metrics = {k: fold[k] for k in ("auc", "n_train", "n_test", "seconds")}
        fold_metrics["n_selected"] = len(fold["selected_features"])
        tracker.log_metrics({f"fold_{k}": v for k, v in fold_metrics.items()}, step=fold["fold"])


def _final_model(
    a: _FitArgs, data: _Cohort, model: Any, grid: dict[str, list[Any]], cv: CVResult
) -> tuple[Any, dict[str, Any], pd.Index]:
    """The model the bundle holds, its best parameters and the training cases it was fitted on (copies
    not counted): a refit on every row but a fixed test part's, or a fixed split's one fold model."""
    test_ids = a.test_ids
    augmented = data.augmented
    keep = np.ones(len(data.X), bool) if test_ids is None else ~data.X.index.isin(list(test_ids))
    train, y_train, g_train = data.X[keep], data.y[keep], data.groups[keep]
    if test_ids is not None:  # a fixed split's one fold was fitted on exactly these rows: it is the final model
        final, best = cv.models[0], cv.folds[0]["best_params"]
    else:
        final, best = fit_final(
            model,
            grid,
            train,
            y_train,
            g_train.to_numpy(),
            augmented=augmented[keep] if data.copies is not None else None,
            **a.search,
        )
    return final, best, train.index[~augmented[keep]]


def _config(a: _FitArgs, data: _Cohort, fit: dict[str, Any], training_cases: pd.Index) -> BundleConfig:
    """The bundle's settings (``config.json``); ``fit`` holds ``threshold``, ``best_params``, ``selected_features``,
    ``mask_robustness`` and ``segmentation_confidence``."""
    import sklearn

    import usher2

    test_ids, fusion = a.test_ids, a.fusion
    doc = {
        "format": BUNDLE_FORMAT,
        "family": a.family,
        "sequences": list(a.sequences or []),
        "classifier": a.classifier if fusion == "early" else "late-fusion logistic regression",
        "fusion": fusion,
        "late_sources": a.late_sources if fusion == "late" else None,
        "calibration": a.calibration or "none",
        "selection": a.selection,
        "label": a.label,
        "clinical": list(a.clinical),
        # what scoring checks clinical values against (usher2.fusion.clinical): the training rows' range
        "clinical_ranges": clinical_ranges(data.clinical.loc[training_cases]),
        "columns": data.columns,
        "threshold": fit["threshold"],
        "threshold_rule": "Youden on the training cohort's out-of-fold probabilities",
        "best_params": fit["best_params"],
        "selected_features": fit["selected_features"],
        "validation": {
            "outer_folds": a.outer_folds if test_ids is None else None,
            "inner_folds": a.inner_folds,
            "fixed_test_ids": list(test_ids) if test_ids is not None else None,
            "folds_column": a.folds_column,
            "seed": a.seed,
        },
        "n_cases": len(data.used),
        "n_positive": data.n_positive,
        "mask_robustness": fit["mask_robustness"],
        "segmentation_confidence": fit["segmentation_confidence"],
        "extraction": a.provenance or {},
        "training_data": a.training_data or {},
        "versions": {"usher2": usher2.__version__, "scikit-learn": sklearn.__version__},
    }
    return BundleConfig.from_dict(doc, where="bundle config")


def _metrics(data: _Cohort, cv: CVResult, fit: dict[str, Any]) -> dict[str, Any]:
    """The bundle's ``metrics.json`` (``fit`` as in :func:`_config`)."""
    return {
        "auc": cv.auc,
        "folds": cv.folds,
        "threshold": fit["threshold"],
        "selected_features": fit["selected_features"],
        "seconds": cv.seconds,
        "n_cases": len(data.used),
        "n_unlabelled": len(data.common) - len(data.used),
        "mask_robustness": fit["mask_robustness"],
        "segmentation_confidence": fit["segmentation_confidence"],
    }


def _log_summary(tracker: Any, cv: CVResult, fit: dict[str, Any], bundle: Path) -> None:
    """Track the summary metrics, the best parameters and the bundle (its config and metrics as artefacts)."""
    a = cv.auc
    summary = {"auc": a["auc"], "auc_ci_low": a["ci_low"], "auc_ci_high": a["ci_high"], "threshold": fit["threshold"]}
    tracker.log_metrics({**summary, "n_selected": len(fit["selected_features"]), "cv_seconds": cv.seconds})
    tracker.log_params({"best_params": fit["best_params"]})
    tracker.set_tags({"bundle": str(Path(bundle).resolve())})
    for name in ("config.json", "metrics.json"):
        tracker.log_artifact(Path(bundle) / name, "bundle")


def fit_cohort(
    features: pd.DataFrame,
    manifest: pd.DataFrame,
    out: str | Path,
    *,
    label: str = "label",
    clinical: Sequence[str] = (),
    family: str = "combined",
    sequences: Sequence[str] | None = None,
    classifier: str = "lr",
    fusion: str = "early",
    late_sources: str = "family",
    outer_folds: int = 5,
    inner_folds: int = 3,
    calibration: str | None = "sigmoid",
    seed: int = 0,
    perturbations: pd.DataFrame | None = None,
    test_ids: Sequence[str] | None = None,
    folds_column: str | None = None,
    provenance: dict[str, Any] | None = None,
    training_data: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    selection: dict[str, Any] | None = None,
    sign_key: bytes | None = None,
    track: str | None = None,
    augment: pd.DataFrame | None = None,
    augment_perturbations: Sequence[str] | None = None,
    icc_perturbations: Sequence[str] | None = None,
    training_masks: str | None = None,
    mask_variant: str | None = None,
    segmentation_confidence: dict[str, Any] | None = None,
    scoring_masks: str | None = None,
) -> FitResult:
    """Nested CV, final refit and bundle. See the module docstring for the data rules.

    ``selection`` sets the selection pipelines (keys of :data:`usher2.fusion.models.SELECTION_KEYS`:
    the univariate, correlation, ICC and LASSO settings, and ``clinical_alpha``); it is recorded in
    the bundle. ``sign_key`` also writes the bundle's ``signature.json`` (see
    :func:`~usher2.fusion.bundle.save_bundle`), inside the same atomic write.

    ``track`` is an MLflow tracking URI (e.g. ``"file:./mlruns"``; None: no tracking). The fit is
    then one run in the ``usher2-fit`` experiment: the settings as parameters (``family``,
    ``classifier``, ``fusion``, folds, ``selection.*``, ... and the data's ``n_cases``,
    ``n_positive``, ``n_columns``), per outer fold (``step`` = fold) ``fold_auc``,
    ``fold_n_train``, ``fold_n_test``, ``fold_n_selected`` and ``fold_seconds``, the summary
    ``auc``, ``auc_ci_low``, ``auc_ci_high``, ``threshold`` and ``n_selected``, and the bundle's
    ``config.json`` and ``metrics.json`` as artefacts. See :mod:`usher2.tracking`.

    Fitting for predicted masks (see the module docstring): ``augment`` (a long perturbation
    table whose rows, of ``augment_perturbations`` or all but ``original``, become training copies
    of their case), ``icc_perturbations`` (the perturbations of ``perturbations`` the ICC filter
    uses, plus ``original``), ``training_masks`` (what the feature table's masks are; default:
    the extraction's mask source), ``mask_variant`` (a name for the record),
    ``segmentation_confidence`` (a calibrated flag threshold, stored for ``usher2 score``) and
    ``scoring_masks`` (``"predicted"``/``"given"``: what the fit prepared for, for the record).
    """
    a = _FitArgs(**locals())  # the first statement, so locals() holds exactly the arguments
    a.selection = check_selection(selection)
    a.perturbations = _icc_rows(perturbations, icc_perturbations)
    confidence = check_confidence(segmentation_confidence) if segmentation_confidence is not None else None
    a.training_masks = training_masks or str((provenance or {}).get("mask_source") or "given")
    with track_run(track, experiment="usher2-fit", run_name=Path(out).name, params=_settings(a)) as tracker:
        data = _add_copies(_cohort(a), a)
        robustness = _robustness(a, data)
        model, grid = _model(a, data)
        cv = _cross_validate(a, data, model, grid)
        threshold = youden_threshold(cv.oof["label"], cv.oof["probability"])
        _log_folds(tracker, data, cv)
        final, best, training_cases = _final_model(a, data, model, grid, cv)
        selected = selected_features(final)
        fit = {
            "threshold": threshold,
            "best_params": best,
            "selected_features": selected,
            "mask_robustness": robustness,
            "segmentation_confidence": confidence,
        }
        config, metrics = _config(a, data, fit, training_cases), _metrics(data, cv, fit)
        bundle = save_bundle(out, final, config, metrics, cv.oof, overwrite=overwrite, sign_key=sign_key)
        _log_summary(tracker, cv, fit, bundle)
        return FitResult(bundle, cv, threshold, len(data.used), len(data.common) - len(data.used), selected)
