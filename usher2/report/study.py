"""A study's evaluation directory and the sections it adds to the cohort report.

A study recipe (``usher2 mri reproduce``) writes per task an evaluation directory that
:func:`usher2.report.write_cohort_report` reads (:func:`write_study_evaluation`), then renders its
own analyses as extra report sections. Each ``*_section`` function computes one analysis (the
statistics are in :mod:`usher2.evaluate.study`), saves its numbers to
``DIR/report_tables/<name>.csv`` and returns the section's HTML body; :func:`study_sections` runs
them so that a failing analysis shows its message instead of losing the report.

- :func:`delong_section` (``delong_matrix.csv``): the predictions of two or more models.
- :func:`shap_section` (``shap_ranking.csv``): a fitted bundle and the cases' inputs.
- :func:`survival_section` (``logrank.csv``): survival columns in the manifest, ``thresholds.json``.
- :func:`bootstrap_section` (``bootstrap_validation.csv``): a late-fusion (nomogram) bundle.
- :func:`icc_section` (``icc.csv``): a perturbation table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from usher2.evaluate.bootstrap import bootstrap_validation
from usher2.evaluate.study import delong_matrix, icc_by_source, logrank_by_score_groups, scored_survival, shap_ranking
from usher2.evaluate.summary import CohortCounts, EvaluationSummary, write_predictions
from usher2.evaluate.survival import plot_kaplan_meier
from usher2.fusion.models import LateFusionClassifier
from usher2.io.atomic import atomic_path
from usher2.io.errors import InputError
from usher2.report.html import escape, fig_uri, figure, table

__all__ = [
    "bootstrap_section",
    "delong_section",
    "icc_section",
    "save_report_table",
    "shap_section",
    "study_sections",
    "survival_section",
    "write_study_evaluation",
]


def write_study_evaluation(
    eval_dir: str | Path,
    *,
    predictions: Sequence[pd.DataFrame],
    thresholds: Mapping[str, float],
    bundles: Mapping[str, str],
    cohorts: Mapping[str, pd.DataFrame],
    label: str,
    evaluated: pd.DataFrame,
    features: pd.DataFrame,
    title: str,
    primary_model: str,
    oracle_auc: Mapping[str, float],
    methods: Mapping[str, str],
) -> None:
    """Write a task's evaluation directory for :func:`usher2.report.write_cohort_report`.

    Writes ``predictions.csv`` and ``thresholds.json``, the evaluated cases' ``manifest.csv`` and
    ``features.parquet``, and ``summary.json``.

    Args:
        eval_dir: The evaluation directory (it must exist).
        predictions: Parts of ``predictions.csv`` (:func:`usher2.evaluate.summary.predictions_table`).
        thresholds: Model -> decision threshold.
        bundles: Model -> its bundle folder, relative to ``eval_dir``.
        cohorts: Split (``train``, ``test``) -> its manifest (``patient_id`` and ``label`` columns), counted.
        label: The 0/1 label column of the manifests.
        evaluated: Manifest of the cases the report analyses (the held-out cohort, or the pooled one).
        features: Feature table holding them (rows of other cases are left out).
        title: Report title.
        primary_model: The task's final model.
        oracle_auc: Model -> oracle AUC; non-finite (unknown) ones are left out.
        methods: The report's methods fields (:data:`usher2.report.METHOD_FIELDS`).

    Raises:
        KeyError: A manifest lacks ``label`` or ``patient_id``, or ``features`` lacks ``case_id``.
    """
    eval_dir = Path(eval_dir)
    write_predictions(eval_dir, predictions, thresholds)
    counts = {}
    for split, man in cohorts.items():
        y = pd.to_numeric(man[label], errors="coerce")
        counts[split] = CohortCounts.from_labels(man["patient_id"], y)
    with atomic_path(eval_dir / "manifest.csv") as tmp:
        evaluated.to_csv(tmp, index=False)
    with atomic_path(eval_dir / "features.parquet") as tmp:
        features[features["case_id"].isin(evaluated["case_id"])].to_parquet(tmp, index=False)
    EvaluationSummary(
        title=title,
        cohort=counts,
        oracle_auc={k: v for k, v in oracle_auc.items() if math.isfinite(v)},
        primary_model=primary_model,
        bundles=dict(bundles),
        methods=dict(methods),
    ).write(eval_dir)


def save_report_table(eval_dir: str | Path, name: str, df: pd.DataFrame) -> None:
    """Save a section's numbers as ``eval_dir/report_tables/<name>.csv`` (atomically).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> save_report_table(d, "icc", pd.DataFrame({"source": ["t2 radiomics"], "kept": [3]}))
        >>> (d / "report_tables" / "icc.csv").read_text().splitlines()
        ['source,kept', 't2 radiomics,3']
    """
    with atomic_path(Path(eval_dir) / "report_tables" / f"{name}.csv") as tmp:
        df.to_csv(tmp, index=False)


def study_sections(
    sections: Sequence[tuple[str, Callable[[], str]]], *, log: Callable[[str], None] = lambda _m: None
) -> list[tuple[str, str]]:
    """Run a study's sections: ``(heading, HTML body)`` pairs for ``write_cohort_report(extra_sections=...)``.

    Args:
        sections: ``(heading, body)`` pairs, ``body()`` returning the section's HTML.
        log: Receives one line per failing section.

    Returns:
        ``(heading, HTML)`` per section; a section that raised shows the exception's type and message.

    Example:
        >>> out = study_sections([("ok", lambda: "<p>1</p>"), ("bad", lambda: 1 / 0)])
        >>> out[0], out[1][1]
        (('ok', '<p>1</p>'), '<p class="fail">ZeroDivisionError: division by zero</p>')
    """
    out = []
    for heading, fn in sections:
        try:
            out.append((heading, fn()))
        except Exception as exc:  # one failing analysis must not lose the rest of the report
            log(f"{heading} failed: {type(exc).__name__}: {exc}")
            out.append((heading, f'<p class="fail">{escape(type(exc).__name__)}: {escape(str(exc))}</p>'))
    return out


def delong_section(eval_dir: str | Path, predictions: pd.DataFrame) -> str:
    """The DeLong comparison matrix of the models (:func:`usher2.evaluate.study.delong_matrix`).

    Args:
        eval_dir: The evaluation directory (``report_tables/delong_matrix.csv`` is written there).
        predictions: Rows of one split of ``predictions.csv``.

    Returns:
        The section's HTML: AUCs and p-values (row vs column; ``<0.001`` below 0.001).

    Example:
        >>> import tempfile
        >>> preds = pd.DataFrame({
        ...     "case_id": list("abcd") * 2, "model": ["m1"] * 4 + ["m2"] * 4, "label": [0, 0, 1, 1] * 2,
        ...     "probability": [0.1, 0.4, 0.35, 0.8, 0.1, 0.2, 0.3, 0.4],
        ... })
        >>> "<td>0.750</td>" in delong_section(tempfile.mkdtemp(), preds)
        True
    """
    r = delong_matrix(predictions)
    rows = []
    for a in r.models:
        row: dict[str, Any] = {"model": a, "AUC": f"{r.auc[a]:.3f}"}
        for b in r.models:
            p = r.p.loc[a, b]
            row[b] = "—" if a == b else (f"{p:.3g}" if p >= 0.001 else "<0.001")
        rows.append(row)
    df = pd.DataFrame(rows)
    save_report_table(eval_dir, "delong_matrix", df)
    return "<p>DeLong p-values for every pair of models (row vs column) on the cases both scored.</p>" + table(
        df.columns.tolist(), df.to_numpy().tolist()
    )


def shap_section(eval_dir: str | Path, bundle: Any, X: pd.DataFrame, *, model: str) -> str:
    """The SHAP ranking of a fitted model's features over the evaluated cases.

    Args:
        eval_dir: The evaluation directory (``report_tables/shap_ranking.csv`` is written there).
        bundle: The model's :class:`~usher2.fusion.bundle.Bundle` (``model`` and ``columns``).
        X: The cases' inputs, with the bundle's columns.
        model: The model's name, for the text.

    Returns:
        The section's HTML: the top 15 features by mean |SHAP|.

    Example:
        >>> shap_section("runs/mri/tasks/her2", load_bundle("runs/mri/tasks/her2/bundles/combined"), X,
        ...              model="combined")  # doctest: +SKIP
        '<p>Mean |SHAP| of combined over 60 test cases (top 15).</p><table>...'
    """
    from usher2.explain import shap_values  # the explain package pulls torch: only when a study asks for SHAP

    exp = shap_values(bundle.model, X[bundle.columns], seed=0)
    names = list(getattr(exp, "feature_names", None) or bundle.columns)
    rank = shap_ranking(exp.values, names)
    save_report_table(eval_dir, "shap_ranking", rank)
    top = rank.head(15)
    return f"<p>Mean |SHAP| of {model} over {len(X)} test cases (top 15).</p>" + table(
        ["feature", "mean |SHAP|"], [[r.feature, f"{r.mean_abs_shap:.4f}"] for r in top.itertuples()]
    )


def survival_section(
    eval_dir: str | Path, predictions: pd.DataFrame, manifest: pd.DataFrame, *, model: str, time: str, event: str
) -> str:
    """Kaplan-Meier curves and log-rank tests of survival by a model's score groups.

    The groups are the model's low/high at its threshold (``eval_dir/thresholds.json``) and its
    score tertiles (:func:`usher2.evaluate.study.logrank_by_score_groups`); the time axis is in months.

    Args:
        eval_dir: The evaluation directory (``report_tables/logrank.csv`` is written there).
        predictions: Rows of one split of ``predictions.csv``.
        manifest: The cases, with ``case_id`` and the survival columns.
        model: The model whose score is grouped.
        time: Follow-up time column (months).
        event: Event column (1: event, 0: censored).

    Returns:
        The section's HTML: the log-rank table and a Kaplan-Meier figure per grouping.

    Raises:
        InputError: The manifest lacks a survival column, or the score gives too few groups.
        KeyError: ``thresholds.json`` has no threshold for ``model``.
    """
    s = scored_survival(predictions, manifest, model=model, time=time, event=event)
    thr = json.loads((Path(eval_dir) / "thresholds.json").read_text())[model]
    t, e = s["time"].to_numpy(), s["event"].to_numpy()
    df, groups = logrank_by_score_groups(t, e, s["score"].to_numpy(), threshold=thr)
    html = ""
    for kind, g in groups.items():
        fig = plot_kaplan_meier(t, e, g, time_label="Months", title=f"DFS by {kind}")
        html += figure(fig_uri(fig), f"Kaplan-Meier of disease-free survival by {model} score ({kind})")
    save_report_table(eval_dir, "logrank", df)
    note = f"<p>Score groups of {model} on {len(s)} cases: at its training threshold {thr:.3f}, and tertiles.</p>"
    groups_table = table(
        ["grouping", "groups", "χ²", "df", "p"],
        [[r["grouping"], r["groups"], f"{r['chi2']:.2f}", r["df"], f"{r['p']:.3g}"] for r in df.to_dict("records")],
    )
    return note + groups_table + html


def bootstrap_section(
    eval_dir: str | Path, bundle: Any, X: pd.DataFrame, y: np.ndarray, *, model: str, n_boot: int
) -> str:
    """Harrell's bootstrap validation of a late-fusion (nomogram) model's final logistic stage.

    The source scores are the model's out-of-fold scores on ``X``; the final logistic model is
    refitted on each resample of (scores + clinical inputs)
    (:func:`usher2.evaluate.bootstrap.bootstrap_validation`, seed 0).

    Args:
        eval_dir: The evaluation directory (``report_tables/bootstrap_validation.csv`` is written there).
        bundle: The model's :class:`~usher2.fusion.bundle.Bundle`.
        X: The cases it was fitted on, with the bundle's columns.
        y: Their 0/1 labels, ``(n,)``.
        model: The model's name, for the text.
        n_boot: Bootstrap resamples.

    Returns:
        The section's HTML: apparent, optimism and corrected value per metric.

    Raises:
        InputError: The bundle's model is not a late-fusion model.
    """
    if not isinstance(bundle.model, LateFusionClassifier):
        raise InputError(
            model, "a late-fusion (nomogram) model for the bootstrap validation", type(bundle.model).__name__
        )
    fitted = bundle.model
    design = fitted.final_inputs(X, fitted.out_of_fold_scores(X, y))
    res = bootstrap_validation(clone(fitted.final_), design, y, n_boot=n_boot, seed=0)
    df = res.as_frame()
    save_report_table(eval_dir, "bootstrap_validation", df)
    cells = [[r.metric, f"{r.apparent:.3f}", f"{r.optimism:.3f}", f"{r.corrected:.3f}"] for r in df.itertuples()]
    return (
        f"<p>Harrell's optimism-corrected bootstrap validation ({res.n_boot} resamples) of the {model} "
        f"logistic model on its inputs ({', '.join(design.columns)}); the source scores are out-of-fold, so the "
        "feature selection that made them is validated by the nested CV, not here.</p>"
        + table(["metric", "apparent", "optimism", "corrected"], cells)
    )


def icc_section(
    eval_dir: str | Path, perturbations: pd.DataFrame, *, threshold: float, source_of: Callable[[str], str]
) -> str:
    """Feature reproducibility: ICC(3,1) per feature source over the original and perturbed extractions.

    Args:
        eval_dir: The evaluation directory (``report_tables/icc.csv`` is written there).
        perturbations: Long table: ``case_id``, ``perturbation`` (``original`` and the perturbed
            extractions) and one column per feature.
        threshold: ICC at or above which a feature is kept.
        source_of: Maps a feature column to its source (:func:`usher2.evaluate.study.icc_by_source`).

    Returns:
        The section's HTML: features, kept and median ICC per source.

    Example:
        >>> import tempfile
        >>> perts = pd.DataFrame({
        ...     "case_id": ["a", "b", "c"] * 2, "perturbation": ["original"] * 3 + ["shift"] * 3,
        ...     "t2_x": [1.0, 2.0, 3.0, 2.0, 3.0, 4.0],
        ... })
        >>> html = icc_section(tempfile.mkdtemp(), perts, threshold=0.9, source_of=lambda c: c.split("_")[0])
        >>> "<td>t2</td><td>1</td><td>1</td><td>1.000</td>" in html
        True
    """
    s = icc_by_source(perturbations, threshold=threshold, source_of=source_of)
    save_report_table(eval_dir, "icc", s.table)
    rows = s.table.to_dict("records")
    cells = [[r["source"], r["features"], r["kept"], f"{r['median_icc']:.3f}"] for r in rows]
    perturbed = ", ".join(n for n in s.raters if n != "original")
    return (
        f"<p>ICC(3,1) of every feature over {s.n_cases} cases across the original and "
        f"{len(s.raters) - 1} perturbed extractions ({perturbed}); features "
        f"with ICC ≥ {threshold} are kept (inside the folds, by each model's ICC filter).</p>"
        + table(["source", "features", f"ICC ≥ {threshold}", "median ICC"], cells)
    )
