"""Only the wanted feature columns of frames, with the values the full extraction gives them.

:func:`~usher2.features.extract.frame_features` with ``columns`` (e.g. the ones a fitted model
needs) hands over to this module:

* :func:`wanted_columns`: sorts the requested columns by their source (lesion radiomics, a region,
  the lexicon, a backbone) and names any the settings do not produce;
* :func:`subset_features`: computes only those: the lesion radiomics restricted to the listed
  features and image types, only the regions and backbones that are used, the lexicon only when
  one of its columns is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from usher2.features.config import REGIONS, ExtractConfig
from usher2.features.lexicon import lexicon_features
from usher2.features.models import deep_extractor as _deep
from usher2.features.models import radiomics_extractor
from usher2.features.regions import radiomics_rows, region_rows
from usher2.io.errors import InputError

__all__ = ["subset_features", "wanted_columns"]


def wanted_columns(cfg: ExtractConfig, columns: Sequence[str]) -> dict[str, Any]:
    """Sort requested columns by where they come from; raise on one ``cfg`` does not produce.

    Returns:
        ``{"order": the columns, "lesion": lesion radiomics, "regions": {region: its
        radiomics_original_* names}, "lexicon": lexicon columns, "deep": {backbone spec: columns}}``,
        what :func:`subset_features` takes.

    Raises:
        InputError: A column these settings do not produce (the message names it).
    """
    from usher2.features.deep import parse_backbone
    from usher2.features.lexicon import LEXICON_COLUMNS

    cols = list(dict.fromkeys(columns))
    extra = [r for r in cfg.regions if r != "lesion"]
    deep_names = {parse_backbone(s).name: s for s in cfg.backbones}
    out: dict[str, Any] = {"order": cols, "lesion": [], "regions": {}, "lexicon": [], "deep": {}}
    other = ("radiomics_lexicon_", *(f"radiomics_{r}_" for r in REGIONS))  # not lesion radiomics
    bad = []
    for c in cols:
        region = next((r for r in extra if c.startswith(f"radiomics_{r}_")), None)
        backbone = next((n for n in deep_names if c.startswith(f"deep_{n}_")), None)
        if not cfg.radiomics and c.startswith("radiomics_"):
            bad.append(c)
        elif c in LEXICON_COLUMNS:
            (out["lexicon"] if cfg.lexicon else bad).append(c)
        elif region is not None:
            out["regions"].setdefault(region, []).append(c.replace(f"radiomics_{region}_", "radiomics_", 1))
        elif backbone is not None:
            out["deep"].setdefault(deep_names[backbone], []).append(c)
        elif c.startswith("radiomics_") and not c.startswith(other):
            out["lesion"].append(c)
        else:
            bad.append(c)
    if bad:
        raise InputError(
            "feature columns", "columns these extraction settings produce", f"{len(bad)} others, e.g. {bad[:3]}"
        )
    for spec, names in out["deep"].items():
        known = set(_deep(cfg, spec).columns)
        unknown = [c for c in names if c not in known]
        if unknown:
            raise InputError("feature columns", f"columns of the {spec} backbone", f"unknown {unknown[:3]}")
    out["regions"] = {r: tuple(v) for r, v in out["regions"].items()}
    return out


def subset_features(
    cfg: ExtractConfig, items: list[tuple[np.ndarray, np.ndarray, tuple[float, float] | None]], wanted: dict[str, Any]
) -> list[Any]:
    """:func:`~usher2.features.extract.frame_features` for the columns sorted by :func:`wanted_columns`."""
    rows: list[Any] = [{} for _ in items]
    for i, (p, m, _) in enumerate(items):
        m = np.asarray(m)
        if m.shape != p.shape or not m.any():
            what = f"shape {m.shape} for a frame of {p.shape}" if m.shape != p.shape else "an empty mask"
            rows[i] = InputError("mask", "a non-empty mask of the frame's shape", what)
    if wanted["lesion"]:
        rad = radiomics_extractor(cfg, wanted["lesion"])
        todo = [i for i, r in enumerate(rows) if isinstance(r, dict)]
        for i, row in zip(todo, radiomics_rows(rad, [items[i] for i in todo]), strict=True):
            rows[i] = row if isinstance(row, InputError) else dict(row)
    todo = [i for i, r in enumerate(rows) if isinstance(r, dict)]
    if wanted["regions"]:
        for i, extra in zip(todo, region_rows(cfg, [items[i] for i in todo], wanted["regions"]), strict=True):
            rows[i].update(extra)
    if wanted["lexicon"]:
        for i in todo:
            lex = lexicon_features(*items[i], columns=wanted["lexicon"])
            rows[i].update({c: lex[c] for c in wanted["lexicon"]})
    ok = [i for i, r in enumerate(rows) if isinstance(r, dict)]
    for spec, names in wanted["deep"].items():
        deep = _deep(cfg, spec)
        pos = {c: j for j, c in enumerate(deep.columns)}
        idx = [pos[c] for c in names]
        feats = deep.features([items[i][0] for i in ok], [items[i][1] for i in ok]) if ok else []
        for j, i in enumerate(ok):
            rows[i].update(zip(names, map(float, feats[j][idx]), strict=True))
    return [{c: r[c] for c in wanted["order"]} if isinstance(r, dict) else r for r in rows]
