"""The evaluation directory's records: ``summary.json`` and ``predictions.csv``, one writer and one reader.

An *evaluation directory* is what the cohort report (:func:`usher2.report.write_cohort_report`)
reads. Four producers write one: ``Pipeline.evaluate`` (the demo and ``usher2 run``),
``usher2 report --scores`` (:func:`usher2.pipeline.evaluate_scores`), ``usher2 report --bundle``
(:func:`usher2.pipeline.evaluation_from_bundle`) and the MRI recipes. They all build an
:class:`EvaluationSummary` and call :meth:`EvaluationSummary.write`; the report calls
:meth:`EvaluationSummary.read`, which checks every field, so a summary that the report cannot use
fails with a message naming the field instead of a blank section.

``summary.json`` (format :data:`SUMMARY_FORMAT`):

================  ===================================================================================
``format``        :data:`SUMMARY_FORMAT`; a file without it (usher2 before issue 24) is read as format 0,
                  whose fields are the same
``title``         the report's title
``usher2``        the version that wrote the directory
``created``       ISO 8601 time it was written
``cohort``        per split (``train``, ``test``): :class:`CohortCounts` (``n``, ``patients``,
                  ``positives``, ``unlabelled``; a count not recorded is omitted)
``primary_model`` the model the report's per-model sections show
``methods``       the TRIPOD+AI-style items (``data``, ``outcome``, ``predictors``, ``missing_data``,
                  ``splits``, ``model``, ``validation``, ``software``; others are shown after them)
``bundles``       model -> its bundle folder (absolute, or relative to the directory)
``oracle_auc``    model -> the AUC of the truth on simulated data (optional)
``config``        the pipeline settings that produced it (optional)
================  ===================================================================================

Unknown fields are an error that names them (a typo would otherwise silently drop a section).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.io.atomic import atomic_path, atomic_write_text
from usher2.io.errors import InputError

__all__ = [
    "PREDICTION_COLUMNS",
    "SUMMARY_FILE",
    "SUMMARY_FORMAT",
    "CohortCounts",
    "EvaluationSummary",
    "predictions_table",
    "write_predictions",
]

SUMMARY_FILE = "summary.json"
SUMMARY_FORMAT = 1
#: The columns of ``predictions.csv``: one row per case, model and split (``train_oof``, ``test``).
PREDICTION_COLUMNS = ("case_id", "patient_id", "label", "model", "split", "probability")


def _version() -> str:
    import usher2

    return usher2.__version__


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass(frozen=True)
class CohortCounts:
    """Cases, patients, positives and unlabelled cases of one split (None: not recorded).

    Example:
        >>> CohortCounts.from_labels(["a", "a", "b"], [1, None, 0])
        CohortCounts(n=3, patients=2, positives=1, unlabelled=1)
    """

    n: int | None = None
    patients: int | None = None
    positives: int | None = None
    unlabelled: int | None = None

    @classmethod
    def from_labels(cls, patients: Sequence[Any], labels: Any) -> CohortCounts:
        y = pd.to_numeric(pd.Series(list(labels)), errors="coerce")
        return cls(
            n=len(y),
            patients=int(pd.Series(list(patients)).nunique()),
            positives=int((y == 1).sum()),
            unlabelled=int(y.isna().sum()),
        )

    def to_dict(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _str_map(path: Path, key: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(path, f"{key!r} as a JSON object", type(value).__name__)
    return {str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in value.items() if v is not None}


def _counts(path: Path, split: str, value: Any) -> CohortCounts:
    if not isinstance(value, Mapping):
        raise InputError(path, f"cohort[{split!r}] as a JSON object of counts", type(value).__name__)
    unknown = sorted(set(value) - set(CohortCounts.__dataclass_fields__))
    if unknown:
        raise InputError(path, f"cohort[{split!r}] fields n, patients, positives, unlabelled", f"unknown {unknown}")
    out = {}
    for k, v in value.items():
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not float(v).is_integer() or v < 0:
            raise InputError(path, f"cohort[{split!r}][{k!r}] as a count", repr(v))
        out[k] = int(v)
    return CohortCounts(**out)


@dataclass(frozen=True)
class EvaluationSummary:
    """The typed ``summary.json`` of an evaluation directory (see the module docstring)."""

    title: str
    primary_model: str | None
    cohort: Mapping[str, CohortCounts] = field(default_factory=dict)
    methods: Mapping[str, str] = field(default_factory=dict)
    bundles: Mapping[str, str] = field(default_factory=dict)
    oracle_auc: Mapping[str, float] = field(default_factory=dict)
    config: Mapping[str, Any] | None = None
    usher2: str = field(default_factory=_version)
    created: str = field(default_factory=_now)
    format: int = SUMMARY_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``summary.json``."""
        out: dict[str, Any] = {
            "format": self.format,
            "title": self.title,
            "usher2": self.usher2,
            "created": self.created,
            "cohort": {k: v.to_dict() for k, v in self.cohort.items()},
            "primary_model": self.primary_model,
            "methods": dict(self.methods),
            "bundles": dict(self.bundles),
        }
        if self.oracle_auc:
            out["oracle_auc"] = {k: float(v) for k, v in self.oracle_auc.items()}
        if self.config is not None:
            out["config"] = dict(self.config)
        return out

    def write(self, folder: str | Path) -> Path:
        """Write ``folder/summary.json`` atomically; returns its path."""
        path = Path(folder) / SUMMARY_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, default=_json_default))
        return path

    @classmethod
    def read(cls, path: str | Path) -> EvaluationSummary:
        """Read and check a ``summary.json`` (a file, or the directory holding it).

        Raises:
            InputError: No such file, not a JSON object, an unknown field, or a field of the wrong type.
        """
        path = Path(path)
        if path.is_dir():
            path = path / SUMMARY_FILE
        if not path.is_file():
            raise InputError(
                path, "summary.json of an evaluation directory (title, cohort, methods, ...)", "no such file"
            )
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(path, "summary.json as a JSON object", f"invalid JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise InputError(path, "summary.json as a JSON object", type(doc).__name__)
        doc = _migrate(path, doc)
        unknown = sorted(set(doc) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(path, f"summary fields {sorted(cls.__dataclass_fields__)}", f"unknown {unknown}")
        cohort = doc.get("cohort") or {}
        if not isinstance(cohort, Mapping):
            raise InputError(path, "'cohort' as a JSON object", type(cohort).__name__)
        oracle = doc.get("oracle_auc") or {}
        if not isinstance(oracle, Mapping):
            raise InputError(path, "'oracle_auc' as a JSON object", type(oracle).__name__)
        try:
            oracle_auc = {str(k): float(v) for k, v in oracle.items() if v is not None}
        except (TypeError, ValueError) as exc:
            raise InputError(path, "'oracle_auc' values as numbers", str(exc)) from exc
        config = doc.get("config")
        if config is not None and not isinstance(config, Mapping):
            raise InputError(path, "'config' as a JSON object", type(config).__name__)
        primary = doc.get("primary_model")
        return cls(
            title=str(doc.get("title") or "usher2 cohort report"),
            primary_model=None if primary is None else str(primary),
            cohort={str(k): _counts(path, str(k), v) for k, v in cohort.items()},
            methods=_str_map(path, "methods", doc.get("methods")),
            bundles=_str_map(path, "bundles", doc.get("bundles")),
            oracle_auc={k: v for k, v in oracle_auc.items() if math.isfinite(v)},
            config=config,
            usher2=str(doc.get("usher2") or "not reported"),
            created=str(doc.get("created") or ""),
            format=int(doc["format"]),
        )


def _migrate(path: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """An older summary as the current format (format 0, before issue 24, had the same fields)."""
    version = doc.get("format", 0)
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= SUMMARY_FORMAT:
        raise InputError(path, f"summary format 0..{SUMMARY_FORMAT}", repr(version), fix="upgrade usher2")
    return {**doc, "format": SUMMARY_FORMAT}


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def predictions_table(model: str, split: str, cases: Any, patients: Any, labels: Any, prob: Any) -> pd.DataFrame:
    """Rows of ``predictions.csv`` for one model and split.

    Example:
        >>> predictions_table("dlr", "test", [1, 2], ["p1", "p2"], [0, 1], [0.2, 0.9]).columns.tolist()
        ['case_id', 'patient_id', 'label', 'model', 'split', 'probability']
    """
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


def write_predictions(folder: str | Path, parts: Sequence[pd.DataFrame], thresholds: Mapping[str, float]) -> None:
    """Write ``predictions.csv`` (the parts of :func:`predictions_table`) and ``thresholds.json``."""
    folder = Path(folder)
    with atomic_path(folder / "predictions.csv") as tmp:
        pd.concat(parts, ignore_index=True).to_csv(tmp, index=False)
    atomic_write_text(folder / "thresholds.json", json.dumps(dict(thresholds), indent=2))
