"""The settings of a model bundle (``config.json``), as a frozen, versioned record.

:class:`BundleConfig` is what :func:`usher2.fusion.fit.fit_cohort` writes and what everything that
reads a bundle (scoring, the service, the report, the MRI recipes) reads: attributes, not a nested
``dict`` of ``.get`` chains. :meth:`BundleConfig.from_dict` is the one reader of the file:

* ``format`` names the version. ``usher2-bundle/2`` (:data:`FORMAT`, written since this release)
  must carry every field; a field it does not know is an error that names it (a bundle from a
  newer usher2 would otherwise be scored with settings silently dropped).
* ``usher2-bundle/1`` files are read by an explicit migration (:func:`migrate`): the fields that
  version's early builds did not write yet get the value their absence meant (listed in
  :data:`V1_DEFAULTS`), then the record is checked as a version-2 one.
* A newer or unknown format is refused, naming it.

The nested records (``extraction``, ``validation``, ``training_data``, ``mask_robustness``,
``segmentation_confidence``, ``best_params``, ``versions``) stay JSON objects: each has its own
reader where it is used (:func:`usher2.score.engine.bundle_extract_config` for the extraction
settings, :func:`usher2.fusion.confidence.check_confidence` for the confidence record).
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from usher2.features.extract import ExtractConfig
from usher2.fusion.confidence import check_confidence
from usher2.io.errors import InputError

__all__ = ["FORMAT", "FORMAT_V1", "V1_DEFAULTS", "BundleConfig", "json_data", "json_default", "migrate"]

FORMAT = "usher2-bundle/2"
FORMAT_V1 = "usher2-bundle/1"

#: What a version-1 ``config.json`` without the field meant (early 0.1 builds wrote fewer fields).
V1_DEFAULTS: dict[str, Any] = {
    "family": None,
    "sequences": [],
    "classifier": None,
    "fusion": "early",
    "late_sources": None,
    "calibration": "none",
    "selection": {},
    "label": "label",
    "clinical": [],
    "clinical_ranges": {},
    "threshold_rule": None,
    "best_params": {},
    "selected_features": [],
    "validation": {},
    "n_cases": None,
    "n_positive": None,
    "mask_robustness": None,
    "segmentation_confidence": None,
    "extraction": {},
    "training_data": {},
    "versions": {},
}


@dataclass(frozen=True)
class BundleConfig:
    """A bundle's ``config.json`` (see the module docstring).

    Attributes:
        columns: The feature-table and clinical columns the model reads, in order.
        threshold: The decision threshold (Youden on the training out-of-fold probabilities).
        family: Feature family (``radiomics``, ``deep``, ``dlr``, ``clinical``, ``combined``;
            MRI: ``family:sequences``).
        clinical: The clinical columns among :attr:`columns`.
        clinical_ranges: Per clinical column, the training rows' range (``usher2.fusion.clinical``).
        extraction: The extraction provenance; its ``settings`` are the extraction settings.
        segmentation_confidence: The calibrated uncertainty-flag record, or None.
    """

    columns: tuple[str, ...]
    threshold: float
    family: str | None = None
    sequences: tuple[str, ...] = ()
    classifier: str | None = None
    fusion: str = "early"
    late_sources: str | None = None
    calibration: str = "none"
    selection: dict[str, Any] = field(default_factory=dict)
    label: str = "label"
    clinical: tuple[str, ...] = ()
    clinical_ranges: dict[str, Any] = field(default_factory=dict)
    threshold_rule: str | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    selected_features: tuple[str, ...] = ()
    validation: dict[str, Any] = field(default_factory=dict)
    n_cases: int | None = None
    n_positive: int | None = None
    mask_robustness: dict[str, Any] | None = None
    segmentation_confidence: dict[str, Any] | None = None
    extraction: dict[str, Any] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "config.json") -> BundleConfig:
        """Read a ``config.json`` object, migrating a version-1 one (see the module docstring).

        A mapping without ``format`` (built in Python for
        :func:`~usher2.fusion.bundle.save_bundle`) is read as the current version with the
        version-1 defaults for the fields it leaves out.

        Raises:
            InputError: An unknown or newer format, a field this version does not know (named), a
                missing field of a version-2 file, or a field of the wrong type (named).

        Example:
            >>> cfg = BundleConfig.from_dict({"format": "usher2-bundle/1", "columns": ["a"], "threshold": 0.4})
            >>> cfg.format, cfg.columns, cfg.clinical, cfg.fusion
            ('usher2-bundle/2', ('a',), (), 'early')
            >>> try:
            ...     BundleConfig.from_dict({"columns": ["a"], "threshold": 0.4, "treshold_rule": "x"})
            ... except InputError as exc:
            ...     exc.got
            "unknown fields ['treshold_rule']"
        """
        if not isinstance(doc, Mapping):
            raise InputError(where, "the bundle's settings (a JSON object)", f"a JSON {type(doc).__name__}")
        if doc.get("format") != FORMAT:
            doc = migrate(doc, where)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise InputError(
                where,
                f"the fields of a {FORMAT} config ({', '.join(sorted(known))})",
                f"unknown fields {unknown}",
                fix="a bundle from a newer usher2: score it with that version",
            )
        _check_core(doc, where)  # the two fields every version had: named with their own message
        missing = sorted(known - set(doc))
        if missing:
            raise InputError(where, f"every field of a {FORMAT} config", f"missing {missing}")
        values = json_data(dict(doc))  # a deep copy, numpy scalars and arrays as JSON numbers and lists
        _check(values, where)
        for name in ("columns", "sequences", "clinical", "selected_features"):
            values[name] = tuple(values[name])
        values["threshold"] = float(values["threshold"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written as ``config.json`` (lists for tuples; a deep copy)."""
        doc = asdict(self)
        for name in ("columns", "sequences", "clinical", "selected_features"):
            doc[name] = list(doc[name])
        return {"format": doc.pop("format"), **doc}

    @property
    def extraction_settings(self) -> dict[str, Any]:
        """The extraction settings the model was fitted on (empty when the bundle has none)."""
        return dict(self.extraction.get("settings") or {})

    def extract_config(self, masks: str) -> ExtractConfig:
        """The extraction settings a bundle was fitted with, for scoring with ``masks`` (no perturbations).

        Raises:
            InputError: The bundle's config has no extraction settings, or settings this version does
                not know (named).

        Example:
            >>> def config(settings):
            ...     return BundleConfig(columns=("a",), threshold=0.5, extraction={"settings": settings})
            >>> cfg = config({"backbones": [], "lexicon": False}).extract_config("predicted")
            >>> cfg.masks, cfg.backbones, cfg.perturb
            ('predicted', (), False)
            >>> try:
            ...     config({"regoins": ["lesion"]}).extract_config("predicted")
            ... except InputError as exc:
            ...     exc.got
            "unknown ['regoins']"
        """
        settings = self.extraction_settings
        if not settings:
            raise InputError("bundle", "extraction settings in config.json (a bundle from usher2 fit)", "none")
        unknown = sorted(set(settings) - set(ExtractConfig.__dataclass_fields__))
        if unknown:  # a setting this version cannot apply would score other features than the model learnt from
            raise InputError(
                "bundle config.json extraction.settings",
                f"settings among {', '.join(sorted(ExtractConfig.__dataclass_fields__))}",
                f"unknown {unknown}",
                fix="a bundle from a newer usher2: score it with that version",
            )
        settings["backbones"] = tuple(settings.get("backbones", ()))
        settings.update(masks=masks, perturb=False)
        return ExtractConfig(**settings)

    # ------------------------------------------------------------------ deprecated dict reading
    def __getitem__(self, key: str) -> Any:
        """Deprecated (one release): read attributes; ``to_dict()`` gives the JSON object."""
        warnings.warn(
            "Bundle.config is a BundleConfig: read its attributes (config.threshold) instead of config[...]",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        """Deprecated (one release): read attributes; ``to_dict()`` gives the JSON object."""
        warnings.warn(
            "Bundle.config is a BundleConfig: read its attributes (config.threshold) instead of config.get(...)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.to_dict().get(key, default)


def json_default(o: Any) -> Any:
    """``json.dumps``'s ``default`` for NumPy numbers and arrays and paths."""
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def json_data(value: Any) -> Any:
    """``value`` as plain JSON data (a deep copy; NumPy numbers and arrays, paths converted).

    Example:
        >>> json_data({"n": np.int64(3), "x": np.array([0.5])})
        {'n': 3, 'x': [0.5]}
    """
    return json.loads(json.dumps(value, default=json_default))


def migrate(doc: Mapping[str, Any], where: str = "config.json") -> dict[str, Any]:
    """A version-1 (or format-less) ``config.json`` object as a version-2 one: the fields it lacks
    get :data:`V1_DEFAULTS`; nothing else changes.

    Raises:
        InputError: A format other than version 1 or 2.

    Example:
        >>> migrate({"format": "usher2-bundle/1", "columns": ["a"], "threshold": 0.5})["clinical_ranges"]
        {}
    """
    fmt = doc.get("format", FORMAT_V1)
    if fmt == FORMAT:
        return dict(doc)
    if fmt != FORMAT_V1:
        raise InputError(
            f"{where}: format",
            f"bundle format {FORMAT} (or {FORMAT_V1}, migrated)",
            repr(fmt)[:80],
            fix="a bundle from a newer usher2 needs that version" if str(fmt).startswith("usher2-bundle/") else None,
        )
    return {**copy.deepcopy(V1_DEFAULTS), **dict(doc), "format": FORMAT}


def _names(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(c, str) for c in value)


def _check_core(doc: Mapping[str, Any], where: str) -> None:
    """``columns`` and ``threshold``, present and valid."""
    cols = doc.get("columns")
    if not _names(cols) or not cols:
        raise InputError(f"{where}: columns", "a non-empty list of column names", repr(cols)[:80])
    if len(set(cols)) != len(cols):
        dup = next(c for c in cols if list(cols).count(c) > 1)
        raise InputError(f"{where}: columns", "distinct column names", f"{dup!r} twice")
    t = doc.get("threshold")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or not 0 <= t <= 1:
        raise InputError(f"{where}: threshold", "a decision threshold in [0, 1]", repr(t))


def _check(doc: dict[str, Any], where: str) -> None:
    """The types :class:`BundleConfig` relies on beyond :func:`_check_core`; each error names its field."""
    for name in ("clinical", "sequences", "selected_features"):
        if not _names(doc[name]):
            raise InputError(f"{where}: {name}", "a list of column names", repr(doc[name])[:80])
    objects = ("selection", "clinical_ranges", "best_params", "validation", "extraction", "training_data", "versions")
    for name in objects:
        if not isinstance(doc[name], dict):
            raise InputError(f"{where}: {name}", "a JSON object", repr(doc[name])[:80])
    for name in ("mask_robustness", "segmentation_confidence"):
        if doc[name] is not None and not isinstance(doc[name], dict):
            raise InputError(f"{where}: {name}", "a JSON object or null", repr(doc[name])[:80])
    settings = doc["extraction"].get("settings")
    if settings is not None and not isinstance(settings, dict):
        raise InputError(f"{where}: extraction.settings", "a JSON object", repr(settings)[:80])
    if doc["segmentation_confidence"] is not None:
        check_confidence(doc["segmentation_confidence"], where=f"{where}: segmentation_confidence")
