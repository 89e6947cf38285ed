"""Experiment tracking: log training runs and ``usher2 fit`` to MLflow, so that runs can be compared.

One context manager, :func:`track_run`, opens an MLflow run and yields a :class:`Tracker` that logs
parameters, metrics (per epoch or per fold, as ``step``), tags and artefacts. Each learned stage
logs to its own experiment: ``usher2-enhancer``, ``usher2-segmenter``, ``usher2-backbone`` and
``usher2-fit``.

**Off unless asked for.** ``uri=None`` (the library default) yields a tracker that does nothing,
and mlflow is not even imported, so usher2 works without mlflow installed. The command line
tracks by default, to :data:`DEFAULT_TRACKING_URI` (``file:./mlruns``, a folder under the current
directory), or to ``$MLFLOW_TRACKING_URI`` when that is set; ``--track URI`` chooses another
store and ``--no-track`` (or ``--track off``) turns tracking off.

**Why a file store.** ``mlflow-skinny``, usher2's dependency, can open ``file:`` stores (and
remote tracking servers) but not ``sqlite:`` ones, which need SQLAlchemy and Alembic from the full
``mlflow`` package. MLflow 3 keeps the file store in maintenance mode and refuses to open one
unless ``MLFLOW_ALLOW_FILE_STORE=true``; for a ``file:`` URI this module sets that variable (unless
you set it yourself), so you are not asked to, and no deprecation notice is printed on every run.
To read the runs in another process, set it there too (see the README's "Experiment tracking").

**No network.** Before mlflow is imported, ``MLFLOW_DISABLE_TELEMETRY=true`` is set (unless you
set it yourself), so MLflow's usage reporting stays off; a local store touches only files.
Logging goes through :class:`mlflow.MlflowClient`, never the global "active run", so a tracked
usher2 call leaves mlflow's global state (tracking URI, active run) as it found it.

A run whose body raises ends with status ``FAILED`` (``KILLED`` on Ctrl-C), and the exception
goes on; a run that completes ends ``FINISHED``.

Example:
    >>> with track_run(None, experiment="usher2-demo", params={"lr": 0.1}) as tracker:
    ...     tracker.log_metrics({"loss": 0.5}, step=0)
    >>> tracker.enabled
    False
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from usher2.io.errors import InputError

__all__ = ["DEFAULT_TRACKING_URI", "Tracker", "flatten_params", "resolve_tracking_uri", "track_run"]

DEFAULT_TRACKING_URI = "file:./mlruns"
"""Where the command line tracks by default: ``./mlruns`` under the current directory."""

OFF = ("off", "none", "")
"""``--track`` values (any case) that turn tracking off."""

_INSTALL_HINT = "pip install mlflow-skinny"


def resolve_tracking_uri(uri: str | None) -> str | None:
    """The store a run goes to: ``None`` for off, local paths as absolute ``file:`` URIs.

    ``None``, ``"off"`` and ``"none"`` mean no tracking. A plain path or a ``file:`` URI (relative
    ones against the current directory) becomes an absolute ``file://`` URI, so the artefact
    locations recorded in the store stay valid from any directory. Other URIs (``http://HOST:5000``,
    ``databricks``) are returned unchanged.

    Raises:
        InputError: Tracking is asked for but mlflow is not installed, or a ``sqlite:`` store is
            asked for without the SQLAlchemy that the full ``mlflow`` package brings.

    Example:
        >>> resolve_tracking_uri("off") is None
        True
        >>> resolve_tracking_uri("file:/tmp/runs")
        'file:///tmp/runs'
    """
    if uri is None or uri.strip().lower() in OFF:
        return None
    uri = uri.strip()
    if importlib.util.find_spec("mlflow") is None:
        raise InputError(
            "tracking",
            f"mlflow installed to track runs to {uri}",
            "no mlflow module",
            fix=f"{_INSTALL_HINT}, or turn tracking off: --no-track, track=None in Python",
        )
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite" and importlib.util.find_spec("sqlalchemy") is None:
        raise InputError(
            "tracking URI",
            "a store mlflow-skinny can open (file:DIR or http://HOST:PORT)",
            uri,
            fix="sqlite: stores need the full mlflow package: pip install mlflow",
        )
    # One-letter schemes are Windows drive letters (C:\runs), not URIs.
    if (parsed.scheme in ("", "file") and not parsed.netloc) or len(parsed.scheme) == 1:
        path = parsed.path if parsed.scheme == "file" else uri
        return Path(os.path.abspath(Path(path).expanduser())).as_uri()
    return uri


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings as ``{"a.b": value}`` strings, as MLflow stores parameters.

    Scalars become ``str(value)`` (what MLflow itself does: ``True`` -> ``"True"``, ``None`` ->
    ``"None"``); lists and tuples become JSON (``(1, 2)`` -> ``"[1, 2]"``). Values are not
    truncated here (:meth:`Tracker.log_params` does that).

    Example:
        >>> flatten_params({"lr": 0.1, "data": {"n": 6, "devices": ("a", "b")}})
        {'lr': '0.1', 'data.n': '6', 'data.devices': '["a", "b"]'}
    """
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(list(value), default=str)
        else:
            out[name] = str(value)
    return out


def _json_default(obj: Any) -> Any:
    """numpy scalars and arrays, paths and anything else JSON cannot hold."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Tracker:
    """Logs into one MLflow run; every method does nothing when tracking is off.

    Made by :func:`track_run`; ``Tracker()`` alone is the no-op tracker.

    Attributes:
        run_id: The MLflow run's id (``None`` when off).
        uri: The store's URI (``None`` when off).
    """

    def __init__(self, client: Any = None, run_id: str | None = None, uri: str | None = None) -> None:
        self._client = client
        self.run_id = run_id
        self.uri = uri

    @property
    def enabled(self) -> bool:
        """Whether anything is logged."""
        return self._client is not None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at ``step`` (an epoch or a fold; MLflow's default 0 when None).

        NaN is kept (e.g. the AUC of a one-class fold); a value that is not a number is an error.
        """
        if not self.enabled or not metrics:
            return
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        now = int(time.time() * 1000)
        entries = []
        for key, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise InputError(f"metric {key!r}", "a number", repr(value)) from None
            entries.append(Metric(key, number, now, int(step or 0)))
        for part in _chunks(entries, MAX_METRICS_PER_BATCH):
            self._client.log_batch(self.run_id, metrics=part, synchronous=True)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters; nested mappings are flattened with ``.`` (:func:`flatten_params`).

        Values longer than MLflow's limit (6,000 characters in MLflow 3) are cut to it, ending in
        ``...``. MLflow refuses to change a parameter once logged, so log each key once per run.
        """
        if not self.enabled or not params:
            return
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        entries = [Param(k, _cut(v, MAX_PARAM_VAL_LENGTH)) for k, v in flatten_params(params).items()]
        for part in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
            self._client.log_batch(self.run_id, params=part, synchronous=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set string tags (values are ``str()``-ed and cut to MLflow's limit); tags may change."""
        if not self.enabled or not tags:
            return
        from mlflow.entities import RunTag
        from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH, MAX_TAG_VAL_LENGTH

        entries = [RunTag(k, _cut(str(v), MAX_TAG_VAL_LENGTH)) for k, v in tags.items()]
        for part in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
            self._client.log_batch(self.run_id, tags=part, synchronous=True)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file (or a folder's contents) into the run's artefacts, under ``artifact_path``.

        Raises:
            InputError: ``path`` does not exist.
        """
        if not self.enabled:
            return
        p = Path(path)
        if p.is_dir():
            self._client.log_artifacts(self.run_id, str(p), artifact_path)
        elif p.is_file():
            self._client.log_artifact(self.run_id, str(p), artifact_path)
        else:
            raise InputError(p, "a file or folder to log as an artefact", "no such path")

    def log_dict(self, d: Mapping[str, Any], name: str) -> None:
        """Write ``d`` as the artefact ``name``: YAML for ``.yaml``/``.yml``, JSON (indented, sorted) otherwise.

        ``name`` may hold folders (``configs/train.json``). numpy values and paths are converted.
        """
        if not self.enabled:
            return
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise InputError("artefact name", "a relative name inside the run, such as config.json", name)
        if rel.suffix in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(json.loads(json.dumps(d, default=_json_default)), sort_keys=True)
        else:
            text = json.dumps(d, indent=2, sort_keys=True, default=_json_default)
        with tempfile.TemporaryDirectory(prefix="usher2-track-") as tmp:
            file = Path(tmp) / rel.name
            file.write_text(text, encoding="utf-8")
            parent = rel.parent.as_posix()
            self._client.log_artifact(self.run_id, str(file), None if parent == "." else parent)


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _import_mlflow(uri: str) -> Any:
    """``mlflow.MlflowClient`` for ``uri``, with telemetry off and the file store allowed."""
    # Both are read when they are needed (telemetry when mlflow is first imported, the file store
    # flag when a store opens); a value the user set is left alone.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise InputError(
            "tracking", f"mlflow installed to track runs to {uri}", f"ImportError: {exc}", fix=_INSTALL_HINT
        ) from exc
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise InputError(
            f"experiment {name!r}",
            "an active MLflow experiment",
            "a deleted one",
            fix=f"restore it with MlflowClient().restore_experiment({exp.experiment_id!r}) or empty the store's .trash",
        )
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        exp = client.get_experiment_by_name(name)  # another process created it meanwhile
        if exp is None:
            raise
        return exp.experiment_id


@contextlib.contextmanager
def track_run(
    uri: str | None,
    *,
    experiment: str,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[Tracker]:
    """Open an MLflow run in ``experiment`` (created when missing) and yield its :class:`Tracker`.

    Args:
        uri: The tracking store (see :func:`resolve_tracking_uri`); ``None`` or ``"off"``: no
            tracking, a no-op tracker, mlflow not imported.
        experiment: MLflow experiment name, e.g. ``"usher2-enhancer"``.
        run_name: The run's display name (MLflow makes one up when None).
        params: Logged at the start (:meth:`Tracker.log_params`).
        tags: Set at the start; ``usher2.version`` is always added.

    The run ends ``FINISHED`` when the block completes, ``FAILED`` when it raises (``KILLED`` on
    KeyboardInterrupt); the exception propagates.

    Raises:
        InputError: Tracking asked for but mlflow is not installed (see :func:`resolve_tracking_uri`).

    Example:
        >>> import tempfile
        >>> store = f"file:{tempfile.mkdtemp()}/mlruns"
        >>> with track_run(store, experiment="demo", params={"lr": 0.1}) as t:
        ...     t.log_metrics({"loss": 0.5}, step=0)
        >>> from mlflow import MlflowClient
        >>> MlflowClient(store).get_run(t.run_id).data.params
        {'lr': '0.1'}
    """
    resolved = resolve_tracking_uri(uri)
    if resolved is None:
        yield Tracker()
        return
    import usher2

    client = _import_mlflow(resolved)
    run = client.create_run(
        _experiment_id(client, experiment),
        run_name=run_name,
        tags={"usher2.version": usher2.__version__, **{k: str(v) for k, v in (tags or {}).items()}},
    )
    tracker = Tracker(client, run.info.run_id, resolved)
    status = "FAILED"
    try:
        tracker.log_params(params or {})
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(run.info.run_id, status=status)
