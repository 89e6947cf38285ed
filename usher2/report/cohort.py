"""The cohort report: one self-contained HTML file from an evaluation directory.

**The evaluation directory** ``DIR`` (written by the pipeline) holds:

=========================  ================================================================================
``predictions.csv``        required: ``case_id, label, model, split, probability`` (+ ``patient_id``);
                           ``split`` is ``train_oof`` (nested-CV out-of-fold) or ``test`` (held out)
``summary.json``           required: a JSON object: ``title``, ``usher2``, ``created``, ``cohort``
                           (``train``/``test``: ``n``, ``patients``, ``positives``), ``oracle_auc``
                           (optional), ``primary_model``, ``methods`` (:data:`METHOD_FIELDS`), ``bundles``
``thresholds.json``        ``{model: threshold}``: Youden's on the training OOF predictions
``manifest.csv``           the test cohort: ``case_id, patient_id, image, mask, label`` (+ clinical)
``features.parquet``       the test cohort's feature table (``case_id`` + features)
``bundles/<model>/``       the fitted model bundles (:func:`usher2.fusion.bundle.load_bundle`)
=========================  ================================================================================

A missing or invalid ``predictions.csv`` or ``summary.json`` raises :class:`InputError`. Everything
else degrades per section: an analysis that fails (one class in the test split, a constant
score, an unsupported model, a missing bundle or image) shows its message in the report and the
rest is still written.

**Sections** (:data:`SECTIONS`):

1. Data: title, usher2 version, date; train/test cases, patients, positives, prevalence.
2. Methods: the TRIPOD+AI-style items of ``summary.json["methods"]`` ("not reported" when absent).
3. Discrimination: ROC curves with DeLong 95% CIs of every model on the test split and on the
   training OOF predictions, oracle AUCs when given; DeLong tests of every pair of models on the
   test split (cases both models scored).
4. Threshold metrics: accuracy, sensitivity, specificity, PPV, NPV (Wilson 95% CIs) and the
   confusion matrix of each model on the test split at its *training* threshold
   (``thresholds.json``; else the bundle's; else Youden's on the training OOF predictions; never
   re-picked on test).
5. Calibration of the primary model (plot, slope/intercept, Brier score, Hosmer-Lemeshow) and
   decision curves of every model (thresholds 0.01-0.60) with treat-all/treat-none.
6. Nomogram of the primary model, or of the first model that is a supported logistic model: one
   axis for the imaging score (the summed log-odds of the imaging features, named Radscore,
   Deep Score or DLR score by family; a late-fusion model's own source scores) plus one per
   clinical variable, as the published nomograms draw them (``nomogram="features"``: one axis
   per selected feature).
7. Waterfall of the primary model's test probabilities, centred at its threshold.
8. SHAP summary (beeswarm) of the primary model on the test features.
9. Grad-CAM examples, drawn as ``usher2 score`` draws them (the frame after the bundle's
   enhancer, its predicted mask, the heat map of the predicted class from the backbone the model
   reads: :func:`~usher2.explain.targets.model_target`, :func:`~usher2.explain.render.render_overlay`):
   the primary model's worst false positives, worst false negatives and most confident true
   positives at its threshold, ``cam_examples`` of each; unreadable images and frames without a
   found lesion are listed.

**Numbers.** Next to the figures the numbers go to ``DIR/report_tables/`` (CSV, written
atomically): ``auc.csv``, ``delong.csv``, ``threshold_metrics.csv``, ``calibration.csv`` (per-bin
curve), ``calibration_summary.csv``, ``net_benefit.csv``, ``nomogram.csv`` and ``errors.csv``
(every section that failed: ``section, kind, message``; ``kind`` is ``InputError`` for expected
failures and the exception type otherwise).

The HTML has inline CSS, PNG figures as ``data:`` URIs, no JavaScript and no links to fetch.

Example:
    >>> SECTIONS[2], METHOD_FIELDS[0]
    ('3. Discrimination', 'data')
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.evaluate.summary import CohortCounts, EvaluationSummary
from usher2.io.atomic import atomic_path, atomic_write_text
from usher2.io.errors import InputError
from usher2.report.html import ci_text, document, escape, f3, fail, fig_uri, figure, fmt_p, rgb_uri, table

__all__ = ["METHOD_FIELDS", "SECTIONS", "write_cohort_report"]

SECTIONS = (
    "1. Data",
    "2. Methods",
    "3. Discrimination",
    "4. Threshold metrics",
    "5. Calibration and decision curves",
    "6. Nomogram",
    "7. Waterfall",
    "8. SHAP summary",
    "9. Grad-CAM examples",
)
#: The items of ``summary.json["methods"]``, in report order, with their labels.
METHOD_FIELDS = ("data", "outcome", "predictors", "missing_data", "splits", "model", "validation", "software")
_METHOD_LABELS = {
    "data": "Data source",
    "outcome": "Outcome",
    "predictors": "Predictors",
    "missing_data": "Missing data",
    "splits": "Data splits",
    "model": "Model",
    "validation": "Validation",
    "software": "Software",
}
SPLITS = ("train_oof", "test")
_PRED_COLUMNS = ("case_id", "label", "model", "split", "probability")
_DCA_THRESHOLDS = np.round(np.arange(1, 61) / 100, 2)
NOT_REPORTED = "not reported"
# ---------------------------------------------------------------- reading the directory


def _read_summary(path: Path) -> EvaluationSummary:
    return EvaluationSummary.read(path)


def _read_predictions(path: Path) -> tuple[pd.DataFrame, int]:
    """The predictions and how many rows were dropped for a missing label or probability."""
    what = "predictions.csv with columns case_id, patient_id, label, model, split, probability"
    if not path.is_file():
        raise InputError(path, what, "no such file")
    try:
        df = pd.read_csv(path, dtype={"case_id": str, "patient_id": str, "model": str, "split": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(path, what, f"an unreadable CSV ({exc})") from exc
    missing = [c for c in _PRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(path, what, f"missing columns {missing}")
    bad_split = sorted(set(df["split"].dropna().astype(str)) - set(SPLITS))
    if bad_split:
        raise InputError(path, f"split values {list(SPLITS)}", f"{bad_split[:5]}")
    df["probability"] = pd.to_numeric(df["probability"], errors="coerce")
    df["label"] = pd.to_numeric(df["label"], errors="coerce")
    keep = df["probability"].notna() & df["label"].notna() & df["case_id"].notna() & df["model"].notna()
    dropped = int((~keep).sum())
    df = df[keep].copy()
    if not df["label"].isin([0, 1]).all():
        raise InputError(path, "labels 0/1", f"values like {sorted(df.loc[~df['label'].isin([0, 1]), 'label'])[:3]}")
    p = df["probability"].to_numpy()
    if not (np.isfinite(p) & (p >= 0) & (p <= 1)).all():
        raise InputError(path, "probabilities in [0, 1]", "values outside it")
    df["label"] = df["label"].astype(int)
    dup = df.duplicated(["model", "split", "case_id"])
    if dup.any():
        r = df[dup].iloc[0]
        raise InputError(
            path, "one row per model, split and case", f"duplicates (e.g. {r['model']}/{r['split']}/{r['case_id']})"
        )
    if not df["split"].isin(SPLITS).any():
        raise InputError(path, "predictions with split 'test' (or only 'train_oof')", "neither")
    return df.reset_index(drop=True), dropped


def _read_thresholds(path: Path) -> tuple[dict[str, float], str | None]:
    if not path.is_file():
        return {}, f"{path.name}: not found"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        out = {str(k): float(v) for k, v in raw.items() if v is not None and math.isfinite(float(v))}
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        return {}, f"{path.name}: expected {{model: threshold}}, got {exc}"
    return out, None


def _read_manifest(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"case_id": str, "patient_id": str})


def _read_features(path: Path) -> pd.DataFrame:
    f = pd.read_parquet(path)
    if "case_id" in f.columns:
        f["case_id"] = f["case_id"].astype(str)
    return f


@dataclass
class _Ctx:
    """Everything the sections share; loads the optional inputs lazily."""

    root: Path
    summary: EvaluationSummary
    preds: pd.DataFrame
    dropped: int
    models: list[str]
    primary: str
    seed: int
    nomogram: str = "imaging"
    errors: list[dict[str, str]] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    thresholds: dict[str, tuple[float, str]] = field(default_factory=dict)
    threshold_notes: dict[str, str] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    def split(self, model: str, split: str = "test") -> pd.DataFrame:
        d = self.preds[(self.preds["model"] == model) & (self.preds["split"] == split)]
        return d.set_index("case_id")

    def bundle(self, model: str) -> Any:
        key = f"bundle:{model}"
        if key not in self._cache:
            from usher2.fusion.bundle import load_bundle

            rel = self.summary.bundles.get(model) or f"bundles/{model}"
            path = Path(rel) if Path(rel).is_absolute() else self.root / rel
            try:
                self._cache[key] = load_bundle(path)
            except InputError as exc:
                self._cache[key] = exc
        return self._cached(key)

    def _cached(self, key: str) -> Any:
        """The cached value of ``key``; a cached failure is raised again."""
        got = self._cache[key]
        if isinstance(got, Exception):
            raise got
        return got

    def _case_table(self, name: str, what: str, read: Callable[[Path], pd.DataFrame]) -> pd.DataFrame:
        """The table ``DIR/name`` read once by ``read``, one row per case, indexed by ``case_id``."""
        if name not in self._cache:
            path = self.root / name
            if not path.is_file():
                self._cache[name] = InputError(path, what, "no such file")
            else:
                df = read(path)
                if "case_id" not in df.columns:
                    self._cache[name] = InputError(path, "a case_id column", f"columns {list(df.columns)[:5]}")
                else:
                    self._cache[name] = df.drop_duplicates("case_id").set_index("case_id")
        return self._cached(name)

    def features(self) -> pd.DataFrame:
        return self._case_table("features.parquet", "the test cohort's feature table", _read_features)

    def manifest(self) -> pd.DataFrame:
        return self._case_table("manifest.csv", "the test cohort manifest", _read_manifest)

    def model_input(self, model: str) -> tuple[Any, pd.DataFrame]:
        """The bundle and its input table for the test cases of ``model`` (clinical columns from the manifest)."""
        b = self.bundle(model)
        cases = self.split(model).index
        feats = self.features()
        have = [c for c in cases if c in feats.index]
        if not have:
            raise InputError(self.root / "features.parquet", f"rows for the test cases of {model!r}", "none")
        X = feats.loc[have]
        extra = [c for c in b.columns if c not in X.columns]
        if extra:
            try:
                m = self.manifest()
            except InputError:
                m = pd.DataFrame(index=X.index)
            empty = pd.Series(dtype=float)
            added = {
                c: pd.to_numeric((m[c] if c in m.columns else empty).reindex(X.index), errors="coerce") for c in extra
            }
            X = pd.concat([X, pd.DataFrame(added, index=X.index)], axis=1)  # one insert, not one per column
        return b, X[b.columns]

    def threshold(self, model: str) -> float:
        if model not in self.thresholds:
            raise InputError(
                "threshold", f"a training threshold for {model!r}", self.threshold_notes.get(model, "none")
            )
        return self.thresholds[model][0]

    def guard(self, section: str, what: str, fn: Callable[[], str]) -> str:
        """Run one analysis; its failure becomes a message in the report (and a row of errors.csv)."""
        try:
            return fn()
        except InputError as exc:
            self.errors.append({"section": section, "kind": "InputError", "message": f"{what}: {exc}"})
            return fail(f"{what}: {exc}")
        except Exception as exc:  # a report must not die on one analysis; the type says it was unexpected
            warnings.warn(f"report section {section!r} ({what}) failed: {type(exc).__name__}: {exc}", stacklevel=2)
            self.errors.append({"section": section, "kind": type(exc).__name__, "message": f"{what}: {exc}"})
            return fail(f"{what} failed ({type(exc).__name__}: {exc})")


def _resolve_thresholds(ctx: _Ctx, given: dict[str, float], note: str | None) -> None:
    from usher2.evaluate import youden_threshold

    for m in ctx.models:
        if m in given:
            ctx.thresholds[m] = (given[m], "thresholds.json")
            continue
        try:
            ctx.thresholds[m] = (ctx.bundle(m).threshold, "bundle config")
            continue
        except (InputError, KeyError, TypeError, ValueError):
            pass
        oof = ctx.split(m, "train_oof")
        try:
            ctx.thresholds[m] = (youden_threshold(oof["label"], oof["probability"]), "Youden on train OOF")
        except (InputError, ValueError) as exc:
            ctx.threshold_notes[m] = f"not in thresholds.json ({note or 'no entry'}), no bundle, no OOF Youden ({exc})"


# ---------------------------------------------------------------- sections


def _section_data(ctx: _Ctx) -> str:
    import usher2

    s = ctx.summary
    rows = []
    for split, name in (("train", "train_oof"), ("test", "test")):
        d = ctx.preds[ctx.preds["split"] == name].drop_duplicates("case_id")
        c = s.cohort.get(split) or CohortCounts()  # counts not recorded: taken from the predictions
        n = c.n if c.n is not None else (len(d) if len(d) else None)
        patients = c.patients
        if patients is None:
            patients = d["patient_id"].nunique() if "patient_id" in d.columns and len(d) else None
        pos = c.positives if c.positives is not None else (int(d["label"].sum()) if len(d) else None)
        try:
            prev = f"{100 * float(pos) / float(n):.1f}%" if n else "n/a"
        except (TypeError, ValueError):
            prev = "n/a"
        rows.append([split, *(NOT_REPORTED if v is None else v for v in (n, patients, pos)), prev])
    created = s.created or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    meta = (
        f'<p class="meta">usher2 {escape(s.usher2)} (report rendered by usher2 '
        f"{escape(usher2.__version__)}) &middot; created {escape(created)} &middot; primary model "
        f"<b>{escape(ctx.primary)}</b> &middot; models: {escape(', '.join(ctx.models))}</p>"
    )
    out = meta + table(["Cohort", "Cases", "Patients", "Positives", "Prevalence"], rows, {1, 2, 3, 4})
    if ctx.dropped:
        out += f"<p>{ctx.dropped} prediction rows without a label or probability were left out.</p>"
    if s.primary_model and s.primary_model not in ctx.models:
        out += fail(f"primary model {s.primary_model!r} has no predictions; using {ctx.primary!r}")
    return out


def _section_methods(ctx: _Ctx) -> str:
    methods = ctx.summary.methods
    keys = list(METHOD_FIELDS) + [k for k in methods if k not in METHOD_FIELDS]
    items = []
    for k in keys:
        v = methods.get(k)
        text = NOT_REPORTED if v is None or (isinstance(v, str) and not v.strip()) else v
        if not isinstance(text, str):
            text = json.dumps(text, default=str)
        items.append(f"<li><b>{escape(_METHOD_LABELS.get(k, k))}:</b> {escape(text)}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def _section_roc(ctx: _Ctx) -> str:
    from usher2.evaluate import delong_test, plot_roc, roc_auc_ci

    oracle = ctx.summary.oracle_auc
    rows, records, valid = [], [], {s: [] for s in SPLITS}
    for split in SPLITS:
        for m in ctx.models:
            d = ctx.split(m, split)
            if not len(d):
                continue
            try:
                r = roc_auc_ci(d["label"], d["probability"])
            except InputError as exc:
                rows.append([m, split, len(d), int(d["label"].sum()), f"not computed: {exc}", "", ""])
                ctx.errors.append({"section": SECTIONS[2], "kind": "InputError", "message": f"AUC {m} {split}: {exc}"})
                continue
            valid[split].append(m)
            o = oracle.get(m)
            o_txt = f3(o) if isinstance(o, int | float) else ""
            rows.append([m, split, len(d), int(d["label"].sum()), f3(r.auc), f"{f3(r.ci_low)}-{f3(r.ci_high)}", o_txt])
            records.append({"model": m, "split": split, "n": len(d), **r.as_dict(), "oracle_auc": o})
    ctx.tables["auc"] = pd.DataFrame(records)
    out = table(["Model", "Split", "Cases", "Positives", "AUC", "95% CI (DeLong)", "Oracle AUC"], rows, {2, 3, 4})
    figs = []
    for split, label in (("test", "Test cohort"), ("train_oof", "Training cohort (out-of-fold)")):
        ms = valid[split]
        if not ms:
            continue

        def plot(ms: list[str] = ms, split: str = split, label: str = label) -> str:
            joined = pd.concat({m: ctx.split(m, split) for m in ms}, axis=1, join="inner")
            if joined.empty:
                raise InputError("predictions.csv", f"cases scored by every model ({split})", "none in common")
            y = joined[(ms[0], "label")]
            fig = plot_roc(y, {m: joined[(m, "probability")] for m in ms}, title=f"ROC: {label}")
            return figure(fig_uri(fig), f"{label}: ROC curves, AUC with DeLong 95% CI ({len(joined)} cases)")

        figs.append(ctx.guard(SECTIONS[2], f"ROC plot ({label})", plot))
    out += "".join(figs)
    # DeLong comparisons on the test split
    drows, dtable = [], []
    ms = ctx.models
    for i in range(len(ms)):
        for j in range(i + 1, len(ms)):
            a, b = ctx.split(ms[i]), ctx.split(ms[j])
            common = a.index.intersection(b.index)
            try:
                if not len(common):
                    raise InputError("predictions.csv", "test cases scored by both models", "none in common")
                r = delong_test(a.loc[common, "label"], a.loc[common, "probability"], b.loc[common, "probability"])
            except InputError as exc:
                drows.append([ms[i], ms[j], len(common), f"not computed: {exc}", "", "", "", "", ""])
                ctx.errors.append(
                    {"section": SECTIONS[2], "kind": "InputError", "message": f"DeLong {ms[i]} vs {ms[j]}: {exc}"}
                )
                continue
            drows.append(
                [ms[i], ms[j], len(common), f3(r.auc_a), f3(r.auc_b), f"{r.difference:.3f}",
                 f"{r.ci_low:.3f}-{r.ci_high:.3f}", f"{r.z:.2f}", fmt_p(r.p)]
            )  # fmt: skip
            dtable.append({"model_a": ms[i], "model_b": ms[j], "n": len(common), **r.as_dict()})
    ctx.tables["delong"] = pd.DataFrame(dtable)
    out += "<h3>DeLong tests (test cohort, paired)</h3>"
    if len(ms) < 2:
        return out + "<p>Only one model: nothing to compare.</p>"
    header = ["Model A", "Model B", "Cases", "AUC A", "AUC B", "Difference (A-B)", "95% CI", "z", "p"]
    return out + table(header, drows, {2, 3, 4, 5, 7, 8})


def _section_threshold(ctx: _Ctx) -> str:
    from usher2.evaluate import threshold_metrics

    rows, records = [], []
    names = ("accuracy", "sensitivity", "specificity", "ppv", "npv")
    for m in ctx.models:
        d = ctx.split(m)
        if m not in ctx.thresholds:
            rows.append([m, f"no threshold: {ctx.threshold_notes.get(m, 'none')}", *[""] * 10])
            continue
        t, source = ctx.thresholds[m]
        try:
            r = threshold_metrics(d["label"], d["probability"], t)
        except InputError as exc:
            rows.append([m, f"{t:.3f}", source, f"not computed: {exc}", *[""] * 8])
            ctx.errors.append({"section": SECTIONS[3], "kind": "InputError", "message": f"{m}: {exc}"})
            continue
        cells = [ci_text(getattr(r, k).value, getattr(r, k).ci_low, getattr(r, k).ci_high) for k in names]
        rows.append([m, f"{t:.3f}", source, r.tp, r.fp, r.fn, r.tn, *cells])
        f = r.as_frame().assign(model=m, threshold=t, threshold_source=source, tp=r.tp, fp=r.fp, fn=r.fn, tn=r.tn)
        records.append(f)
    ctx.tables["threshold_metrics"] = pd.concat(records, ignore_index=True) if records else pd.DataFrame()
    header = ["Model", "Threshold", "Threshold from", "TP", "FP", "FN", "TN",
              "Accuracy", "Sensitivity", "Specificity", "PPV", "NPV"]  # fmt: skip
    intro = (
        "<p>Test cohort at each model's training threshold (Youden on the training out-of-fold "
        "predictions); a case is called positive when its probability is at least the threshold. "
        "Values with Wilson 95% CIs; TP/FP/FN/TN is the confusion matrix.</p>"
    )
    return intro + table(header, rows, {1, 3, 4, 5, 6})


def _section_calibration(ctx: _Ctx) -> str:
    from usher2.evaluate import (
        brier_score,
        calibration_curve,
        calibration_slope_intercept,
        hosmer_lemeshow,
        net_benefit,
        plot_calibration,
        plot_decision_curve,
    )

    sec = SECTIONS[4]
    m = ctx.primary
    d = ctx.split(m)
    y, p = d["label"], d["probability"]
    out = f"<h3>Calibration of {escape(m)} (test cohort)</h3>"
    n_bins = int(max(3, min(10, len(d) // 10)))  # 10 bins from 100 cases on; at least 3 (Hosmer-Lemeshow's minimum)

    def plot() -> str:
        ctx.tables["calibration"] = calibration_curve(y, p, n_bins=n_bins).assign(model=m)
        return figure(fig_uri(plot_calibration(y, {m: p}, n_bins=n_bins)), f"Calibration of {m} ({n_bins} bins)")

    out += ctx.guard(sec, "calibration plot", plot)
    summary: list[dict[str, Any]] = []
    rows: list[list[Any]] = []

    def slope() -> str:
        f = calibration_slope_intercept(y, p)
        rows.append(["Calibration slope (ideal 1)", ci_text(f.slope, f.slope_ci_low, f.slope_ci_high)])
        rows.append(["Calibration intercept (ideal 0)", ci_text(f.intercept, f.intercept_ci_low, f.intercept_ci_high)])
        for stat, v, lo, hi in (
            ("slope", f.slope, f.slope_ci_low, f.slope_ci_high),
            ("intercept", f.intercept, f.intercept_ci_low, f.intercept_ci_high),
        ):
            summary.append({"model": m, "statistic": stat, "value": v, "ci_low": lo, "ci_high": hi})
        return ""

    def brier() -> str:
        b = brier_score(y, p)
        rows.append(["Brier score", f3(b)])
        summary.append({"model": m, "statistic": "brier", "value": b})
        return ""

    def hl() -> str:
        h = hosmer_lemeshow(y, p, g=n_bins)
        rows.append([f"Hosmer-Lemeshow (g={h.g})", f"chi2 {h.statistic:.2f}, df {h.df}, p {fmt_p(h.p)}"])
        summary.append({"model": m, "statistic": "hosmer_lemeshow", "value": h.statistic, "df": h.df, "p": h.p})
        return ""

    msgs = "".join(ctx.guard(sec, what, fn) for what, fn in (("slope/intercept", slope), ("Brier", brier), ("HL", hl)))
    ctx.tables["calibration_summary"] = pd.DataFrame(summary)
    out += (table(["Statistic", "Value (95% CI)"], rows) if rows else "") + msgs
    out += "<h3>Decision curves (test cohort)</h3>"

    def dca() -> str:
        ok = {}
        for name in ctx.models:
            s = ctx.split(name)
            try:
                net_benefit(s["label"], s["probability"], [0.5], names=name)
                ok[name] = s
            except InputError:
                continue
        if not ok:
            raise InputError("predictions.csv", "at least one model with a usable test score", "none")
        joined = pd.concat(ok, axis=1, join="inner")
        yy = joined[(next(iter(ok)), "label")]
        risk = {name: joined[(name, "probability")] for name in ok}
        ctx.tables["net_benefit"] = net_benefit(yy, risk, _DCA_THRESHOLDS)
        fig = plot_decision_curve(yy, risk, _DCA_THRESHOLDS)
        left = [n for n in ctx.models if n not in ok]
        note = f"<p>Left out (unusable test scores): {escape(', '.join(left))}.</p>" if left else ""
        return figure(fig_uri(fig), f"Net benefit, thresholds 0.01-0.60 ({len(joined)} cases)") + note

    return out + ctx.guard(sec, "decision curves", dca)


#: The imaging axis of a nomogram per model family (the studies' names).
_IMAGING_AXIS = {"radiomics": "Radscore", "deep": "Deep Score", "dlr": "DLR score", "combined": "DLR score"}


def _imaging_axis(bundle: Any) -> dict[str, list[str]] | None:
    """``{axis: imaging columns}`` of an early-fusion bundle with more than one imaging input; None otherwise
    (late fusion already has one axis per source score; the clinical model has no imaging input)."""
    cfg = bundle.config
    family = str(cfg.family or "").partition(":")[0]
    if cfg.fusion == "late" or family not in _IMAGING_AXIS:
        return None
    clinical = set(cfg.clinical)
    imaging = [c for c in bundle.columns if c not in clinical]
    return {_IMAGING_AXIS[family]: imaging} if len(imaging) > 1 else None


def _section_nomogram(ctx: _Ctx) -> str:
    from usher2.evaluate import nomogram

    order = [ctx.primary, *[m for m in ctx.models if m != ctx.primary]]
    why = []
    for m in order:
        try:
            b, X = ctx.model_input(m)
            nomo = nomogram(b.model, X=X, combine=_imaging_axis(b) if ctx.nomogram == "imaging" else None)
        except InputError as exc:
            why.append(f"{m}: {exc}")
            continue
        ctx.tables["nomogram"] = nomo.coefficients.assign(model=m)
        note = "" if m == ctx.primary else f"<p>The primary model is not drawn: {escape(why[0])}</p>"
        fig = nomo.plot(title=f"Nomogram: {m}")
        return note + figure(fig_uri(fig), f"Nomogram of {m} (axes span the test cohort's values)")
    ctx.errors.append({"section": SECTIONS[5], "kind": "InputError", "message": "; ".join(why)})
    items = "".join(f"<li>{escape(w)}</li>" for w in why)
    return f'<p class="fail">No model could be drawn as a nomogram:</p><ul>{items}</ul>'


def _section_waterfall(ctx: _Ctx) -> str:
    from usher2.evaluate import plot_waterfall

    m = ctx.primary
    t = ctx.threshold(m)
    d = ctx.split(m)
    fig, _ = plot_waterfall(d["probability"].to_numpy(), d["label"].to_numpy(), threshold=t, score_name="Probability")
    return figure(fig_uri(fig), f"{m}: test probabilities minus the training threshold {t:.3f}, sorted")


def _section_shap(ctx: _Ctx) -> str:
    from usher2.explain import plot_shap_summary, shap_values

    m = ctx.primary
    b, X = ctx.model_input(m)
    exp = shap_values(b.model, X, seed=ctx.seed)
    fig, _ = plot_shap_summary(exp, max_display=15)
    return figure(fig_uri(fig), f"SHAP values of {m} on {len(X)} test cases (classifier margin; top 15 features)")


def _path(root: Path, v: Any) -> Path | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or not str(v).strip():
        return None
    p = Path(str(v))
    return p if p.is_absolute() else root / p


def _cam_setup(bundle: Any) -> tuple[Any, Any, Any, str]:
    """What ``usher2 score`` draws for ``bundle``: its extraction settings, the deep extractor
    of its heat map (the first backbone the model reads, else its first backbone; None without
    one), the target pair (:func:`~usher2.explain.targets.model_target`) and its description."""
    from usher2.explain.targets import model_target
    from usher2.features.models import deep_extractor

    cfg = bundle.config.extract_config("predicted")
    extractors = {spec: deep_extractor(cfg, spec) for spec in cfg.backbones}
    used = [s for s, ex in extractors.items() if set(bundle.columns) & set(ex.columns)]
    spec = used[0] if used else (cfg.backbones[0] if cfg.backbones else None)
    if spec is None:
        return cfg, None, None, "none: the model has no deep backbone (scoring draws no heat map)"
    target, what = model_target(bundle.model, extractors[spec].columns, spec in used)
    return cfg, extractors[spec], target, f"Grad-CAM of <code>{escape(spec)}</code>, target: {escape(what)}"


def _cam_groups(d: pd.DataFrame, t: float, k: int) -> dict[str, pd.DataFrame]:
    fp = (d["label"] == 0) & (d["probability"] >= t)
    fn = (d["label"] == 1) & (d["probability"] < t)
    tp = (d["label"] == 1) & (d["probability"] >= t)
    return {
        "Worst false positives (negatives with the highest probability)": d[fp]
        .sort_values("probability", ascending=False)
        .head(k),
        "Worst false negatives (positives with the lowest probability)": d[fn].sort_values("probability").head(k),
        "True positives (highest probability)": d[tp].sort_values("probability", ascending=False).head(k),
    }


def _scored_overlay(ctx: _Ctx, setup: tuple[Any, Any, Any, str], case: Any, icol: str, prob: float, t: float) -> Any:
    """The frame as ``usher2 score`` draws it: enhanced, its predicted mask, the heat map of the
    predicted class (:func:`~usher2.explain.render.render_overlay`)."""
    from usher2.explain import explain_frame
    from usher2.explain.render import render_overlay
    from usher2.features.extract import prepare_pixels
    from usher2.io.frames import read_frame

    cfg, ex, target, _ = setup
    man = ctx.manifest()
    if case not in man.index:
        raise InputError(ctx.root / "manifest.csv", f"a row for case {case}", "none")
    ipath = _path(ctx.root, man.at[case, icol])
    if ipath is None:
        raise InputError(f"case {case}", "an image path", "an empty cell")
    p = prepare_pixels(cfg, read_frame(ipath).pixels, where=f"case {case}")
    heat = None
    if ex is not None:
        pick = target[0 if prob >= t else 1] if target is not None else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            heat = explain_frame(p["pixels"], p["mask"], backbone=ex, method="gradcam", target=pick).frame_heat
    return render_overlay(p["pixels"], p["mask"], heat, f"p={prob:.3f}")


def _section_cam(ctx: _Ctx, k: int) -> str:
    if k <= 0:
        return "<p>No Grad-CAM examples requested (cam_examples=0).</p>"
    m = ctx.primary
    t = ctx.threshold(m)
    man = ctx.manifest()
    icol = "image" if "image" in man.columns else "image_path"
    if icol not in man.columns:
        raise InputError(ctx.root / "manifest.csv", "an image column", f"columns {list(man.columns)[:8]}")
    setup = _cam_setup(ctx.bundle(m))
    out = [f"<p>Each frame as <code>usher2 score</code> draws it with {escape(m)}: the frame as scored "
           f"(after the bundle's enhancer), its predicted lesion contour and the heat map inside the ROI box; "
           f"heat map: {setup[3]}. Threshold {t:.3f}.</p>"]  # fmt: skip
    unreadable = []
    for title, g in _cam_groups(ctx.split(m), t, k).items():
        out.append(f"<h3>{escape(title)}</h3>")
        if g.empty:
            out.append("<p>None.</p>")
            continue
        figs = []
        for case, row in g.iterrows():
            try:
                rgb = _scored_overlay(ctx, setup, case, icol, float(row["probability"]), t)
            except (InputError, OSError) as exc:  # NoLesion is an InputError: listed with the unreadable
                unreadable.append([case, str(exc)])
                continue
            figs.append(figure(rgb_uri(rgb), f"{case} | label {int(row['label'])} | p = {row['probability']:.3f}"))
        out.append('<div class="cams">' + "".join(figs) + "</div>")
    if unreadable:
        out.append("<h3>Cases that could not be shown</h3>" + table(["Case", "Problem"], unreadable))
        ctx.errors.extend(
            {"section": SECTIONS[8], "kind": "InputError", "message": f"{c}: {msg}"} for c, msg in unreadable
        )
    return "".join(out)


# ---------------------------------------------------------------- the report


def write_cohort_report(
    eval_dir: str | Path,
    out_html: str | Path,
    *,
    cam_examples: int = 4,
    seed: int = 0,
    extra_sections: Sequence[tuple[str, str]] = (),
    nomogram: str = "imaging",
) -> Path:
    """Write the cohort report of an evaluation directory (see the module docstring) as one HTML file.

    Args:
        eval_dir: The evaluation directory ``DIR``.
        out_html: The HTML file to write (atomically; its folder is created).
        cam_examples: Grad-CAM examples per group (false positives, false negatives, true positives); 0: none.
        seed: Seed of the SHAP background sample.
        extra_sections: ``(heading, HTML body)`` pairs appended after the standard sections, numbered
            on from them (a study recipe's own analyses: survival, bootstrap validation...).
        nomogram: ``imaging``: one axis for the imaging score (the summed log-odds of the model's
            imaging features: Radscore, Deep Score or the imaging linear predictor; a late-fusion
            model's own source scores) plus one per clinical variable, as the published
            nomograms draw them; ``features``: one axis per selected feature.

    Returns:
        ``out_html``. The numbers are in ``DIR/report_tables/*.csv``.

    Raises:
        InputError: ``predictions.csv`` or ``summary.json`` missing or invalid. Nothing else raises:
            a failing analysis is reported in its section and in ``report_tables/errors.csv``.

    Example:
        >>> write_cohort_report("runs/eval", "runs/eval/report.html")  # doctest: +SKIP
        PosixPath('runs/eval/report.html')
        >>> import tempfile
        >>> try:
        ...     write_cohort_report(tempfile.mkdtemp(), "r.html")
        ... except InputError as exc:
        ...     "summary.json" in str(exc)
        True
    """
    t0 = time.perf_counter()
    root = Path(eval_dir)
    out_html = Path(out_html)
    summary = _read_summary(root / "summary.json")
    preds, dropped = _read_predictions(root / "predictions.csv")
    oof_only = not (preds["split"] == "test").any()
    if oof_only:  # a bundle's report: its out-of-fold predictions take the evaluated cohort's place
        preds = preds[preds["split"] == "train_oof"].assign(split="test").reset_index(drop=True)
    models = list(dict.fromkeys(preds["model"].astype(str)))
    wanted = summary.primary_model or "combined"
    primary = wanted if wanted in models else models[0]
    if nomogram not in ("imaging", "features"):
        raise InputError("nomogram", "'imaging' or 'features'", repr(nomogram))
    ctx = _Ctx(root, summary, preds, dropped, models, primary, int(seed), nomogram)
    given, note = _read_thresholds(root / "thresholds.json")
    _resolve_thresholds(ctx, given, note)

    bodies = [
        ctx.guard(SECTIONS[0], "data summary", lambda: _section_data(ctx)),
        ctx.guard(SECTIONS[1], "methods", lambda: _section_methods(ctx)),
        ctx.guard(SECTIONS[2], "discrimination", lambda: _section_roc(ctx)),
        ctx.guard(SECTIONS[3], "threshold metrics", lambda: _section_threshold(ctx)),
        ctx.guard(SECTIONS[4], "calibration", lambda: _section_calibration(ctx)),
        ctx.guard(SECTIONS[5], "nomogram", lambda: _section_nomogram(ctx)),
        ctx.guard(SECTIONS[6], "waterfall", lambda: _section_waterfall(ctx)),
        ctx.guard(SECTIONS[7], "SHAP summary", lambda: _section_shap(ctx)),
        ctx.guard(SECTIONS[8], "Grad-CAM examples", lambda: _section_cam(ctx, int(cam_examples))),
    ]
    title = summary.title
    names = [*SECTIONS, *(f"{len(SECTIONS) + i + 1}. {h}" for i, (h, _) in enumerate(extra_sections))]
    bodies += [body for _, body in extra_sections]
    sections = "".join(
        f'<section id="s{i + 1}"><h2>{escape(name)}</h2>{body}</section>'
        for i, (name, body) in enumerate(zip(names, bodies, strict=True))
    )
    if oof_only:
        relabel = {"test cohort": "training cohort (out-of-fold)", "Test cohort": "Training cohort (out-of-fold)"}
        for a, b in relabel.items():
            sections = sections.replace(a, b)
        sections = (
            '<p class="fail">No held-out cohort: every analysis below uses the nested-CV out-of-fold predictions '
            "of the training cohort.</p>" + sections
        )
    seconds = time.perf_counter() - t0
    doc = document(title, f'{sections}<p class="meta">Rendered in {seconds:.1f} s. Numbers: report_tables/*.csv.</p>')
    tables_dir = root / "report_tables"
    ctx.tables["errors"] = pd.DataFrame(ctx.errors, columns=["section", "kind", "message"])
    for name, df in ctx.tables.items():
        with atomic_path(tables_dir / f"{name}.csv") as tmp:
            df.to_csv(tmp, index=False)
    atomic_write_text(out_html, doc)
    return out_html
