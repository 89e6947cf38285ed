"""A study's own analyses over its predictions, manifest and feature tables (statistics only).

The study recipes (``usher2 mri reproduce``) add these to the standard cohort report; each takes
plain tables and column names, so any study can use them:

- :func:`oracle_ratio`, :func:`held_out_auc`, :func:`final_verdict`: a model's AUC against the
  oracle AUC of what it can see (``ratio = auc / oracle_auc``) and whether it meets a target ratio.
- :func:`delong_matrix`: every model's AUC and the DeLong p-value of every pair, on the cases both
  scored.
- :func:`shap_ranking`: features ranked by their mean absolute SHAP value.
- :func:`scored_survival`, :func:`logrank_by_score_groups`: a model's score next to the survival
  columns of the manifest, and the log-rank test across its score groups (at a threshold; tertiles).
- :func:`icc_by_source`: the ICC(3,1) of every feature over repeated extractions (perturbations),
  summarised per feature source.

The tables the HTML report shows are written by :mod:`usher2.report.study`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from usher2.evaluate.agreement import icc_columns
from usher2.evaluate.roc import delong_test, roc_auc_ci
from usher2.evaluate.survival import logrank_test, score_groups
from usher2.io.errors import InputError

__all__ = [
    "DeLongMatrix",
    "ICCSummary",
    "delong_matrix",
    "final_verdict",
    "held_out_auc",
    "icc_by_source",
    "logrank_by_score_groups",
    "oracle_ratio",
    "scored_survival",
    "shap_ranking",
]


def _require(table: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(where, f"columns {list(columns)}", f"missing {missing} among {list(table.columns)[:10]}")


# ----------------------------------------------------------------------------------- oracle


def oracle_ratio(auc: float, oracle: float, *, target: float) -> dict[str, Any]:
    """A model's AUC as a share of the oracle AUC, and whether it reaches ``target``.

    Args:
        auc: The model's AUC.
        oracle: The oracle AUC of what the model can see; NaN when the truth is unknown (a user's data).
        target: The ratio the model must reach (e.g. 0.95).

    Returns:
        ``{"ratio": auc / oracle, "meets_target": ratio >= target}``; with an unknown (non-finite)
        oracle ``{"ratio": nan, "meets_target": None}``.

    Example:
        >>> oracle_ratio(0.76, 0.8, target=0.95)
        {'ratio': 0.95, 'meets_target': True}
        >>> oracle_ratio(0.7, float("nan"), target=0.95)
        {'ratio': nan, 'meets_target': None}
    """
    if not math.isfinite(oracle):
        return {"ratio": float("nan"), "meets_target": None}
    ratio = auc / oracle
    return {"ratio": ratio, "meets_target": bool(ratio >= target)}


def held_out_auc(y: Any, p: Any, oracle: float, *, target: float) -> dict[str, Any]:
    """The held-out AUC columns of a model: cases, AUC with its DeLong 95% CI, and the oracle ratio.

    Args:
        y: 0/1 outcomes of the held-out cases, ``(n,)``.
        p: The model's probabilities for them, ``(n,)``.
        oracle: The oracle AUC on the same cases (NaN: unknown).
        target: The ratio the model must reach (see :func:`oracle_ratio`).

    Returns:
        ``n_test``, ``test_auc``, ``test_ci_low``, ``test_ci_high``, ``ratio`` and ``meets_target``.

    Raises:
        InputError: ``y`` is not binary with both classes, or ``p`` does not match it.

    Example:
        >>> r = held_out_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 1.0, target=0.95)
        >>> r["n_test"], r["test_auc"], r["ratio"], r["meets_target"]
        (4, 0.75, 0.75, False)
    """
    r = roc_auc_ci(y, p)
    return {
        "n_test": len(y),
        "test_auc": r.auc,
        "test_ci_low": r.ci_low,
        "test_ci_high": r.ci_high,
        **oracle_ratio(r.auc, oracle, target=target),
    }


def final_verdict(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task, its final model's AUC (held-out, else nested-CV), oracle AUC, ratio and verdict.

    Args:
        rows: One mapping per model with ``task``, ``model``, ``final`` (whether it is the task's
            final model), ``cv_auc``, ``oracle_auc`` and, when known, ``test_auc``, ``ratio`` and
            ``meets_target``.

    Returns:
        Task name -> ``final_model``, ``auc``, ``oracle_auc``, ``ratio``, ``meets_target`` (None
        where a row lacks them).

    Example:
        >>> rows = [
        ...     {"task": "main", "model": "a", "final": False, "cv_auc": 0.7, "oracle_auc": 0.8},
        ...     {"task": "main", "model": "b", "final": True, "cv_auc": 0.75, "test_auc": 0.78,
        ...      "oracle_auc": 0.8, "ratio": 0.975, "meets_target": True},
        ... ]
        >>> final_verdict(rows)["main"]
        {'final_model': 'b', 'auc': 0.78, 'oracle_auc': 0.8, 'ratio': 0.975, 'meets_target': True}
    """
    return {
        r["task"]: {
            "final_model": r["model"],
            "auc": r.get("test_auc", r["cv_auc"]),
            "oracle_auc": r["oracle_auc"],
            "ratio": r.get("ratio"),
            "meets_target": r.get("meets_target"),
        }
        for r in rows
        if r["final"]
    }


# ----------------------------------------------------------------------------------- DeLong


@dataclass(frozen=True)
class DeLongMatrix:
    """Every model's AUC and the DeLong p-value of every pair of models.

    Attributes:
        auc: Model -> AUC on the cases it scored.
        p: ``(models, models)`` two-sided DeLong p-values of row vs column on the cases both scored;
            NaN on the diagonal.
    """

    auc: dict[str, float]
    p: pd.DataFrame

    @property
    def models(self) -> list[str]:
        """The models, in the order of the predictions table."""
        return list(self.auc)


def delong_matrix(
    predictions: pd.DataFrame,
    *,
    case: str = "case_id",
    model: str = "model",
    label: str = "label",
    probability: str = "probability",
) -> DeLongMatrix:
    """AUCs and pairwise DeLong tests of the models of a predictions table (one split of it).

    Args:
        predictions: Long table, one row per case and model (``predictions.csv`` rows of one split).
        case: Case id column (a case's label is read from its first row).
        model: Model name column.
        label: 0/1 outcome column.
        probability: Score column.

    Returns:
        The :class:`DeLongMatrix`, its models in their order of first appearance.

    Raises:
        InputError: A column is missing, or a model's cases are not binary with both classes.

    Example:
        >>> preds = pd.DataFrame({
        ...     "case_id": ["a", "b", "c", "d"] * 2,
        ...     "model": ["m1"] * 4 + ["m2"] * 4,
        ...     "label": [0, 0, 1, 1] * 2,
        ...     "probability": [0.1, 0.4, 0.35, 0.8, 0.1, 0.2, 0.3, 0.4],
        ... })
        >>> r = delong_matrix(preds)
        >>> r.auc
        {'m1': 0.75, 'm2': 1.0}
        >>> bool(r.p.loc["m1", "m2"] == r.p.loc["m2", "m1"])
        True
    """
    _require(predictions, [case, model, label, probability], "predictions")
    wide = predictions.pivot_table(index=case, columns=model, values=probability)
    labels = predictions.drop_duplicates(case).set_index(case)[label]
    models = list(dict.fromkeys(predictions[model]))
    auc = {m: roc_auc_ci(labels[wide[m].dropna().index], wide[m].dropna()).auc for m in models}
    p = pd.DataFrame(np.nan, index=pd.Index(models, name=model), columns=models)
    for a in models:
        for b in models:
            if a != b:
                both = wide[[a, b]].dropna()
                p.loc[a, b] = delong_test(labels[both.index].to_numpy(), both[a].to_numpy(), both[b].to_numpy()).p
    return DeLongMatrix(auc, p)


# ----------------------------------------------------------------------------------- SHAP


def shap_ranking(values: Any, feature_names: Sequence[str]) -> pd.DataFrame:
    """Features ranked by mean absolute SHAP value over the cases.

    Args:
        values: SHAP values, ``(n_cases, n_features)``.
        feature_names: One name per column of ``values``.

    Returns:
        Columns ``feature`` and ``mean_abs_shap``, largest first (index 0..n_features-1).

    Raises:
        InputError: ``values`` is not 2-D, or the names do not match its columns.

    Example:
        >>> shap_ranking([[0.1, -0.4], [-0.3, 0.2]], ["age", "size"]).to_dict("list")
        {'feature': ['size', 'age'], 'mean_abs_shap': [0.30000000000000004, 0.2]}
    """
    vals = np.abs(np.asarray(values))
    names = list(feature_names)
    if vals.ndim != 2 or vals.shape[1] != len(names):
        raise InputError("SHAP values", f"a (cases, {len(names)} features) array", f"shape {vals.shape}")
    rank = pd.DataFrame({"feature": names, "mean_abs_shap": vals.mean(axis=0)})
    return rank.sort_values("mean_abs_shap", ascending=False).reset_index(drop=True)


# ----------------------------------------------------------------------------------- survival


def scored_survival(
    predictions: pd.DataFrame, manifest: pd.DataFrame, *, model: str, time: str, event: str
) -> pd.DataFrame:
    """One model's scores next to the survival columns of the manifest, on the cases with a time.

    Args:
        predictions: Rows of one split of ``predictions.csv`` (``case_id``, ``model``, ``probability``).
        manifest: The cases, with ``case_id`` and the survival columns.
        model: The model whose ``probability`` is the score.
        time: Follow-up time column of the manifest.
        event: Event column of the manifest (1: event, 0: censored).

    Returns:
        Columns ``case_id``, ``time`` (float), ``event`` (int) and ``score``, in the order of the
        predictions; cases with a missing time are left out.

    Raises:
        InputError: The manifest lacks a survival column.

    Example:
        >>> preds = pd.DataFrame({"case_id": ["a", "b", "c"], "model": "m", "probability": [0.2, 0.9, 0.5]})
        >>> man = pd.DataFrame({"case_id": ["a", "b", "c"], "t": [12.0, 3.0, None], "e": [0, 1, 1]})
        >>> scored_survival(preds, man, model="m", time="t", event="e").to_dict("list")
        {'case_id': ['a', 'b'], 'time': [12.0, 3.0], 'event': [0, 1], 'score': [0.2, 0.9]}
    """
    missing = [c for c in (time, event) if c not in manifest.columns]
    if missing:
        raise InputError("manifest", f"survival columns {time!r}, {event!r}", f"missing {missing}")
    p = predictions[predictions["model"] == model].set_index("case_id")["probability"]
    m = manifest.set_index(manifest["case_id"].astype(str))
    ids = [c for c in p.index if c in m.index and pd.notna(m.loc[c, time])]
    t, e = m.loc[ids, time].astype(float), m.loc[ids, event].astype(int)
    return pd.DataFrame({"case_id": ids, "time": t.to_numpy(), "event": e.to_numpy(), "score": p[ids].to_numpy()})


def logrank_by_score_groups(
    time: Any, event: Any, score: Any, *, threshold: float
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Log-rank tests of survival across score groups: at ``threshold`` (low/high) and by tertiles.

    Args:
        time: Follow-up times, ``(n,)``.
        event: 1 for an event, 0 for censored, ``(n,)``.
        score: The model's scores, ``(n,)``.
        threshold: The model's cut point (high: ``score >= threshold``).

    Returns:
        ``(table, groups)``: one row per grouping (``threshold``, ``tertiles``) with ``grouping``,
        ``groups``, ``chi2``, ``df`` and ``p``; and each grouping's group label per case.

    Raises:
        InputError: Fewer than two groups at the threshold, or tied scores that leave a tertile empty.

    Example:
        >>> table, groups = logrank_by_score_groups(
        ...     [10, 20, 30, 10, 20, 50], [1, 1, 1, 1, 1, 1], [0.9, 0.8, 0.7, 0.3, 0.2, 0.1], threshold=0.5
        ... )
        >>> r = table.to_dict("records")[0]
        >>> r["grouping"], r["groups"], r["df"], round(r["chi2"], 6)
        ('threshold', 2, 1, 0.254237)
        >>> groups["tertiles"].tolist()
        ['Q3', 'Q3', 'Q2', 'Q2', 'Q1', 'Q1']
    """
    t, e, s = np.asarray(time), np.asarray(event), np.asarray(score)
    groups = {"threshold": score_groups(s, threshold=threshold), "tertiles": score_groups(s, quantiles=3)}
    rows = []
    for kind, g in groups.items():
        lr = logrank_test(t, g, e)
        rows.append({"grouping": kind, "groups": lr.n_groups, "chi2": lr.statistic, "df": lr.df, "p": lr.p})
    return pd.DataFrame(rows), groups


# ----------------------------------------------------------------------------------- ICC


@dataclass(frozen=True)
class ICCSummary:
    """The ICC of every feature over repeated extractions, summarised per feature source.

    Attributes:
        table: One row per source: ``source``, ``features``, ``kept`` (ICC >= the threshold) and
            ``median_icc``.
        icc: Feature -> its ICC (NaN for a feature without variance).
        n_cases: Cases with every extraction complete (the ICC's subjects).
        raters: The extractions compared (sorted), e.g. ``original`` and the perturbations.
    """

    table: pd.DataFrame
    icc: dict[str, float]
    n_cases: int
    raters: list[str]


def icc_by_source(
    perturbations: pd.DataFrame,
    *,
    threshold: float,
    source_of: Callable[[str], str],
    case: str = "case_id",
    rater: str = "perturbation",
    exclude: Sequence[str] = ("patient_id", "label"),
) -> ICCSummary:
    """ICC(3,1) of every numeric feature across the extractions of a perturbation table, per source.

    Args:
        perturbations: Long table, one row per case and extraction (``rater``), one column per feature.
        threshold: ICC at or above which a feature counts as kept.
        source_of: Maps a feature column to its source (e.g. ``t2 radiomics``).
        case: Case id column.
        rater: Extraction name column (``original`` and the perturbations).
        exclude: Further non-feature columns.

    Returns:
        The :class:`ICCSummary` over the cases every extraction holds with finite values.

    Raises:
        InputError: The case or rater column is missing.
        ValueError: Fewer than two complete cases or two extractions.

    Example:
        >>> perts = pd.DataFrame({
        ...     "case_id": ["a", "b", "c"] * 2,
        ...     "perturbation": ["original"] * 3 + ["shift"] * 3,
        ...     "t2_x": [1.0, 2.0, 3.0, 2.0, 3.0, 4.0],  # a constant offset: ICC(3,1) = 1
        ...     "t2_y": [1.0, 2.0, 3.0, 3.0, 2.0, 1.0],  # reversed: ICC(3,1) = -1
        ... })
        >>> s = icc_by_source(perts, threshold=0.9, source_of=lambda c: c.split("_")[0])
        >>> {c: round(v, 6) for c, v in s.icc.items()}, s.n_cases, s.raters
        ({'t2_x': 1.0, 't2_y': -1.0}, 3, ['original', 'shift'])
        >>> s.table[["source", "features", "kept"]].to_dict("records")
        [{'source': 't2', 'features': 2, 'kept': 1}]
    """
    _require(perturbations, [case, rater], "perturbations")
    cols = [c for c in perturbations.columns if c not in (case, rater, *exclude)]
    cols = [c for c in cols if pd.api.types.is_numeric_dtype(perturbations[c])]
    names = sorted(perturbations[rater].unique())
    by_name = {n: perturbations[perturbations[rater] == n].drop_duplicates(case).set_index(case)[cols] for n in names}
    cases = sorted(set.intersection(*(set(d.index) for d in by_name.values())))
    cube = np.stack([by_name[n].loc[cases].to_numpy(float) for n in names], axis=1)  # (cases, raters, features)
    complete = np.isfinite(cube).all(axis=(1, 2))
    values, _ = icc_columns(cube[complete])
    rows = []
    for group in sorted({source_of(c) for c in cols}):
        v = values[[i for i, c in enumerate(cols) if source_of(c) == group]]
        rows.append(
            {
                "source": group,
                "features": len(v),
                "kept": int(np.sum(v >= threshold)),
                "median_icc": float(np.nanmedian(v)),
            }
        )
    icc = {c: float(v) for c, v in zip(cols, values, strict=True)}
    return ICCSummary(pd.DataFrame(rows), icc, int(complete.sum()), [str(n) for n in names])
