"""The four MRI study recipes, run on the shared fusion core: ``usher2 mri reproduce STUDY``.

A recipe is a YAML file (``usher2/mri/studies/<study>.yaml``, or any file of the same form) that
says which phantoms to simulate, which features to extract, which models to fit (each one call
of :func:`usher2.fusion.fit.fit_cohort`: nested CV, selection inside the folds, a bundle), and
which of the study's own analyses to add to the standard cohort report.

=================  ==========================================================================
``prostate``       Huang et al.: T2WI + ADC radiomics, Mann-Whitney U + LASSO (10-fold CV),
                   Radscore, clinical (ISUP, PSA), combined (joint fit) and nomogram (Radscore
                   + ISUP + PSA); fixed 160/41 split
                   (``--validation nested`` for patient-grouped nested CV instead)
``breast-mpmri``   Li et al.: a model per sequence (T2WI, DWI, DCE phase 3, phase 7), sequence
                   combinations, clinical-imaging, combined; DeLong comparison matrix
``breast-birads``  Chen et al.: random forest on BI-RADS descriptors, two tasks (positive vs
                   negative; HER2-low vs zero), SHAP ranking, Kaplan-Meier + log-rank of DFS by
                   score group
``breast-deep``    Qiu et al.: ResNet50/VGG16/EfficientNet-B0/ViT-S 2.5D deep features on T1, T2,
                   DCE; ICC >= 0.9; LASSO Deep Score per backbone; nomogram with clinical
                   variables; calibration, Hosmer-Lemeshow, 1,000-resample bootstrap validation, DCA
=================  ==========================================================================

**Run.** ``reproduce(recipe, out)`` simulates a training and a held-out test cohort of phantoms
(different seeds, so no patient is in both), extracts their feature tables
(:func:`usher2.mri.features.extract_mri_cohort`; resumable), fits every model on the training
cohort, scores the held-out cohort once, and writes per task an evaluation directory with the
cohort report (``tasks/<task>/report.html``) plus the study's extra sections. With a user's own
manifests (``train=``, ``test=``) nothing is simulated and no oracle is known.

**Oracle.** Phantoms carry their true probability, so each model is compared with the oracle AUC
of the variables it can see (``oracle: clinical | image | all``) on the same held-out cases;
``auc.csv`` gives ``ratio = test_auc / oracle_auc`` and whether the task's final model meets
0.95.

**Extras.** The study's own analyses (``extras``: DeLong matrix, SHAP ranking, survival by score
group, bootstrap validation, ICC) are the sections of :mod:`usher2.report.study`, over the
statistics of :mod:`usher2.evaluate.study`; this module only picks their inputs.

**Missing sequences.** A sequence a model needs and the manifest lacks is an error naming it and
the models that need it, unless the recipe declares a ``fallback`` (for instance ``dwi_b800: adc``:
the "DWI" models use the ADC map), which is then applied and recorded in ``recipe.json``.

Outputs under ``out``::

    phantoms/train, phantoms/test     simulated cohorts (manifest.csv, NIfTI volumes)
    features/train.parquet, test...    feature tables (+ provenance, failures, perturbations)
    tasks/<task>/                      evaluation directory: predictions.csv, summary.json,
                                       thresholds.json, bundles/<model>/, report.html, report_tables/
    auc.csv                            every model: CV and test AUC with 95% CI, oracle AUC, ratio
    recipe.json                        the resolved recipe, fallbacks used, timings, the verdict

Example:
    >>> r = load_recipe("prostate")
    >>> r.study, [m.name for m in r.models]
    ('prostate', ['radscore', 'clinical', 'combined', 'nomogram'])
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.evaluate.study import final_verdict, held_out_auc, oracle_ratio
from usher2.evaluate.summary import predictions_table
from usher2.fusion.models import check_selection
from usher2.io.atomic import atomic_path, atomic_write_text
from usher2.io.config import check_keys, read_mapping
from usher2.io.errors import InputError
from usher2.report.study import (
    bootstrap_section,
    delong_section,
    icc_section,
    shap_section,
    study_sections,
    survival_section,
    write_study_evaluation,
)

__all__ = [
    "STUDIES",
    "ModelSpec",
    "Recipe",
    "ReproduceResult",
    "TaskSpec",
    "load_recipe",
    "reproduce",
]

STUDIES_DIR = Path(__file__).with_name("studies")
STUDIES = ("prostate", "breast-mpmri", "breast-birads", "breast-deep")
TARGET_RATIO = 0.95
ORACLE_VIEWS = ("clinical", "image", "all")
EXTRAS = ("delong_matrix", "shap_ranking", "survival", "bootstrap", "icc")
_TOP_KEYS = {
    "study",
    "title",
    "reference",
    "phantom",
    "n_train",
    "n_test",
    "validation",
    "extract",
    "descriptors",
    "fallbacks",
    "selection",
    "outer_folds",
    "inner_folds",
    "calibration",
    "tasks",
    "models",
    "extras",
    "survival",
    "bootstrap",
    "icc_threshold",
}


@dataclass(frozen=True)
class ModelSpec:
    """One model of a recipe: a :func:`~usher2.fusion.fit.fit_cohort` call.

    Attributes:
        name: Model name (its bundle is ``tasks/<task>/bundles/<name>``).
        family: A fusion family (``clinical``, ``radiomics``, ``deep``, ``deep:NAME``, ``dlr``,
            ``combined``) or ``descriptors`` (the BI-RADS descriptor columns, as tabular inputs).
        sequences: Imaging sequences the model reads (empty: all).
        clinical: Clinical columns of the manifest.
        classifier: ``lr``, ``rf``, ``xgboost``, ``lightgbm``, ``svm`` or ``mlp`` (early fusion).
        fusion: ``early`` or ``late`` (source scores + clinical in one logistic model).
        late_sources: ``family`` or ``backbone`` (one Deep Score per backbone).
        icc: Filter imaging features by ICC on the perturbation table.
        oracle: What the model can see, for its oracle AUC: a view (``clinical``, ``image``, ``all``),
            a list of views and phantom variables (``[image, isup, psa]``), or ``descriptors`` (the
            BI-RADS descriptors + the model's clinical columns; see :func:`_descriptor_oracle`).
        task: The recipe task it belongs to.
        selection: Selection settings of this model (:data:`usher2.fusion.models.SELECTION_KEYS`),
            over the recipe's ``selection``.
    """

    name: str
    family: str = "radiomics"
    sequences: tuple[str, ...] = ()
    clinical: tuple[str, ...] = ()
    classifier: str = "lr"
    fusion: str = "early"
    late_sources: str = "family"
    icc: bool = False
    oracle: str | tuple[str, ...] = "all"
    task: str = "main"
    selection: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """A prediction task: its label column, the cases it uses and its final model."""

    name: str
    label: str = "label"
    subset: str | None = None
    primary: str = "combined"


@dataclass(frozen=True)
class Recipe:
    """A study recipe (see the module docstring and ``usher2/mri/studies/*.yaml``)."""

    study: str
    title: str
    reference: str
    phantom: dict[str, Any]
    n_train: int
    n_test: int
    validation: str
    extract: dict[str, Any] | None
    descriptors: dict[str, Any] | None
    fallbacks: dict[str, str]
    selection: dict[str, Any]
    outer_folds: int
    inner_folds: int
    calibration: str | None
    tasks: tuple[TaskSpec, ...]
    models: tuple[ModelSpec, ...]
    extras: tuple[str, ...]
    survival: dict[str, Any] = field(default_factory=dict)
    bootstrap: dict[str, Any] = field(default_factory=dict)
    icc_threshold: float = 0.9
    source: str = ""

    def sequences(self) -> list[str]:
        """Every imaging sequence the recipe extracts."""
        return list((self.extract or {}).get("sequences", []))

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


def _spec(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise InputError(where, "a mapping of settings", type(raw).__name__)
    names = set(cls.__dataclass_fields__)
    unknown = sorted(set(raw) - names)
    if unknown:
        raise InputError(where, f"keys among {sorted(names)}", f"unknown keys {unknown}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InputError(where, f"the required keys of {cls.__name__}", str(exc)) from None


def load_recipe(study: str | Path) -> Recipe:
    """A recipe by study name (:data:`STUDIES`) or from a YAML file.

    Raises:
        InputError: Unknown study, unreadable YAML, unknown keys, models naming unknown tasks, a
            task without its primary model, unknown extras or oracle views.
    """
    path = STUDIES_DIR / f"{study}.yaml" if str(study) in STUDIES else Path(study)
    if not path.is_file():
        raise InputError("study", f"one of {', '.join(STUDIES)} or a recipe YAML file", repr(str(study)))
    raw = read_mapping(path, "an MRI study recipe (YAML)")
    check_keys(path, raw, _TOP_KEYS, "top-level keys")
    for key in ("study", "tasks", "models"):
        if key not in raw:
            raise InputError(path, f"a {key!r} entry", "none")
    tasks = tuple(_spec(TaskSpec, t, f"{path}: tasks[{i}]") for i, t in enumerate(raw["tasks"]))
    models = tuple(_spec(ModelSpec, m, f"{path}: models[{i}]") for i, m in enumerate(raw["models"]))
    task_names = [t.name for t in tasks]
    for m in models:
        check_selection(m.selection, f"{path}: model {m.name!r}: selection")
        if m.task not in task_names:
            raise InputError(f"{path}: model {m.name!r}", f"a task among {task_names}", repr(m.task))
        if isinstance(m.oracle, str) and m.oracle not in (*ORACLE_VIEWS, "descriptors"):
            raise InputError(f"{path}: model {m.name!r}", f"oracle among {ORACLE_VIEWS} or a list", repr(m.oracle))
    for t in tasks:
        if t.primary not in [m.name for m in models if m.task == t.name]:
            raise InputError(f"{path}: task {t.name!r}", "a primary model among its models", repr(t.primary))
    extras = tuple(raw.get("extras") or ())
    bad = [e for e in extras if e not in EXTRAS]
    if bad:
        raise InputError(f"{path}: extras", f"names among {EXTRAS}", repr(bad))
    validation = str(raw.get("validation", "split"))
    if validation not in ("split", "nested"):
        raise InputError(f"{path}: validation", "'split' or 'nested'", repr(validation))
    calibration = raw.get("calibration", "sigmoid")
    return Recipe(
        study=str(raw["study"]),
        title=str(raw.get("title", raw["study"])),
        reference=str(raw.get("reference", "")),
        phantom=dict(raw.get("phantom") or {}),
        n_train=int(raw.get("n_train", 300)),
        n_test=int(raw.get("n_test", 300)),
        validation=validation,
        extract=dict(raw["extract"]) if raw.get("extract") else None,
        descriptors=dict(raw["descriptors"]) if raw.get("descriptors") is not None else None,
        fallbacks={str(k): str(v) for k, v in (raw.get("fallbacks") or {}).items()},
        selection=check_selection(raw.get("selection"), f"{path}: selection"),
        outer_folds=int(raw.get("outer_folds", 5)),
        inner_folds=int(raw.get("inner_folds", 3)),
        calibration=None if calibration in (None, "none") else str(calibration),
        tasks=tasks,
        models=models,
        extras=extras,
        survival=dict(raw.get("survival") or {}),
        bootstrap=dict(raw.get("bootstrap") or {}),
        icc_threshold=float(raw.get("icc_threshold", 0.9)),
        source=str(path),
    )


@dataclass
class ReproduceResult:
    """What :func:`reproduce` produced."""

    out: Path
    table: pd.DataFrame
    reports: dict[str, Path]
    seconds: dict[str, float]
    fallbacks: dict[str, str]

    def final(self) -> pd.DataFrame:
        """The rows of every task's final (primary) model."""
        return self.table[self.table["final"]]


# ----------------------------------------------------------------------------------- sequences


def _available(manifest: pd.DataFrame, seq: str) -> bool:
    def has(col: str) -> bool:
        return col in manifest.columns and manifest[col].notna().any()

    if has(seq):
        return True
    if seq == "adc":
        return sum(bool(re.fullmatch(r"dwi_b[0-9.]+", c)) and has(c) for c in manifest.columns) >= 2
    m = re.fullmatch(r"dce_p(\d+)", seq)
    return bool(m) and has("dce")


def _resolve_sequences(recipe: Recipe, manifests: Sequence[pd.DataFrame]) -> tuple[Recipe, dict[str, str]]:
    """Apply the recipe's fallbacks for sequences the manifests lack; error when none applies."""
    used: dict[str, str] = {}
    missing: list[str] = []
    for seq in recipe.sequences():
        if all(_available(m, seq) for m in manifests):
            continue
        alt = recipe.fallbacks.get(seq)
        if alt and alt in _known_sequences() and all(_available(m, alt) for m in manifests):
            used[seq] = alt
        else:
            missing.append(seq)
    if missing:
        needs = {s: [m.name for m in recipe.models if not m.sequences or s in m.sequences] for s in missing}
        fix = "; ".join(f"{s}: fallback {recipe.fallbacks[s]!r}" for s in missing if s in recipe.fallbacks)
        raise InputError(
            "manifest",
            f"the sequences the {recipe.study} recipe needs ({', '.join(recipe.sequences())})",
            "missing " + ", ".join(f"{s} (models {needs[s]})" for s in missing),
            fix=(f"the recipe's fallbacks do not apply ({fix})" if fix else "add the sequence's column"),
        )
    if not used:
        return recipe, used
    swap = lambda seqs: tuple(dict.fromkeys(used.get(s, s) for s in seqs))  # noqa: E731
    extract = dict(recipe.extract or {})
    extract["sequences"] = list(swap(extract.get("sequences", [])))
    models = tuple(replace(m, sequences=swap(m.sequences)) for m in recipe.models)
    return replace(recipe, extract=extract, models=models), used


def _known_sequences() -> set[str]:
    return {"t1", "t2", "adc", "dce", "dwi_b800", "dwi_b1000", "dce_p3", "dce_p7"} | {f"dce_p{k}" for k in range(1, 16)}


# ----------------------------------------------------------------------------------- cohorts


def _phantom_config(recipe: Recipe, overrides: Mapping[str, Any] | None) -> Any:
    from usher2.mri.phantom import MRIPhantomConfig

    kwargs = {**recipe.phantom, **dict(overrides or {})}
    for k in ("shape_zyx", "spacing_zyx_mm", "sequences", "dce_times_s", "b_values"):
        if k in kwargs:
            kwargs[k] = tuple(kwargs[k])
    try:
        return MRIPhantomConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{recipe.source}: phantom", "MRIPhantomConfig settings", str(exc)) from None


def _prefixed(man: pd.DataFrame, prefix: str) -> pd.DataFrame:
    man = man.copy()
    man["case_id"] = prefix + man["case_id"].astype(str)
    man["patient_id"] = prefix + man["patient_id"].astype(str)
    return man


def _read(manifest: str | Path | pd.DataFrame, sequences: Sequence[str]) -> pd.DataFrame:
    from usher2.mri.manifest import read_mri_manifest

    return read_mri_manifest(manifest, sequences=list(sequences) or None)


def _features(
    recipe: Recipe,
    manifest: pd.DataFrame,
    out: Path,
    *,
    workers: int,
    seed: int,
    reader_seed: int,
    progress: Callable[[str, int, int], None] | None,
    name: str,
) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame]:
    """The feature table, the perturbation table (or None) and the failures of one cohort."""
    if recipe.descriptors is not None:
        from usher2.mri.birads import BIRADS_COLUMN_ALIASES, BIRADS_DESCRIPTORS, encode_birads, phantom_descriptors

        names = set(BIRADS_DESCRIPTORS) | {a for v in BIRADS_COLUMN_ALIASES.values() for a in v}
        given = [c for c in manifest.columns if c in names]
        if given:  # a radiologist's reading in the manifest
            table = manifest[["case_id", *given]]
        elif "trait_curve_type" in manifest.columns:  # a phantom: a simulated reader
            table = phantom_descriptors(manifest, seed=reader_seed, **recipe.descriptors)
        else:
            raise InputError(
                "manifest",
                f"BI-RADS descriptor columns ({', '.join(BIRADS_DESCRIPTORS)})",
                f"none among {list(manifest.columns)[:10]}",
            )
        enc = encode_birads(table)
        return enc, None, pd.DataFrame(columns=["case_id", "stage", "error"])
    from usher2.mri.features import MRIExtractConfig, extract_mri_cohort

    settings = dict(recipe.extract or {})
    for k, v in list(settings.items()):
        if isinstance(v, list):
            settings[k] = tuple(v)
    settings.setdefault("seed", seed)
    try:
        cfg = MRIExtractConfig(**settings)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{recipe.source}: extract", "MRIExtractConfig settings", str(exc)) from None
    update = (lambda d, n: progress(f"extract {name}", d, n)) if progress else None
    res = extract_mri_cohort(manifest, out / "features" / f"{name}.parquet", cfg, workers=workers, progress=update)
    return res.table, res.perturbations, res.failures


# ----------------------------------------------------------------------------------- oracle


def _oracle(
    task: TaskSpec, manifest: pd.DataFrame, config: Any, models: Sequence[ModelSpec], recipe: Recipe, seed: int
) -> dict[str, float]:
    """Each model's oracle AUC on these cases: the Bayes score of the variables it can see; NaN
    where the truth is unknown (a user's data)."""
    if config is None or task.label not in manifest.columns:
        return {m.name: float("nan") for m in models}
    from sklearn.metrics import roc_auc_score

    from usher2.mri import phantom

    rows = manifest[pd.to_numeric(manifest[task.label], errors="coerce").notna()]
    y = rows[task.label].astype(int).to_numpy()
    out = {}
    for m in models:
        if m.oracle == "descriptors":
            out[m.name] = _descriptor_oracle(task, m, rows, y, config, recipe, seed)
            continue
        names = [m.oracle] if isinstance(m.oracle, str) else list(m.oracle)
        try:
            score = phantom.mri_oracle_scores(rows, names, config, task=task.label)
            out[m.name] = float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")
        except (InputError, KeyError, ValueError) as exc:
            raise InputError(f"model {m.name!r}", "oracle variables of the phantom", f"{names} ({exc})") from None
    return out


#: Labels-only phantoms behind the descriptor oracle.
DESCRIPTOR_ORACLE_N = 200_000


def _descriptor_oracle(
    task: TaskSpec, model: ModelSpec, rows: pd.DataFrame, y: np.ndarray, config: Any, recipe: Recipe, seed: int
) -> float:
    """The oracle AUC of a model that sees BI-RADS descriptors (+ clinical columns).

    A descriptor is a coarse, noisy reading of the traits, so the Bayes score given the descriptors
    has no closed form. It is approximated by a large-sample model: gradient boosting fitted on
    :data:`DESCRIPTOR_ORACLE_N` labels-only phantoms read by the same simulated reader (its own seed),
    then applied to the descriptors these cases' models saw. With 200,000 patients for a dozen discrete columns
    and a few clinical ones it is within sampling noise of E[label | what the model sees].
    """
    from sklearn.metrics import roc_auc_score

    if not 0 < y.sum() < len(y):
        return float("nan")
    key = (task.label, task.subset, tuple(model.clinical), seed, DESCRIPTOR_ORACLE_N, json.dumps(config.to_dict()))
    if key not in _ORACLE_MODELS:
        _ORACLE_MODELS[key] = _descriptor_oracle_model(task, model, config, recipe, seed)
    gbm, columns = _ORACLE_MODELS[key]
    X = rows[columns].apply(pd.to_numeric, errors="coerce")  # the reading the models saw
    return float(roc_auc_score(y, gbm.predict_proba(X)[:, 1]))


_ORACLE_MODELS: dict[tuple, tuple[Any, list[str]]] = {}


def _descriptor_oracle_model(
    task: TaskSpec, model: ModelSpec, config: Any, recipe: Recipe, seed: int
) -> tuple[Any, list[str]]:
    from lightgbm import LGBMClassifier

    from usher2.mri.birads import encode_birads, phantom_descriptors
    from usher2.mri.phantom import simulate_mri_labels

    pool = simulate_mri_labels(DESCRIPTOR_ORACLE_N, 900_000 + seed, config)
    pool.insert(0, "case_id", [f"pool-{i}" for i in range(len(pool))])
    if task.subset:
        pool = pool.query(task.subset)
    pool = pool[pd.to_numeric(pool[task.label], errors="coerce").notna()]
    settings = dict(recipe.descriptors or {})

    def design(df: pd.DataFrame, reader_seed: int) -> pd.DataFrame:
        enc = encode_birads(phantom_descriptors(df, seed=reader_seed, **settings)).set_index("case_id")
        for c in model.clinical:
            enc[c] = pd.to_numeric(df.set_index("case_id")[c], errors="coerce")
        return enc

    X_pool = design(pool, 800_000 + seed)
    gbm = LGBMClassifier(
        n_estimators=400, learning_rate=0.05, num_leaves=31, min_child_samples=200, n_jobs=1, random_state=0, verbose=-1
    ).fit(X_pool, pool[task.label].astype(int).to_numpy())
    return gbm, list(X_pool.columns)


# ----------------------------------------------------------------------------------- fitting


def _fit_args(recipe: Recipe, model: ModelSpec, descriptor_cols: list[str]) -> dict[str, Any]:
    family = model.family
    clinical = list(model.clinical)
    if family == "descriptors":
        family, clinical = "clinical", descriptor_cols + clinical
    return {
        "family": family,
        "clinical": clinical,
        "sequences": list(model.sequences) or None,
        "classifier": model.classifier,
        "fusion": model.fusion,
        "late_sources": model.late_sources,
        "selection": {"icc_threshold": recipe.icc_threshold, **recipe.selection, **model.selection},
    }


def _model_dir(name: str) -> str:
    return "bundles/" + re.sub(r"[^A-Za-z0-9_.+-]", "-", name)


def reproduce(
    recipe: Recipe | str | Path,
    out: str | Path,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    validation: str | None = None,
    workers: int = 1,
    phantom: Mapping[str, Any] | None = None,
    outer_folds: int | None = None,
    train: str | Path | pd.DataFrame | None = None,
    test: str | Path | pd.DataFrame | None = None,
    report: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> ReproduceResult:
    """Run a study recipe end to end (see the module docstring).

    Args:
        recipe: A :class:`Recipe`, a study name or a recipe file.
        out: Output folder (resumable: phantoms and features are reused).
        n_train: Training phantoms (default: the recipe's).
        n_test: Held-out phantoms (default: the recipe's).
        seed: Seed of the phantoms (test cohort: ``seed + 1``), descriptors and every split.
        validation: ``split`` (fit on train, score test) or ``nested`` (pool both cohorts; nested CV).
        workers: Processes for simulation and extraction.
        phantom: Overrides of the recipe's phantom settings (e.g. a smaller ``shape_zyx``).
        outer_folds: Overrides the recipe's outer folds.
        train: A user's training manifest instead of phantoms (with ``test``).
        test: A user's held-out manifest.
        report: Write each task's HTML report.
        progress: ``progress(stage, done, total)``.
        log: Receives one line per event.

    Returns:
        The :class:`ReproduceResult`; ``auc.csv`` and ``recipe.json`` in ``out``.

    Raises:
        InputError: A bad recipe or manifest, missing sequences without a fallback.
    """
    say = log or (lambda _m: None)
    rec = _with_overrides(recipe if isinstance(recipe, Recipe) else load_recipe(recipe), validation, outer_folds)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    # 1. cohorts
    raw, config = _cohorts(
        rec,
        out,
        train,
        test,
        n_train=n_train,
        n_test=n_test,
        seed=seed,
        phantom=phantom,
        workers=workers,
        progress=progress,
        say=say,
    )
    seconds["simulate"] = time.perf_counter() - t0
    rec, fallbacks = _resolve_sequences(rec, list(raw.values()))
    for s, alt in fallbacks.items():
        say(f"fallback: {alt} in place of the missing {s}")
    mans = {k: _read(v, rec.sequences()) if rec.extract else v for k, v in raw.items()}

    # 2. features
    t = time.perf_counter()
    feats, perts, failures = _cohort_features(rec, mans, out, workers=workers, seed=seed, progress=progress)
    seconds["features"] = time.perf_counter() - t
    data = _fit_data(rec, mans, feats, perts)

    # 3. models, per task
    t = time.perf_counter()
    done = [
        _run_task(rec, task, out, data, config, seed=seed, report=report, progress=progress, say=say)
        for task in rec.tasks
    ]
    rows = [row for task_rows, _ in done for row in task_rows]
    reports = {task.name: path for task, (_, path) in zip(rec.tasks, done, strict=True) if path is not None}
    seconds["models"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0

    table = _write_run(out, rec, rows, failures, data, fallbacks, seed=seed, seconds=seconds, config=config)
    return ReproduceResult(out, table, reports, seconds, fallbacks)


def _with_overrides(rec: Recipe, validation: str | None, outer_folds: int | None) -> Recipe:
    """The recipe with :func:`reproduce`'s ``validation`` and ``outer_folds`` (when given)."""
    if validation is not None:
        if validation not in ("split", "nested"):
            raise InputError("validation", "'split' or 'nested'", repr(validation))
        rec = replace(rec, validation=validation)
    if outer_folds is not None:
        rec = replace(rec, outer_folds=int(outer_folds))
    return rec


def _cohorts(
    rec: Recipe,
    out: Path,
    train: str | Path | pd.DataFrame | None,
    test: str | Path | pd.DataFrame | None,
    *,
    n_train: int | None,
    n_test: int | None,
    seed: int,
    phantom: Mapping[str, Any] | None,
    workers: int,
    progress: Callable[[str, int, int], None] | None,
    say: Callable[[str], None],
) -> tuple[dict[str, pd.DataFrame], Any]:
    """The raw manifests of the training and test cohorts, and the phantom configuration.

    Without the user's manifests (``train``, ``test``) both cohorts are simulated under
    ``out/phantoms`` (seeds ``seed`` and ``seed + 1``; case and patient ids prefixed by the
    cohort's name); with them nothing is simulated and the configuration is None (no oracle).
    """
    config = None
    if (train is None) != (test is None):
        raise InputError("manifests", "both a training and a test manifest (or neither: phantoms)", "only one")
    if train is None:
        from usher2.mri.phantom import simulate_mri_cohort

        config = _phantom_config(rec, phantom)
        sizes = {"train": n_train or rec.n_train, "test": n_test or rec.n_test}
        raw = {}
        for i, (name, n) in enumerate(sizes.items()):
            say(f"simulating {n} {name} phantoms")
            update = (lambda d, k, name=name: progress(f"simulate {name}", d, k)) if progress else None
            simulate_mri_cohort(n, seed + i, out / "phantoms" / name, config, workers=workers, progress=update)
            raw[name] = _prefixed(_read(out / "phantoms" / name / "manifest.csv", []), f"{name}-")
    else:
        raw = {"train": _read(train, []), "test": _read(test, [])}
    return raw, config


def _cohort_features(
    rec: Recipe,
    mans: dict[str, pd.DataFrame],
    out: Path,
    *,
    workers: int,
    seed: int,
    progress: Callable[[str, int, int], None] | None,
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame | None], list[pd.DataFrame]]:
    """Every cohort's feature table, perturbation table (or None) and failures (with a ``cohort`` column)."""
    feats, perts, failures = {}, {}, []
    for i, (name, man) in enumerate(mans.items()):
        # the same extraction settings (random backbones' weights included) for both cohorts; the
        # simulated readers of the two cohorts are independent (seed + i)
        feats[name], perts[name], fail = _features(
            rec, man, out, workers=workers, seed=seed, reader_seed=seed + i, progress=progress, name=name
        )
        failures.append(fail.assign(cohort=name))
    return feats, perts, failures


@dataclass
class _FitData:
    """What the models of a run are fitted on and scored with.

    Attributes:
        mans: Cohort name -> manifest (with the BI-RADS descriptor columns, when the recipe has them).
        feats: Cohort name -> feature table.
        perts: Cohort name -> perturbation table, or None.
        fit_on: The cohort the models are fitted on: ``train``, or ``all`` (both pooled) for nested validation.
        descriptor_cols: The BI-RADS descriptor columns (``birads_*``), tabular inputs of ``descriptors`` models.
    """

    mans: dict[str, pd.DataFrame]
    feats: dict[str, pd.DataFrame]
    perts: dict[str, pd.DataFrame | None]
    fit_on: str
    descriptor_cols: list[str]


def _fit_data(
    rec: Recipe,
    mans: dict[str, pd.DataFrame],
    feats: dict[str, pd.DataFrame],
    perts: dict[str, pd.DataFrame | None],
) -> _FitData:
    """The cohorts as the models see them: descriptors merged into the manifests; pooled for nested validation."""
    descriptor_cols = [c for c in feats["train"].columns if c.startswith("birads_")]
    if descriptor_cols:  # descriptors are tabular inputs: they travel with the manifest
        mans = {name: man.merge(feats[name], on="case_id", how="left") for name, man in mans.items()}
    if rec.validation == "nested":
        mans = {"all": pd.concat(list(mans.values()), ignore_index=True)}
        feats = {"all": pd.concat(list(feats.values()), ignore_index=True)}
        pert_list = [p for p in perts.values() if p is not None]
        perts = {"all": pd.concat(pert_list, ignore_index=True) if pert_list else None}
    fit_on = "all" if rec.validation == "nested" else "train"
    return _FitData(mans, feats, perts, fit_on, descriptor_cols)


def _run_task(
    rec: Recipe,
    task: TaskSpec,
    out: Path,
    data: _FitData,
    config: Any,
    *,
    seed: int,
    report: bool,
    progress: Callable[[str, int, int], None] | None,
    say: Callable[[str], None],
) -> tuple[list[dict[str, Any]], Path | None]:
    """Fit and score one task's models into ``out/tasks/<task>``: their AUC rows and the report (or None)."""
    tdir = out / "tasks" / task.name
    tdir.mkdir(parents=True, exist_ok=True)
    sub = {k: (m.query(task.subset) if task.subset else m) for k, m in data.mans.items()}
    models = [m for m in rec.models if m.task == task.name]
    oracle = _oracle(task, sub.get("test", sub.get("all")), config, models, rec, seed)
    preds, thresholds, bundles, rows = [], {}, {}, []
    for k, spec in enumerate(models):
        say(f"[{task.name}] fitting {spec.name} ({k + 1}/{len(models)})")
        if progress:
            progress(f"fit {task.name}", k, len(models))
        fit = _fit_model(rec, task, spec, tdir / _model_dir(spec.name), sub, data, seed)
        bundles[spec.name] = _model_dir(spec.name)
        thresholds[spec.name] = fit.threshold
        oof = fit.cv.oof
        preds.append(
            predictions_table(spec.name, "train_oof", oof.index, oof["patient_id"], oof["label"], oof["probability"])
        )
        row = _auc_row(rec, task, spec, fit, oracle)
        if "test" in sub:
            test_preds, test_row = _score_test(spec, tdir / _model_dir(spec.name), data, sub, task, row["oracle_auc"])
            preds.append(test_preds)
            row.update(test_row)
        rows.append(row)
    if progress:
        progress(f"fit {task.name}", len(models), len(models))
    _write_eval_dir(rec, task, tdir, preds, thresholds, bundles, sub, data.feats, oracle, models, data.fit_on)
    if not report:
        return rows, None
    from usher2.report import write_cohort_report

    extra = _extras(rec, task, tdir, sub, data.feats, data.perts, data.fit_on, say)
    return rows, write_cohort_report(tdir, tdir / "report.html", cam_examples=0, extra_sections=extra)


def _fit_model(
    rec: Recipe, task: TaskSpec, spec: ModelSpec, bdir: Path, sub: dict[str, pd.DataFrame], data: _FitData, seed: int
) -> Any:
    """One model of a task: nested CV and the final bundle in ``bdir`` (:func:`~usher2.fusion.fit.fit_cohort`)."""
    from usher2.fusion.fit import fit_cohort

    perturbations = data.perts.get(data.fit_on) if spec.icc else None
    return fit_cohort(
        data.feats[data.fit_on],
        sub[data.fit_on],
        bdir,
        label=task.label,
        outer_folds=rec.outer_folds,
        inner_folds=rec.inner_folds,
        calibration=rec.calibration,
        seed=seed,
        perturbations=perturbations,
        overwrite=True,
        training_data={"recipe": rec.study, "cohort": data.fit_on, "task": task.name},
        **_fit_args(rec, spec, data.descriptor_cols),
    )


def _score_test(
    spec: ModelSpec, bdir: Path, data: _FitData, sub: dict[str, pd.DataFrame], task: TaskSpec, oracle: float
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A fitted model's predictions on the held-out cohort and its test AUC columns (the scoring
    doors' table step, :func:`~usher2.score.engine.score_table`)."""
    from usher2.fusion.bundle import load_bundle
    from usher2.score.engine import score_table

    bundle = load_bundle(bdir)
    X, y, ids, pids = _test_inputs(data.feats["test"], sub["test"], task.label, bundle)
    p = score_table(bundle, X, check_ranges=False)["probability"].to_numpy()
    return predictions_table(spec.name, "test", ids, pids, y, p), _test_auc(y, p, oracle)


def _write_run(
    out: Path,
    rec: Recipe,
    rows: list[dict[str, Any]],
    failures: list[pd.DataFrame],
    data: _FitData,
    fallbacks: dict[str, str],
    *,
    seed: int,
    seconds: dict[str, float],
    config: Any,
) -> pd.DataFrame:
    """Write ``auc.csv``, ``failures.csv`` and ``recipe.json`` (the resolved recipe and the verdict); the AUC table."""
    table = pd.DataFrame(rows)
    with atomic_path(out / "auc.csv") as tmp:
        table.to_csv(tmp, index=False)
    fail = pd.concat(failures, ignore_index=True)
    with atomic_path(out / "failures.csv") as tmp:
        fail.to_csv(tmp, index=False)
    summary = {
        "recipe": rec.to_dict(),
        "seed": seed,
        "n": {k: len(v) for k, v in data.mans.items()},
        "fallbacks": fallbacks,
        "n_failed_cases": int(fail["case_id"].nunique()) if len(fail) else 0,
        "target_ratio": TARGET_RATIO,
        "verdict": final_verdict(rows),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "phantom": config.to_dict() if config is not None else None,
    }
    atomic_write_text(out / "recipe.json", json.dumps(summary, indent=2, default=_json_default))
    return table


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _auc_row(rec: Recipe, task: TaskSpec, spec: ModelSpec, fit: Any, oracle: dict[str, float]) -> dict[str, Any]:
    cv = fit.cv.auc
    row: dict[str, Any] = {
        "study": rec.study,
        "task": task.name,
        "model": spec.name,
        "final": spec.name == task.primary,
        "n_train": fit.n_used,
        "n_features": len(fit.selected),
        "cv_auc": cv["auc"],
        "cv_ci_low": cv["ci_low"],
        "cv_ci_high": cv["ci_high"],
        "oracle_view": spec.oracle if isinstance(spec.oracle, str) else "+".join(spec.oracle),
        "oracle_auc": oracle[spec.name],
    }
    if rec.validation == "nested":
        row.update(oracle_ratio(cv["auc"], row["oracle_auc"], target=TARGET_RATIO))
    return row


def _test_auc(y: np.ndarray, p: np.ndarray, oracle: float) -> dict[str, Any]:
    """The held-out AUC columns of ``auc.csv`` (:func:`usher2.evaluate.study.held_out_auc`)."""
    return held_out_auc(y, p, oracle, target=TARGET_RATIO)


def _test_inputs(
    features: pd.DataFrame, manifest: pd.DataFrame, label: str, bundle: Any
) -> tuple[pd.DataFrame, np.ndarray, list[str], list[str]]:
    """The held-out cases with a label and a feature row, as the bundle reads them."""
    f = features.drop_duplicates("case_id")
    f.index = pd.Index(f["case_id"].astype(str))
    m = manifest.drop_duplicates("case_id")
    m.index = pd.Index(m["case_id"].astype(str))
    y = pd.to_numeric(m[label], errors="coerce")
    ids = [c for c in m.index if c in f.index and pd.notna(y[c])]
    X = f.loc[ids].copy()
    for c in bundle.columns:
        if c not in X.columns and c in m.columns:
            X[c] = pd.to_numeric(m.loc[ids, c], errors="coerce")
    return X, y[ids].astype(int).to_numpy(), ids, m.loc[ids, "patient_id"].astype(str).tolist()


def _write_eval_dir(
    rec: Recipe,
    task: TaskSpec,
    tdir: Path,
    preds: list[pd.DataFrame],
    thresholds: dict[str, float],
    bundles: dict[str, str],
    sub: dict[str, pd.DataFrame],
    feats: dict[str, pd.DataFrame],
    oracle: dict[str, float],
    models: list[ModelSpec],
    fit_on: str,
) -> None:
    """Write the task's evaluation directory (:func:`usher2.report.study.write_study_evaluation`)."""
    # the cases the report analyses: the held-out cohort, or (nested) the pooled one's out-of-fold
    evaluated = "test" if "test" in sub else fit_on
    write_study_evaluation(
        tdir,
        predictions=preds,
        thresholds=thresholds,
        bundles=bundles,
        cohorts={("train" if name in ("train", "all") else "test"): man for name, man in sub.items()},
        label=task.label,
        evaluated=sub[evaluated],
        features=feats[evaluated],
        title=f"{rec.title} [{task.name}]",
        primary_model=task.primary,
        oracle_auc={m.name: oracle[m.name] for m in models},
        methods=_methods(rec, task, models, fit_on),
    )


def _methods(rec: Recipe, task: TaskSpec, models: list[ModelSpec], fit_on: str) -> dict[str, str]:
    """The methods fields of a task's report (:data:`usher2.report.METHOD_FIELDS`)."""
    seqs = ", ".join(rec.sequences()) or "BI-RADS descriptors"
    return {
        "data": (
            f"Recipe {rec.study} ({rec.reference}); synthetic MRI phantoms with known truth (usher2.mri.phantom)"
            if rec.phantom
            else f"Recipe {rec.study} ({rec.reference}) on the user's manifests"
        ),
        "outcome": f"Binary label column {task.label!r}" + (f" among cases with {task.subset}" if task.subset else ""),
        "predictors": f"Sequences: {seqs}; features as in the recipe ({rec.source}).",
        "missing_data": "Missing feature and clinical values are imputed with the training-fold median.",
        "splits": (
            "Patient-grouped nested CV on the pooled cohort"
            if fit_on == "all"
            else "A separate held-out test cohort; patient-grouped nested CV within the training cohort"
        )
        + f" ({rec.outer_folds} outer, {rec.inner_folds} inner folds).",
        "model": "Per model: " + "; ".join(f"{m.name}: {m.family}, {m.fusion} fusion, {m.classifier}" for m in models),
        "validation": "Nested-CV out-of-fold AUC; final models refitted on the training cohort, applied once to "
        "the test cohort; thresholds (Youden) from training out-of-fold predictions.",
        "software": "usher2 (SimpleITK, pyradiomics, timm, scikit-learn, statsmodels, lifelines, shap).",
    }


# ----------------------------------------------------------------------------------- extras


def _extras(
    rec: Recipe,
    task: TaskSpec,
    tdir: Path,
    sub: dict[str, pd.DataFrame],
    feats: dict[str, pd.DataFrame],
    perts: dict[str, pd.DataFrame | None],
    fit_on: str,
    say: Callable[[str], None],
) -> list[tuple[str, str]]:
    """The study's own sections (:mod:`usher2.report.study`); a failing analysis shows its message instead."""
    split = "test" if "test" in sub else "train_oof"
    preds = pd.read_csv(tdir / "predictions.csv", dtype={"case_id": str})
    preds = preds[preds["split"] == split]
    todo: list[tuple[str, Callable[[], str]]] = []
    if "delong_matrix" in rec.extras:
        todo.append(("DeLong comparison matrix", lambda: delong_section(tdir, preds)))
    if "shap_ranking" in rec.extras:
        todo.append(("SHAP ranking", lambda: _shap_ranking(tdir, task)))
    if "survival" in rec.extras and rec.survival.get("task", task.name) == task.name:
        man = sub.get("test", sub.get(fit_on))
        t_col, e_col = rec.survival.get("time", "dfs_time"), rec.survival.get("event", "dfs_event")
        todo.append(
            (
                "Disease-free survival by score group",
                lambda: survival_section(tdir, preds, man, model=task.primary, time=t_col, event=e_col),
            )
        )
    if "bootstrap" in rec.extras:
        todo.append(("Bootstrap validation", lambda: _bootstrap(rec, task, tdir, feats, sub, fit_on)))
    if "icc" in rec.extras:
        todo.append(("Feature reproducibility (ICC)", lambda: _icc(rec, tdir, perts.get(fit_on))))
    return study_sections(todo, log=lambda m: say(f"[{task.name}] {m}"))


def _primary_inputs(
    tdir: Path, task: TaskSpec, features: pd.DataFrame, manifest: pd.DataFrame
) -> tuple[Any, pd.DataFrame, np.ndarray]:
    """The task's final bundle, and the cases' inputs and labels as it reads them."""
    from usher2.fusion.bundle import load_bundle

    b = load_bundle(tdir / _model_dir(task.primary))
    X, y, *_ = _test_inputs(features, manifest, task.label, b)
    return b, X, y


def _shap_ranking(tdir: Path, task: TaskSpec) -> str:
    """The SHAP ranking of the final model over the evaluated cases (``tdir``'s manifest and features)."""
    f = pd.read_parquet(tdir / "features.parquet")
    m = pd.read_csv(tdir / "manifest.csv", dtype={"case_id": str})
    b, X, _ = _primary_inputs(tdir, task, f, m)
    return shap_section(tdir, b, X, model=task.primary)


def _bootstrap(
    rec: Recipe, task: TaskSpec, tdir: Path, feats: dict[str, pd.DataFrame], sub: dict[str, pd.DataFrame], fit_on: str
) -> str:
    """Bootstrap validation of the nomogram stage: the final logistic model on its inputs (the fitted cohort)."""
    b, X, y = _primary_inputs(tdir, task, feats[fit_on], sub[fit_on])
    return bootstrap_section(tdir, b, X, y, model=task.primary, n_boot=int(rec.bootstrap.get("n_boot", 1000)))


def _icc(rec: Recipe, tdir: Path, perts: pd.DataFrame | None) -> str:
    """The ICC section over the perturbation table, by the source of each MRI feature column."""
    if perts is None or perts.empty:
        raise InputError("perturbations", "a perturbation table (extract.perturbations in the recipe)", "none")
    return icc_section(tdir, perts, threshold=rec.icc_threshold, source_of=_source_of)


def _source_of(column: str) -> str:
    """``t2_deep_resnet50_12`` -> ``t2 deep resnet50``; ``t2_radiomics_...`` -> ``t2 radiomics``."""
    m = re.match(r"^(.*?)_deep_(.+)_\d+$", column)
    if m:
        return f"{m.group(1)} deep {m.group(2)}"
    m = re.match(r"^(.*?)_(radiomics|kinetics)_", column)
    return f"{m.group(1)} {m.group(2)}" if m else column.split("_", 1)[0]
