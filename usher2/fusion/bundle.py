"""Model bundles: a folder that holds a fitted fusion model in a form that loads without executing code.

Layout of ``BUNDLE/``:

==================  ==========================================================================
``config.json``     family, classifier, fusion, calibration, the input feature and clinical
                    columns, the decision threshold, the extraction settings (enhancer, segmenter,
                    backbones with weight hashes, radiomics parameters), versions, and the
                    SHA-256 of the training data (feature table, manifest, every image and mask)
``model.skops``     the fitted preprocessing + selection + classifier (skops, no pickle)
``metrics.json``    nested-CV AUC with its DeLong CI, per-fold results and selected features
``oof.csv``         out-of-fold probabilities (``case_id, patient_id, fold, label, probability``)
``hashes.json``     SHA-256 of every file above, written last
``signature.json``  optional: ``{"algorithm": "hmac-sha256", "signature": HEX}``, an HMAC-SHA256
                    of the exact bytes of ``hashes.json`` under the user's key (``usher2 fit
                    --sign KEYFILE``)
==================  ==========================================================================

**Loading** (:func:`load_bundle`) reads each file once and, in this order:

1. with a key (``usher2 score/serve --verify KEYFILE``), refuses a bundle whose ``signature.json``
   is missing or does not match ``hashes.json`` under that key;
2. checks ``hashes.json`` (an object naming exactly the four files; any other name, such as
   ``../../etc/passwd``, is refused and never opened) and every file against it (a changed file
   is refused: "tampered");
3. reads ``config.json`` as a :class:`~usher2.fusion.bundle_config.BundleConfig` (a version-1
   file through its migration; an unknown field, a missing one or a bad ``columns`` list or
   ``threshold`` is an error naming it) and checks ``metrics.json`` (an object);
4. lists the types ``model.skops`` would construct and refuses any type outside
   :data:`TRUSTED_TYPES` (naming it);
5. checks the XGBoost and LightGBM models inside ``model.skops`` before skops builds them, builds
   the model with skops, and checks every fitted object in it and its columns against
   ``config.json`` (:mod:`usher2.fusion.validate`): a bundle that passes cannot crash the process
   when it predicts.

No pickle is involved at any point and no code from the bundle is executed.

**What the hashes protect, and what they do not.** ``hashes.json`` detects accidental damage
(a truncated copy, a changed disk block) and an edit to one file. It does not detect a deliberate
change by anyone who can write the folder: they can rewrite ``hashes.json`` too. Only the
signature detects that, and only against someone who does not hold the key: sign with
``usher2 fit --sign KEYFILE`` and load with ``--verify KEYFILE`` (or set ``USHER2_BUNDLE_KEY_FILE``
for both), and keep the key file outside the bundle folder, readable only by you (e.g.
``openssl rand -hex 32 > ~/.usher2-bundle.key; chmod 600 ~/.usher2-bundle.key``). Neither
protects against a key holder, nor tells who fitted a bundle (an HMAC key is shared by signer and
verifier). Steps 4 and 5 hold with or without a key: a bundle that passes them runs no code from
the bundle and cannot crash the process, whoever made it; its predictions are only as good as
whoever fitted it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.fusion.bundle_config import FORMAT, BundleConfig, json_default
from usher2.fusion.compiled import CompiledModel, compile_model
from usher2.fusion.introspect import estimators
from usher2.fusion.models import CLASSIFIER_SPECS
from usher2.fusion.validate import check_boosters, validate_model
from usher2.io.errors import InputError

__all__ = [
    "BUNDLE_FILES",
    "FORMAT",
    "KEY_ENV",
    "TRUSTED_TYPES",
    "Bundle",
    "BundleConfig",
    "load_bundle",
    "read_key",
    "save_bundle",
    "sign_bundle",
    "strip_for_storage",
]

BUNDLE_FILES = ("config.json", "model.skops", "metrics.json", "oof.csv")
HASHES = "hashes.json"
SIGNATURE = "signature.json"
ALGORITHM = "hmac-sha256"
#: Environment variable naming the key file the CLI signs (``fit``) and verifies (``score``, ``serve``...) with.
KEY_ENV = "USHER2_BUNDLE_KEY_FILE"
MIN_KEY_BYTES = 16

#: Types a bundle may construct beyond skops' own default-trusted scikit-learn and NumPy types: the
#: pipeline's own, then each registered classifier's (:data:`usher2.fusion.models.CLASSIFIER_SPECS`).
TRUSTED_TYPES = (
    "numpy.dtype",
    "collections.OrderedDict",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.isotonic.IsotonicRegression",
    *(t for spec in CLASSIFIER_SPECS for t in spec.trusted_types),
    "usher2.fusion.selection.CorrelationPruner",
    "usher2.fusion.selection.ICCFilter",
    "usher2.fusion.selection.LassoSelector",
    "usher2.fusion.selection.UnivariateFilter",
    "usher2.fusion.models.LateFusionClassifier",
)


def strip_for_storage(model: Any) -> Any:
    """Drop what a fitted model no longer needs and a bundle must not carry: cache folders and the
    perturbation tables of ICC filters (their ICC values stay in ``icc_``)."""
    for _, e in estimators(model):
        if hasattr(e, "steps") and "memory" in e.get_params(deep=False):
            e.memory = None
        if type(e).__name__ == "ICCFilter":
            e.perturbations = None
        if type(e).__name__ == "LateFusionClassifier" and e.selector_params:
            e.selector_params = {k: v for k, v in e.selector_params.items() if k != "perturbations"}
    return model


def read_key(path: str | Path) -> bytes:
    r"""The signing key in a key file: its bytes without surrounding whitespace (at least 16).

    A key file rather than a key on the command line, which other users can read in ``ps``.
    Make one with ``openssl rand -hex 32 > KEYFILE`` (or ``python -c "import secrets;
    print(secrets.token_hex(32))" > KEYFILE``) and keep it outside the bundle folders.

    Raises:
        InputError: No such file, or a key shorter than 16 bytes.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile("w", suffix=".key", delete=False) as f:
        ...     _ = f.write("0123456789abcdef0123456789abcdef\n")
        >>> len(read_key(f.name))
        32
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "a key file (e.g. made with: openssl rand -hex 32 > KEYFILE)", "no such file")
    key = p.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise InputError(p, f"a key of at least {MIN_KEY_BYTES} bytes", f"{len(key)} bytes", fix="openssl rand -hex 32")
    return key


def _signature(key: bytes, hashes: bytes) -> str:
    return hmac.new(key, hashes, hashlib.sha256).hexdigest()


def _write_signature(folder: Path, key: bytes, hashes: bytes) -> None:
    doc = {"algorithm": ALGORITHM, "signature": _signature(key, hashes)}
    tmp = folder / f".{SIGNATURE}.tmp"
    tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    os.replace(tmp, folder / SIGNATURE)


def save_bundle(
    out: str | Path,
    model: Any,
    config: BundleConfig | dict[str, Any],
    metrics: dict[str, Any],
    oof: pd.DataFrame,
    *,
    overwrite: bool = False,
    sign_key: bytes | None = None,
) -> Path:
    """Write a bundle folder atomically (a temporary folder, renamed when complete).

    Args:
        sign_key: Also write ``signature.json``, an HMAC-SHA256 of ``hashes.json`` under this key
            (:func:`read_key`), so that :func:`load_bundle` with the same key can tell this bundle
            from an altered one.

    Args:
        config: The settings (a :class:`BundleConfig`, or a mapping read by
            :meth:`BundleConfig.from_dict`), written as ``config.json``.

    Raises:
        InputError: ``out`` exists and ``overwrite`` is False; ``config`` is not a valid config.
    """
    import skops.io as sio

    out = Path(out)
    config = config if isinstance(config, BundleConfig) else BundleConfig.from_dict(config, where="config")
    if out.exists() and not overwrite:
        raise InputError(out, "a new bundle folder", "an existing path", fix="pass --overwrite or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        doc = config.to_dict()
        (tmp / "config.json").write_text(json.dumps(doc, indent=2, default=json_default), encoding="utf-8")
        sio.dump(strip_for_storage(model), tmp / "model.skops")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=json_default), encoding="utf-8")
        oof.to_csv(tmp / "oof.csv", index=True)
        hashes = {name: hashlib.sha256((tmp / name).read_bytes()).hexdigest() for name in BUNDLE_FILES}
        hashes_bytes = json.dumps(hashes, indent=2).encode("utf-8")
        (tmp / HASHES).write_bytes(hashes_bytes)
        if sign_key is not None:
            _write_signature(tmp, sign_key, hashes_bytes)
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
    """A loaded bundle.

    Attributes:
        verified: The bundle was loaded with a key and its signature matched.
    """

    path: Path
    model: Any
    config: BundleConfig
    metrics: dict[str, Any]
    verified: bool = False

    @property
    def threshold(self) -> float:
        return self.config.threshold

    @property
    def columns(self) -> list[str]:
        """The feature-table and clinical columns the model reads."""
        return list(self.config.columns)

    @functools.cached_property
    def compiled(self) -> CompiledModel:
        """The model as plain NumPy over only the columns it uses (:mod:`usher2.fusion.compiled`):
        equal to its ``predict_proba`` to 1e-12, without scikit-learn's validation of every column
        (about 0.1 ms a frame instead of 15-120 ms). Built on first use."""
        return compile_model(self.model, self.columns)

    def predict_proba(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Probability of class 1 for rows of a feature table holding the columns the model uses
        (``compiled.columns``; it provably ignores the others), or a ``(n, len(compiled.columns))``
        array of them in that order.

        Raises:
            InputError: A column the model uses is missing (named), or a value it cannot read.
        """
        return self.compiled.predict_proba(features)


def _verify(p: Path, key: bytes, hashes: bytes) -> None:
    """Refuse a bundle whose signature.json is missing or not the HMAC of ``hashes`` under ``key``."""
    f = p / SIGNATURE
    fix = "this bundle was not signed with your key, or it was changed after signing; refit and sign it"
    if not f.is_file():
        raise InputError(f, f"the bundle's signature ({ALGORITHM}, usher2 fit --sign KEYFILE)", "none", fix=fix)
    try:
        doc = json.loads(f.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f, "the bundle's signature (a JSON object)", f"invalid JSON ({exc})", fix=fix) from exc
    if not isinstance(doc, dict) or doc.get("algorithm") != ALGORITHM or not isinstance(doc.get("signature"), str):
        raise InputError(f, f'{{"algorithm": "{ALGORITHM}", "signature": HEX}}', repr(doc)[:80], fix=fix)
    if not hmac.compare_digest(doc["signature"].encode("ascii", "replace"), _signature(key, hashes).encode("ascii")):
        raise InputError(p / HASHES, "the file the signature was made over (with your key)", "another one", fix=fix)


def _read_checked(p: Path, verify_key: bytes | None) -> tuple[bytes, dict[str, bytes]]:
    """``hashes.json``'s bytes and each bundle file's bytes, read once and checked against it
    (and, with a key, ``hashes.json`` against ``signature.json``)."""
    if not (p / HASHES).is_file():
        raise InputError(p, "a model bundle folder from usher2 fit (hashes.json, model.skops, ...)", "no hashes.json")
    raw = (p / HASHES).read_bytes()
    if verify_key is not None:
        _verify(p, verify_key, raw)
    try:
        hashes = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(p / HASHES, "the bundle's hash list (JSON)", f"invalid JSON ({exc})") from exc
    if not isinstance(hashes, dict):
        raise InputError(p / HASHES, "a JSON object {file name: SHA-256}", f"a JSON {type(hashes).__name__}")
    # the names are compared, never opened: a name such as "../../etc/passwd" is refused here
    unknown = sorted(set(hashes) - set(BUNDLE_FILES))
    if unknown:
        raise InputError(p / HASHES, f"hashes of exactly {', '.join(BUNDLE_FILES)}", f"other names {unknown[:3]}")
    files: dict[str, bytes] = {}
    for name in BUNDLE_FILES:
        f = p / name
        if not f.is_file():
            raise InputError(p, f"the bundle file {name}", "none")
        files[name] = f.read_bytes()
        if not isinstance(hashes.get(name), str) or not hmac.compare_digest(
            hashes[name], hashlib.sha256(files[name]).hexdigest()
        ):
            raise InputError(
                f,
                "the file as the bundle recorded it (SHA-256 in hashes.json)",
                "a changed file",
                fix="the bundle has been tampered with or damaged; refit it",
            )
    return raw, files


def _json_object(f: Path, data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f, f"{what} (a JSON object)", f"invalid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise InputError(f, f"{what} (a JSON object)", f"a JSON {type(doc).__name__}")
    return doc


def sign_bundle(path: str | Path, key: bytes) -> Path:
    """Sign an existing bundle: write ``signature.json`` over its ``hashes.json`` with ``key``.

    The files are checked against ``hashes.json`` first, so a bundle changed since it was
    written is never signed.

    Raises:
        InputError: Not a bundle, or a file changed since the bundle was written.
    """
    p = Path(path)
    raw, _ = _read_checked(p, None)
    _write_signature(p, key, raw)
    return p / SIGNATURE


def load_bundle(path: str | Path, *, verify_key: bytes | None = None) -> Bundle:
    """Load a bundle after checking its signature (with a key), file hashes, settings, the types it
    would construct and every fitted object in its model (see the module docstring).

    Args:
        path: The bundle folder.
        verify_key: The key the bundle was signed with (:func:`read_key`); a bundle without a
            matching ``signature.json`` is then refused. None: no signature check.

    Raises:
        InputError: Not a bundle; a missing or wrong signature (with a key); a file missing or
            changed since it was written (tampered); an invalid ``hashes.json``, ``config.json`` or
            ``metrics.json`` (named); a type outside :data:`TRUSTED_TYPES` (the message lists
            them); a fitted object with bad data (its path and field named).
    """
    import skops.io as sio

    p = Path(path)
    _, files = _read_checked(p, verify_key)
    doc = _json_object(p / "config.json", files["config.json"], "the bundle's settings")
    config = BundleConfig.from_dict(doc, where=str(p / "config.json"))
    metrics = _json_object(p / "metrics.json", files["metrics.json"], "the bundle's metrics")
    data = files["model.skops"]
    try:
        untrusted = sio.get_untrusted_types(data=data)
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
    check_boosters(io.BytesIO(data), where=p / "model.skops")  # XGBoost/LightGBM parse their models when built
    try:
        model = sio.loads(data, trusted=sorted(set(untrusted)))
    except Exception as exc:  # a malformed state that a trusted type's constructor rejects
        raise InputError(p / "model.skops", "a skops model file", f"one that does not load ({exc})") from exc
    validate_model(model, list(config.columns), where=str(p / "model.skops"))
    return Bundle(p, model, config, metrics, verified=verify_key is not None)
