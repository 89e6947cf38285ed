"""Patient-grouped nested cross-validation, a fixed-split option, and the final refit.

**Nested CV.** The outer loop (``StratifiedGroupKFold``, patients never split) estimates; in
each outer training part the inner loop (again patient-grouped) searches the hyperparameter
grid by AUC, then the chosen model is calibrated (Platt ``sigmoid`` or ``isotonic``, on
inner-fold out-of-fold scores, patient-grouped) and scores the outer test part. Every
selection, imputation and scaling step is part of the model, so it is fitted on training rows
only. The out-of-fold probabilities of all outer folds give the AUC with its DeLong CI.

**Fixed split.** ``test_ids`` (case ids) reproduces a study's train/test protocol (e.g. 160/41):
the model is tuned by inner CV on the training part and evaluated once on the test part.

**Final model.** The same search + calibration on all training rows; that is what a bundle holds.

**Augmented rows** (``augmented``: a boolean per row of ``X``): copies of training cases with
perturbed features (e.g. features of a redrawn lesion contour, :func:`~usher2.fusion.fit.augmentation_rows`).
A copy carries its case's index (``case_id``), label and patient, and always sits on the same side
of every split as its patient: the outer and inner folds are drawn over the unperturbed rows and
each copy joins its patient's training part. Copies are trained on and never evaluated: the outer
test parts and the inner search's validation parts hold unperturbed rows only. The calibration
map is fitted on the inner out-of-fold scores of all rows (unperturbed and copies, patient-grouped),
as the scores it maps at scoring time come from masks with errors too.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

from usher2.evaluate.roc import roc_auc_ci
from usher2.io.errors import InputError

__all__ = ["CVResult", "fit_final", "nested_cv", "selected_features"]


@dataclass
class CVResult:
    """Out-of-fold predictions and their summary.

    Attributes:
        oof: ``case_id`` (index), ``patient_id``, ``fold``, ``label``, ``probability``.
        auc: ``{"auc", "ci_low", "ci_high", "variance", "method", ...}`` of the out-of-fold scores.
        folds: Per outer fold: AUC, best parameters, selected features, seconds.
        seconds: Wall time of the whole loop.
        models: The fitted model of each outer fold (a fixed split's is its final model).
    """

    oof: pd.DataFrame
    auc: dict[str, Any]
    folds: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    models: list[Any] = field(default_factory=list, repr=False)


def _check(X: pd.DataFrame, y: Any, groups: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(X, pd.DataFrame):
        raise InputError("features", "a DataFrame indexed by case_id", type(X).__name__)
    yy = np.asarray(y)
    gg = np.asarray(groups if groups is not None else X.index)
    if len(yy) != len(X) or len(gg) != len(X):
        raise InputError("labels", f"{len(X)} labels and groups (one per row)", f"{len(yy)} and {len(gg)}")
    if pd.isna(yy).any():
        raise InputError("label", "0 or 1 for every case used in fitting", f"{int(pd.isna(yy).sum())} missing")
    values = set(np.unique(yy).tolist())
    if not values <= {0, 1} or len(values) != 2:
        raise InputError("label", "both classes 0 and 1", f"values {sorted(values)}")
    return yy.astype(int), gg


def _search(model: Any, grid: dict[str, list[Any]], inner: Any, seed: int) -> GridSearchCV:
    cv = StratifiedGroupKFold(n_splits=inner, shuffle=True, random_state=seed) if isinstance(inner, int) else inner
    return GridSearchCV(clone(model), grid, cv=cv, scoring="roc_auc", refit=False, n_jobs=1, error_score="raise")


def _with_copies(
    splits: list[tuple[np.ndarray, np.ndarray]], base: np.ndarray, copies: np.ndarray, groups: np.ndarray
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """Splits drawn over the unperturbed rows ``base`` (positions into ``base``), as row numbers of
    all rows: (search splits: copies join their patient's training part and are never validated on;
    calibration splits: a partition of every row, copies on their patient's side)."""
    search, calib = [], []
    for tr, te in splits:
        tr_copies = copies[np.isin(groups[copies], groups[base[tr]])]
        te_copies = copies[np.isin(groups[copies], groups[base[te]])]
        search.append((np.r_[base[tr], tr_copies], base[te]))
        calib.append((np.r_[base[tr], tr_copies], np.r_[base[te], te_copies]))
    return search, calib


def _fit_one(
    model: Any,
    grid: dict[str, list[Any]],
    X: pd.DataFrame,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    inner: int,
    calibration: str | None,
    seed: int,
    augmented: np.ndarray | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Inner search, then the calibrated refit on all of (X, y). Returns (model, best params)."""
    aug = np.zeros(len(X), bool) if augmented is None else np.asarray(augmented, bool)
    base = np.flatnonzero(~aug)
    yb, gb = y[base], groups[base]
    inner = int(max(2, min(inner, len(np.unique(gb[yb == 1])), len(np.unique(gb[yb == 0])))))
    folds = StratifiedGroupKFold(n_splits=inner, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # LightGBM/sklearn feature-name chatter
        if aug.any():
            search_splits, calib_splits = _with_copies(
                list(folds.split(X.iloc[base], yb, gb)), base, np.flatnonzero(aug), groups
            )
            search = _search(model, grid, search_splits, seed).fit(X, y)
        else:
            search = _search(model, grid, inner, seed).fit(X, y, groups=groups)
            calib_splits = None
        best = clone(model).set_params(**search.best_params_)
        if calibration:
            splits = calib_splits if calib_splits is not None else list(folds.split(X, y, groups))
            fitted = CalibratedClassifierCV(best, method=calibration, cv=splits, ensemble=False).fit(X, y)
        else:
            fitted = best.fit(X, y)
    return fitted, dict(search.best_params_)


def selected_features(fitted: Any) -> list[str]:
    """Names of the columns the classifier receives (after every selection step)."""
    est = fitted.calibrated_classifiers_[0].estimator if isinstance(fitted, CalibratedClassifierCV) else fitted
    if hasattr(est, "final_features_"):
        return list(est.final_features_)
    select = est.named_steps.get("select") if hasattr(est, "named_steps") else None
    if select is None:
        return []
    return [str(c) for c in select.get_feature_names_out()]


def _cached(model: Any, cache: str | None) -> Any:
    """Cache the selection step of a Pipeline: it does not depend on the classifier's hyperparameters,
    so the grid search and the calibration reuse it for the same training rows."""
    if cache and hasattr(model, "steps") and "memory" in model.get_params():
        import joblib

        return clone(model).set_params(memory=joblib.Memory(location=cache, verbose=0))
    return model


def _check_augmented(augmented: Sequence[bool] | None, groups: np.ndarray) -> np.ndarray:
    """The copy flag of every row (all False for None).

    Raises:
        InputError: Not one flag per row, copies only, or copies of a patient without unperturbed rows.
    """
    n = len(groups)
    aug = np.zeros(n, bool) if augmented is None else np.asarray(augmented, bool)
    if aug.shape != (n,):
        raise InputError("augmented", f"one flag per row ({n})", f"{aug.shape}")
    if aug.all():
        raise InputError("augmented", "unperturbed rows besides the copies", "copies only")
    orphans = set(groups[aug]) - set(groups[~aug])
    if orphans:
        raise InputError("augmented", "copies of patients that have unperturbed rows", f"{len(orphans)} without")
    return aug


def _outer_splits(
    X: pd.DataFrame,
    y: np.ndarray,
    groups: np.ndarray,
    aug: np.ndarray,
    *,
    outer_folds: int,
    test_ids: Sequence[str] | None,
    fold_ids: Sequence[Any] | None,
    seed: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The outer (train, test) splits as row numbers of ``X``: drawn over the unperturbed rows, from
    ``fold_ids``, ``test_ids`` or seeded patient-grouped folds; copies join their patient's training part.

    Raises:
        InputError: Fold labels that are not one per row or split a patient, test ids that do not split
            the cohort (or split a patient), or more outer folds than patients in the smaller class.
    """
    base, copies = np.flatnonzero(~aug), np.flatnonzero(aug)
    Xb, yb, gb = X.iloc[base], y[base], groups[base]
    if fold_ids is not None:
        f = np.asarray(fold_ids)
        if len(f) != len(X):
            raise InputError("folds", f"one fold label per case ({len(X)})", f"{len(f)} labels")
        spans = pd.Series(f).groupby(pd.Series(groups)).nunique()
        if (spans > 1).any():
            raise InputError("folds", "folds that keep each patient in one fold", f"{int((spans > 1).sum())} split")
        fb = f[base]
        splits = [(np.flatnonzero(fb != k), np.flatnonzero(fb == k)) for k in np.unique(fb)]
    elif test_ids is not None:
        test = Xb.index.isin(list(test_ids))
        if not test.any() or test.all():
            raise InputError("test_ids", "case ids that split the cohort into training and test", "no split")
        if set(gb[test]) & set(gb[~test]):
            raise InputError("test_ids", "a split by patient", "patients on both sides of the split")
        splits = [(np.flatnonzero(~test), np.flatnonzero(test))]
    else:
        n_pos_groups = min(len(np.unique(gb[yb == 1])), len(np.unique(gb[yb == 0])))
        if n_pos_groups < outer_folds:
            raise InputError("outer folds", f"at most {n_pos_groups} (patients in the smaller class)", str(outer_folds))
        outer = StratifiedGroupKFold(n_splits=outer_folds, shuffle=True, random_state=seed)
        splits = list(outer.split(Xb, yb, gb))
    # positions among the unperturbed rows -> row numbers of X; copies join their patient's training part
    return [
        (np.r_[base[tr], copies[np.isin(groups[copies], gb[tr])]], base[te]) if len(copies) else (base[tr], base[te])
        for tr, te in splits
    ]


def _fold_auc(y: np.ndarray, p: np.ndarray) -> float:
    """The AUC of one outer fold; NaN for a fold with one class, or one case of a class (it still
    counts in the pooled AUC)."""
    try:
        return roc_auc_ci(y, p).auc
    except InputError:
        return float("nan")


def _outer_fold(
    model: Any,
    grid: dict[str, list[Any]],
    X: pd.DataFrame,
    y: np.ndarray,
    groups: np.ndarray,
    aug: np.ndarray,
    split: tuple[np.ndarray, np.ndarray],
    prob: np.ndarray,
    *,
    k: int,
    inner_folds: int,
    calibration: str | None,
    seed: int,
) -> tuple[Any, dict[str, Any]]:
    """Fit outer fold ``k`` on its training rows and score its test rows (written into ``prob``).

    Returns:
        (fitted model, the fold's record for :attr:`CVResult.folds`).
    """
    tr, te = split
    t = time.perf_counter()
    fitted, best = _fit_one(
        model,
        grid,
        X.iloc[tr],
        y[tr],
        groups[tr],
        inner=inner_folds,
        calibration=calibration,
        seed=seed,
        augmented=aug[tr] if aug.any() else None,
    )
    _drop_cache(fitted)
    prob[te] = fitted.predict_proba(X.iloc[te])[:, 1]
    fold = {
        "fold": k,
        "n_train": len(tr),
        "n_train_copies": int(aug[tr].sum()),
        "n_test": len(te),
        "auc": _fold_auc(y[te], prob[te]),
        "best_params": best,
        "selected_features": selected_features(fitted),
        "seconds": round(time.perf_counter() - t, 2),
    }
    return fitted, fold


def nested_cv(
    model: Any,
    grid: dict[str, list[Any]],
    X: pd.DataFrame,
    y: Any,
    groups: Any = None,
    *,
    outer_folds: int = 5,
    inner_folds: int = 3,
    calibration: str | None = "sigmoid",
    test_ids: Sequence[str] | None = None,
    fold_ids: Sequence[Any] | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    augmented: Sequence[bool] | None = None,
) -> CVResult:
    """Out-of-fold probabilities from patient-grouped nested CV (or one fixed split).

    Args:
        model: An unfitted estimator (e.g. from :func:`~usher2.fusion.models.build_model`).
        grid: Its hyperparameter grid.
        X: Features, indexed by ``case_id``.
        y: 0/1 labels.
        groups: Patient ids (default: one patient per case).
        outer_folds: Outer folds.
        inner_folds: Inner folds (search and calibration).
        calibration: ``"sigmoid"``, ``"isotonic"`` or None.
        test_ids: Case ids of a fixed test part instead of outer folds.
        fold_ids: Predefined outer folds, one label per row (e.g. BUS-BRA's official partition);
            a patient must not span two folds.
        seed: Seed of every split.
        progress: ``progress(done, total)`` after each outer fold.
        augmented: True for the rows that are perturbed copies of a case (see the module
            docstring): trained on with their patient, never evaluated. None: no copies.
    """
    yy, gg = _check(X, y, groups)
    aug = _check_augmented(augmented, gg)
    if calibration not in (None, "sigmoid", "isotonic"):
        raise InputError("calibration", "'sigmoid', 'isotonic' or none", repr(calibration))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="usher2-cv-") as cache:
        model = _cached(model, cache)
        splits = _outer_splits(X, yy, gg, aug, outer_folds=outer_folds, test_ids=test_ids, fold_ids=fold_ids, seed=seed)
        prob = np.full(len(X), np.nan)
        fold_of = np.full(len(X), -1)
        folds, models = [], []
        inner = {"inner_folds": inner_folds, "calibration": calibration, "seed": seed}
        for k, (tr, te) in enumerate(splits):
            fitted, fold = _outer_fold(model, grid, X, yy, gg, aug, (tr, te), prob, k=k, **inner)
            fold_of[te] = k
            models.append(fitted)
            folds.append(fold)
            if progress:
                progress(k + 1, len(splits))
        done = fold_of >= 0
        oof = pd.DataFrame(
            {"patient_id": gg[done], "fold": fold_of[done], "label": yy[done], "probability": prob[done]},
            index=X.index[done],
        )
        oof.index.name = "case_id"
        auc = roc_auc_ci(oof["label"], oof["probability"]).as_dict()
        return CVResult(oof, auc, folds, round(time.perf_counter() - t0, 2), models)


def fit_final(
    model: Any,
    grid: dict[str, list[Any]],
    X: pd.DataFrame,
    y: Any,
    groups: Any = None,
    *,
    inner_folds: int = 3,
    calibration: str | None = "sigmoid",
    seed: int = 0,
    augmented: Sequence[bool] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The final model: inner search + calibration on all rows. Returns (fitted model, best params).

    ``augmented`` flags perturbed copies of cases, as in :func:`nested_cv`."""
    yy, gg = _check(X, y, groups)
    aug = None if augmented is None else np.asarray(augmented, bool)
    with tempfile.TemporaryDirectory(prefix="usher2-fit-") as cache:
        fitted, best = _fit_one(
            _cached(model, cache),
            grid,
            X,
            yy,
            gg,
            inner=inner_folds,
            calibration=calibration,
            seed=seed,
            augmented=aug if aug is not None and aug.any() else None,
        )
    _drop_cache(fitted)
    return fitted, best


def _drop_cache(fitted: Any) -> None:
    """Forget the (deleted) cache folder in a fitted model, so that it can be stored and used later."""
    inner = [c.estimator for c in fitted.calibrated_classifiers_] if hasattr(fitted, "calibrated_classifiers_") else []
    for est in [fitted, *inner]:
        if hasattr(est, "steps") and "memory" in est.get_params():
            est.memory = None
