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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.evaluate.threshold import youden_threshold
from usher2.features.extract import ID_COLUMNS
from usher2.fusion.bundle import save_bundle
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
    selection = check_selection(selection)
    if perturbations is not None and icc_perturbations is not None:
        wanted = {"original", *map(str, icc_perturbations)}
        perturbations = perturbations[perturbations["perturbation"].astype(str).isin(wanted)]
        found = set(perturbations["perturbation"].astype(str))
        if not found - {"original"} or "original" not in found:
            raise InputError(
                "ICC perturbations", f"'original' and {sorted(wanted - {'original'})} rows in the table", sorted(found)
            )
    confidence = check_confidence(segmentation_confidence) if segmentation_confidence is not None else None
    training_masks = training_masks or str((provenance or {}).get("mask_source") or "given")
    settings = {
        "family": family,
        "sequences": list(sequences or []),
        "classifier": classifier,
        "fusion": fusion,
        "late_sources": late_sources if fusion == "late" else None,
        "label": label,
        "clinical": list(clinical),
        "outer_folds": outer_folds if test_ids is None and folds_column is None else None,
        "inner_folds": inner_folds,
        "calibration": calibration or "none",
        "seed": seed,
        "folds_column": folds_column,
        "fixed_test_cases": len(test_ids) if test_ids is not None else None,
        "icc_filter": perturbations is not None,
        "selection": selection,
        "augment": sorted(map(str, augment_perturbations)) if augment_perturbations else augment is not None,
        "training_masks": training_masks,
    }
    with track_run(track, experiment="usher2-fit", run_name=Path(out).name, params=settings) as tracker:
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
        clin = _clinical(m.loc[used], clinical)
        for c in clin.columns:
            X[c] = clin[c]
        X.index.name = "case_id"
        y = y_all[used].astype(int).to_numpy()
        groups = (m.loc[used, "patient_id"] if "patient_id" in m.columns else pd.Series(used, index=used)).astype(str)
        cols = family_columns(list(X.columns), family, clinical=list(clinical), sequences=sequences)
        columns = cols["radiomics"] + cols["deep"] + cols["clinical"]
        # The model is fitted on exactly the columns the bundle records, in that order, so every door
        # (feature table, frame scorer, service) feeds it the same input (issue 22 §4: a family's
        # bundle used to be fitted on the whole table while config["columns"] named only its own).
        X = X[columns]
        copies, names = None, []
        if augment is not None:
            train_cases = [c for c in used if test_ids is None or c not in set(map(str, test_ids))]
            imaging = cols["radiomics"] + cols["deep"]
            copies = augmentation_rows(augment, imaging, train_cases, augment_perturbations)
            names = list(copies.attrs["perturbations"])
            for c in clin.columns:  # a copy's clinical values are its case's
                copies[c] = clin.loc[copies.index, c].to_numpy()
            copies = copies[columns]
            groups = pd.concat([groups, groups.loc[copies.index]])
            y = np.r_[y, y_all.loc[copies.index].astype(int).to_numpy()]
            X = pd.concat([X, copies])
            X.index.name = "case_id"
        augmented = np.r_[np.zeros(len(used), bool), np.ones(0 if copies is None else len(copies), bool)]
        robustness = mask_robustness(
            variant=mask_variant,
            training_masks=training_masks,
            augment_rows=copies,
            augment_perturbations=names,
            perturbations=perturbations,
            icc_threshold=float(selection.get("icc_threshold", 0.9)),
        )
        robustness["scoring_masks"] = scoring_masks
        model, grid = build_model(
            cols,
            classifier,
            fusion=fusion,
            perturbations=perturbations,
            late_sources=late_sources,
            selector_params=selection,
            random_state=seed,
        )
        kwargs = {"inner_folds": inner_folds, "calibration": calibration, "seed": seed}
        fold_ids = None
        if folds_column is not None:
            if folds_column not in m.columns:
                raise InputError("folds column", f"a manifest column named {folds_column!r}", "none")
            fold_ids = m.loc[used, folds_column].to_numpy()
            if copies is not None:
                fold_ids = np.r_[fold_ids, m.loc[copies.index, folds_column].to_numpy()]
        cv = nested_cv(
            model,
            grid,
            X,
            y,
            groups.to_numpy(),
            outer_folds=outer_folds,
            test_ids=test_ids,
            fold_ids=fold_ids,
            progress=progress,
            augmented=augmented if copies is not None else None,
            **kwargs,
        )
        threshold = youden_threshold(cv.oof["label"], cv.oof["probability"])
        tracker.log_params({"n_cases": len(used), "n_positive": int(y[: len(used)].sum()), "n_columns": len(columns)})
        for fold in cv.folds:
            fold_metrics = {k: fold[k] for k in ("auc", "n_train", "n_test", "seconds")}
            fold_metrics["n_selected"] = len(fold["selected_features"])
            tracker.log_metrics({f"fold_{k}": v for k, v in fold_metrics.items()}, step=fold["fold"])
        keep = np.ones(len(X), bool) if test_ids is None else ~X.index.isin(list(test_ids))
        train, y_train, g_train = X[keep], y[keep], groups[keep]
        if test_ids is not None:  # a fixed split's one fold was fitted on exactly these rows: it is the final model
            final, best = cv.models[0], cv.folds[0]["best_params"]
        else:
            final, best = fit_final(
                model,
                grid,
                train,
                y_train,
                g_train.to_numpy(),
                augmented=augmented[keep] if copies is not None else None,
                **kwargs,
            )
        selected = selected_features(final)
        import sklearn

        import usher2

        config = {
            "family": family,
            "sequences": list(sequences or []),
            "classifier": classifier if fusion == "early" else "late-fusion logistic regression",
            "fusion": fusion,
            "late_sources": late_sources if fusion == "late" else None,
            "calibration": calibration or "none",
            "selection": selection,
            "label": label,
            "clinical": list(clinical),
            # what scoring checks clinical values against (usher2.fusion.clinical): the training rows' range
            "clinical_ranges": clinical_ranges(clin.loc[train.index[~augmented[keep]]]),
            "columns": columns,
            "threshold": threshold,
            "threshold_rule": "Youden on the training cohort's out-of-fold probabilities",
            "best_params": best,
            "selected_features": selected,
            "validation": {
                "outer_folds": outer_folds if test_ids is None else None,
                "inner_folds": inner_folds,
                "fixed_test_ids": list(test_ids) if test_ids is not None else None,
                "folds_column": folds_column,
                "seed": seed,
            },
            "n_cases": len(used),
            "n_positive": int(y[: len(used)].sum()),
            "mask_robustness": robustness,
            "segmentation_confidence": confidence,
            "extraction": provenance or {},
            "training_data": training_data or {},
            "versions": {"usher2": usher2.__version__, "scikit-learn": sklearn.__version__},
        }
        metrics = {
            "auc": cv.auc,
            "folds": cv.folds,
            "threshold": threshold,
            "selected_features": selected,
            "seconds": cv.seconds,
            "n_cases": len(used),
            "n_unlabelled": len(common) - len(used),
            "mask_robustness": robustness,
            "segmentation_confidence": confidence,
        }
        bundle = save_bundle(out, final, config, metrics, cv.oof, overwrite=overwrite, sign_key=sign_key)
        a = cv.auc
        summary = {"auc": a["auc"], "auc_ci_low": a["ci_low"], "auc_ci_high": a["ci_high"], "threshold": threshold}
        tracker.log_metrics({**summary, "n_selected": len(selected), "cv_seconds": cv.seconds})
        tracker.log_params({"best_params": best})
        tracker.set_tags({"bundle": str(Path(bundle).resolve())})
        for name in ("config.json", "metrics.json"):
            tracker.log_artifact(Path(bundle) / name, "bundle")
        return FitResult(bundle, cv, threshold, len(used), len(common) - len(used), selected)
