"""Model bundles: a folder that holds a fitted fusion model in a form that loads without executing code.

Layout of ``BUNDLE/``:

================  ==========================================================================
``config.json``   family, classifier, fusion, calibration, the input feature and clinical
                  columns, the decision threshold, the extraction settings (enhancer, segmenter,
                  backbones with weight hashes, radiomics parameters), versions, and the
                  SHA-256 of the training data (feature table, manifest, every image and mask)
``model.skops``   the fitted preprocessing + selection + classifier (skops, no pickle)
``metrics.json``  nested-CV AUC with its DeLong CI, per-fold results and selected features
``oof.csv``       out-of-fold probabilities (``case_id, patient_id, fold, label, probability``)
``hashes.json``   SHA-256 of every file above, written last
================  ==========================================================================

**Loading** (:func:`load_bundle`) first checks every file against ``hashes.json`` (a changed
file is refused: "tampered"), then lists the types ``model.skops`` would construct and refuses
any type outside :data:`TRUSTED_TYPES` (naming it), and only then builds the model with skops.
No pickle is involved at any point and no code from the bundle is executed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.io.errors import InputError
from usher2.io.hashing import file_sha256

__all__ = ["BUNDLE_FILES", "TRUSTED_TYPES", "Bundle", "load_bundle", "save_bundle", "strip_for_storage"]

BUNDLE_FILES = ("config.json", "model.skops", "metrics.json", "oof.csv")
HASHES = "hashes.json"
FORMAT = "usher2-bundle/1"

#: Types a bundle may construct beyond skops' own default-trusted scikit-learn and NumPy types.
TRUSTED_TYPES = (
    "numpy.dtype",
    "collections.OrderedDict",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.isotonic.IsotonicRegression",
    "sklearn.tree._tree.Tree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "usher2.fusion.selection.CorrelationPruner",
    "usher2.fusion.selection.ICCFilter",
    "usher2.fusion.selection.LassoSelector",
    "usher2.fusion.selection.UnivariateFilter",
    "usher2.fusion.models.LateFusionClassifier",
)


def _walk(est: Any) -> list[Any]:
    """Every estimator inside a fitted model (pipelines, column transformers, calibration, late fusion)."""
    out, todo = [], [est]
    while todo:
        e = todo.pop()
        if e is None or any(e is o for o in out):
            continue
        out.append(e)
        todo += [s for _, s in getattr(e, "steps", [])]
        todo += [t for _, t, _ in getattr(e, "transformers_", [])]
        todo += [t for _, t, _ in getattr(e, "transformers", [])]  # unfitted templates (calibration's estimator)
        todo += [c.estimator for c in getattr(e, "calibrated_classifiers_", [])]
        todo += [getattr(e, "estimator", None)]
        todo += list(getattr(e, "source_models_", {}).values())
        todo += [getattr(e, "clinical_model_", None)]
    return out


def strip_for_storage(model: Any) -> Any:
    """Drop what a fitted model no longer needs and a bundle must not carry: cache folders and the
    perturbation tables of ICC filters (their ICC values stay in ``icc_``)."""
    for e in _walk(model):
        if hasattr(e, "steps") and "memory" in e.get_params(deep=False):
            e.memory = None
        if type(e).__name__ == "ICCFilter":
            e.perturbations = None
        if type(e).__name__ == "LateFusionClassifier" and e.selector_params:
            e.selector_params = {k: v for k, v in e.selector_params.items() if k != "perturbations"}
    return model


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_bundle(
    out: str | Path,
    model: Any,
    config: dict[str, Any],
    metrics: dict[str, Any],
    oof: pd.DataFrame,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a bundle folder atomically (a temporary folder, renamed when complete).

    Raises:
        InputError: ``out`` exists and ``overwrite`` is False.
    """
    import skops.io as sio

    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(out, "a new bundle folder", "an existing path", fix="pass --overwrite or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        config = {"format": FORMAT, **config}
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=_json_default), encoding="utf-8")
        sio.dump(strip_for_storage(model), tmp / "model.skops")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default), encoding="utf-8")
        oof.to_csv(tmp / "oof.csv", index=True)
        hashes = {name: file_sha256(tmp / name) for name in BUNDLE_FILES}
        (tmp / HASHES).write_text(json.dumps(hashes, indent=2), encoding="utf-8")
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@dataclass
class Bundle:
    """A loaded bundle."""

    path: Path
    model: Any
    config: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def threshold(self) -> float:
        return float(self.config["threshold"])

    @property
    def columns(self) -> list[str]:
        """The feature-table and clinical columns the model reads."""
        return list(self.config["columns"])

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Probability of class 1 for rows of a feature table that has :attr:`columns`.

        Raises:
            InputError: Columns the model needs are missing.
        """
        missing = [c for c in self.columns if c not in features.columns]
        if missing:
            raise InputError(
                "features",
                f"the {len(self.columns)} columns the bundle was fitted on",
                f"{len(missing)} missing (e.g. {missing[:3]})",
            )
        return np.asarray(self.model.predict_proba(features[self.columns]))[:, 1]


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle after checking its file hashes and the types it would construct.

    Raises:
        InputError: Not a bundle, a file missing or changed since it was written (tampered), or
            a type outside :data:`TRUSTED_TYPES` (the message lists them).
    """
    import skops.io as sio

    p = Path(path)
    if not (p / HASHES).is_file():
        raise InputError(p, "a model bundle folder from usher2 fit (hashes.json, model.skops, ...)", "no hashes.json")
    try:
        hashes = json.loads((p / HASHES).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(p / HASHES, "the bundle's hash list (JSON)", f"invalid JSON ({exc})") from exc
    for name in BUNDLE_FILES:
        f = p / name
        if not f.is_file():
            raise InputError(p, f"the bundle file {name}", "none")
        if hashes.get(name) != file_sha256(f):
            raise InputError(
                f,
                "the file as the bundle recorded it (SHA-256 in hashes.json)",
                "a changed file",
                fix="the bundle has been tampered with or damaged; refit it",
            )
    try:
        untrusted = sio.get_untrusted_types(file=p / "model.skops")
    except Exception as exc:  # skops raises several types for a damaged archive
        raise InputError(p / "model.skops", "a skops model file", f"an unreadable file ({exc})") from exc
    unknown = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unknown:
        raise InputError(
            p / "model.skops",
            "only types usher2 trusts",
            f"unknown types {unknown}",
            fix="refusing to load: a bundle must not construct anything else",
        )
    model = sio.load(p / "model.skops", trusted=sorted(set(untrusted)))
    config = json.loads((p / "config.json").read_text(encoding="utf-8"))
    if config.get("format") != FORMAT:
        raise InputError(p / "config.json", f"bundle format {FORMAT}", repr(config.get("format")))
    metrics = json.loads((p / "metrics.json").read_text(encoding="utf-8"))
    return Bundle(p, model, config, metrics)
