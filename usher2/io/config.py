"""The one reader of settings files: a YAML (or JSON) mapping, with its unknown keys named.

Every settings file usher2 reads (the pipeline, radiomics parameters, training configs, MRI
recipes) goes through :func:`read_mapping` and :func:`check_keys`, so a missing file, a parse
error, a file that is not a mapping and a misspelt key fail the same way, naming the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from usher2.io.errors import InputError

__all__ = ["check_keys", "read_mapping"]


def read_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping in a YAML or JSON file (JSON is YAML); an empty file is ``{}``.

    Args:
        path: The file.
        what: What the file should be, for the messages (``"a pipeline YAML file"``).

    Raises:
        InputError: No such file, a parse error, or not a mapping (each names the file).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.yaml"
        >>> _ = p.write_text("seed: 3\\nmodels: [dlr]\\n")
        >>> read_mapping(p, "a settings file")
        {'seed': 3, 'models': ['dlr']}
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(p, what, "no such file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(p, f"{what} in valid YAML", f"a parse error: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(p, f"{what}: a mapping of settings", type(data).__name__)
    return data


def check_keys(where: str | Path, data: Mapping[str, Any], known: Iterable[str], what: str = "keys") -> None:
    """Refuse keys of ``data`` outside ``known``, naming them and the known ones.

    Example:
        >>> check_keys("pipeline.yaml", {"seed": 1, "sede": 2}, ["seed", "models"])
        Traceback (most recent call last):
        ...
        usher2.io.errors.InputError: pipeline.yaml: expected keys among models, seed, got unknown keys ['sede']
    """
    known = set(known)
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise InputError(where, f"{what} among {', '.join(sorted(known))}", f"unknown keys {unknown}")
