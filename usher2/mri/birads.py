r"""BI-RADS MRI descriptors: a declared lexicon, a numeric encoding, and a simulated reader for phantoms.

Lexicon
-------
:data:`BIRADS_DESCRIPTORS` follows the ACR BI-RADS Atlas, 5th edition, MRI lexicon (masses and
kinetics, T2 and associated features). Categories are listed in their coded order; the ordinal
descriptors (:data:`BIRADS_ORDINAL`) are ordered by suspicion or signal:

=======================  =====================================================================  ========
descriptor (column)      categories, in order                                                   encoding
=======================  =====================================================================  ========
lesion_type              mass, non-mass enhancement, focus                                      one-hot
shape                    oval, round, irregular                                                 one-hot
margin                   circumscribed, irregular, spiculated                                   ordinal
internal_enhancement     homogeneous, heterogeneous, rim enhancement, dark internal septations  one-hot
kinetic_initial          slow, medium, fast                                                     ordinal
kinetic_curve            persistent, plateau, washout                                           ordinal
t2_signal                hypointense, isointense, hyperintense                                  ordinal
peritumoral_edema        absent, present                                                        ordinal
axillary_lymph_nodes     absent, present                                                        ordinal
=======================  =====================================================================  ========

:func:`encode_birads` writes ``birads_<descriptor>`` (the 0-based code) for an ordinal descriptor
and ``birads_<descriptor>_<category>`` (0/1, spaces as underscores) for each category of a nominal
one; ``kinetic_curve`` codes 0 persistent, 1 plateau, 2 washout, as ``trait_curve_type`` does.
Matching ignores case, surrounding space and ``_``/``-`` versus space, and knows common synonyms
(:data:`BIRADS_SYNONYMS`): e.g. "type I"/"type 1"/"progressive" for persistent, "wash-out",
"homogenous", "ring" for rim enhancement, "hypo"/"low"/"dark", "yes"/"no"/"1"/"0" for
present/absent, "lobulated" (a 4th-edition shape, now oval) and "not circumscribed" or
"indistinct" for an irregular margin (the atlas's unspecified not-circumscribed margin coded at
the irregular level). Input columns may also be named by the aliases in
:data:`BIRADS_COLUMN_ALIASES` (``curve_type``, ``edema``, ``lymph_nodes``, …).

Simulated reader
----------------
:func:`phantom_descriptors` reads a breast phantom manifest (:mod:`usher2.mri.phantom`) as a
radiologist would, from the drawn traits:

=======================  ==========================================================================
descriptor               true category
=======================  ==========================================================================
shape                    irregular when ``trait_lobulation`` ≥ 0.5, else oval (the phantom's
                         ellipsoids are 0.6–1 × their long axis and the manifest does not carry the
                         aspect, so round arises only from reader error)
margin                   circumscribed (lobulation < 0.3), irregular (< 0.6), spiculated (≥ 0.6)
internal_enhancement     homogeneous (``trait_peak_enhancement_pct`` < 90), heterogeneous (< 150),
                         rim enhancement (≥ 150): the renderer's rim exceeds the core by 0.3 × the
                         peak, so the rim-core gap grows with it
kinetic_initial          slow (< 50 %), medium (50–100 %), fast (> 100 %) from the peak enhancement
kinetic_curve            ``CURVE_TYPES[trait_curve_type]`` (persistent, plateau, washout)
t2_signal                isointense (every phantom lesion is 0.40 on T2, between FGT 0.30 and fat 0.60)
peritumoral_edema        present when ``trait_edema_mm`` > 0
axillary_lymph_nodes     present ~ Bernoulli(σ(−1.2 + 0.7 (grade − 2) + 0.6 ln(size / 20) / 0.35))
=======================  ==========================================================================

Then, independently for every cell, with probability ``reader_error`` the reader reports one of
the descriptor's other categories, chosen uniformly. The node draw and the errors use their own
streams of ``seed``, so the true categories do not depend on ``reader_error``.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from usher2.io.errors import InputError

__all__ = [
    "BIRADS_COLUMN_ALIASES",
    "BIRADS_DESCRIPTORS",
    "BIRADS_ORDINAL",
    "BIRADS_SYNONYMS",
    "birads_columns",
    "encode_birads",
    "phantom_descriptors",
]

BIRADS_DESCRIPTORS: dict[str, tuple[str, ...]] = {
    "lesion_type": ("mass", "non-mass enhancement", "focus"),
    "shape": ("oval", "round", "irregular"),
    "margin": ("circumscribed", "irregular", "spiculated"),
    "internal_enhancement": ("homogeneous", "heterogeneous", "rim enhancement", "dark internal septations"),
    "kinetic_initial": ("slow", "medium", "fast"),
    "kinetic_curve": ("persistent", "plateau", "washout"),
    "t2_signal": ("hypointense", "isointense", "hyperintense"),
    "peritumoral_edema": ("absent", "present"),
    "axillary_lymph_nodes": ("absent", "present"),
}
BIRADS_ORDINAL: frozenset[str] = frozenset(
    {"margin", "kinetic_initial", "kinetic_curve", "t2_signal", "peritumoral_edema", "axillary_lymph_nodes"}
)

_PRESENCE = {
    "absent": ("no", "none", "negative", "neg", "0", "false", "n", "not present", "not seen"),
    "present": ("yes", "positive", "pos", "1", "true", "y", "seen"),
}
BIRADS_SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "lesion_type": {
        "non-mass enhancement": ("nme", "non mass", "nonmass", "non mass enhancement", "nonmass enhancement"),
        "focus": ("foci",),
    },
    "shape": {"oval": ("lobulated", "lobular", "ovoid", "elliptical")},
    "margin": {
        "circumscribed": ("smooth", "well defined", "well circumscribed", "sharp"),
        "irregular": ("not circumscribed", "noncircumscribed", "non circumscribed", "indistinct", "ill defined"),
        "spiculated": ("spiculate", "spiculation", "spiculations"),
    },
    "internal_enhancement": {
        "homogeneous": ("homogenous", "homog"),
        "heterogeneous": ("heterogenous", "heterog"),
        "rim enhancement": ("rim", "ring", "ring enhancement", "rim enhancing"),
        "dark internal septations": ("dark septations", "dark internal septation", "internal septations"),
    },
    "kinetic_initial": {"medium": ("intermediate", "moderate"), "fast": ("rapid",)},
    "kinetic_curve": {
        "persistent": ("type i", "type 1", "i", "progressive", "persistent enhancement"),
        "plateau": ("type ii", "type 2", "ii"),
        "washout": ("type iii", "type 3", "iii", "wash out", "washout enhancement"),
    },
    "t2_signal": {
        "hypointense": ("hypo", "low", "dark", "hypointensity"),
        "isointense": ("iso", "intermediate", "isointensity"),
        "hyperintense": ("hyper", "high", "bright", "hyperintensity"),
    },
    "peritumoral_edema": _PRESENCE,
    "axillary_lymph_nodes": _PRESENCE,
}
BIRADS_COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "lesion_type": ("lesion_category",),
    "shape": ("mass_shape",),
    "margin": ("mass_margin", "margins"),
    "internal_enhancement": ("internal_enhancement_pattern", "mass_internal_enhancement"),
    "kinetic_initial": ("initial_phase", "initial_enhancement"),
    "kinetic_curve": ("curve_type", "delayed_phase", "kinetic_curve_type", "tic_type"),
    "t2_signal": ("t2_intensity", "t2_signal_intensity"),
    "peritumoral_edema": ("edema", "oedema", "peritumoral_oedema", "peritumoural_edema", "peritumoural_oedema"),
    "axillary_lymph_nodes": ("lymph_nodes", "axillary_nodes", "axillary_adenopathy", "adenopathy"),
}


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", str(text).strip().lower()))


def _column_key(name: object) -> str:
    return _norm(str(name)).replace(" ", "_")


def _lookup(descriptor: str) -> dict[str, int]:
    cats = BIRADS_DESCRIPTORS[descriptor]
    out = {_norm(c): i for i, c in enumerate(cats)}
    for cat, syns in BIRADS_SYNONYMS.get(descriptor, {}).items():
        out.update({_norm(s): cats.index(cat) for s in syns})
    return out


_LOOKUP: dict[str, dict[str, int]] = {d: _lookup(d) for d in BIRADS_DESCRIPTORS}
_COLUMNS: dict[str, str] = {d: d for d in BIRADS_DESCRIPTORS} | {
    a: d for d, aliases in BIRADS_COLUMN_ALIASES.items() for a in aliases
}


def _slug(category: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", category.lower()).strip("_")


def birads_columns(descriptors: Iterable[str] | None = None) -> tuple[str, ...]:
    """The numeric columns :func:`encode_birads` writes for ``descriptors`` (all when None), in order.

    Example:
        >>> birads_columns(["shape", "kinetic_curve"])
        ('birads_shape_oval', 'birads_shape_round', 'birads_shape_irregular', 'birads_kinetic_curve')
    """
    names = tuple(BIRADS_DESCRIPTORS) if descriptors is None else tuple(_descriptor(d) for d in descriptors)
    out: list[str] = []
    for d in names:
        if d in BIRADS_ORDINAL:
            out.append(f"birads_{d}")
        else:
            out.extend(f"birads_{d}_{_slug(c)}" for c in BIRADS_DESCRIPTORS[d])
    return tuple(out)


def _descriptor(name: str) -> str:
    key = _column_key(name)
    if key not in _COLUMNS:
        raise InputError(
            "descriptors", f"BI-RADS descriptors from {', '.join(BIRADS_DESCRIPTORS)} (or their aliases)", repr(name)
        )
    return _COLUMNS[key]


def _missing(value: Any) -> bool:
    if value is None or (isinstance(value, str) and not value.strip()):
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _cell_text(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "1" if value else "0"
    if isinstance(value, int | float | np.integer | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def encode_birads(
    table: pd.DataFrame, *, descriptors: Iterable[str] | None = None, strict: bool = True
) -> pd.DataFrame:
    """Encode a table of BI-RADS MRI descriptor categories as numeric columns.

    Args:
        table: One row per lesion: ``case_id`` and one text column per descriptor, named as in
            :data:`BIRADS_DESCRIPTORS` or an alias in :data:`BIRADS_COLUMN_ALIASES` (case and
            ``_``/space/``-`` ignored). Other columns are ignored.
        descriptors: Descriptors to encode (each must have a column); None encodes every descriptor
            the table has.
        strict: An unknown category raises :class:`InputError`; False makes it NaN with a warning.

    Returns:
        ``case_id`` then, in lexicon order, ``birads_<descriptor>`` (ordinal code 0, 1, …) or
        ``birads_<descriptor>_<category>`` (0/1 one-hot) as float64; a missing cell is NaN (in every
        one-hot column of its descriptor).

    Raises:
        InputError: No ``case_id`` column, no descriptor column, a requested descriptor without a
            column, two columns for one descriptor, or (``strict``) an unknown category, naming the
            row, its case_id, the column, the value and the allowed categories.

    Example:
        >>> t = pd.DataFrame({"case_id": ["a", "b"], "Curve type": ["Type III", "plateau"], "shape": ["oval", None]})
        >>> encode_birads(t).to_dict("list")  # doctest: +NORMALIZE_WHITESPACE
        {'case_id': ['a', 'b'], 'birads_shape_oval': [1.0, nan], 'birads_shape_round': [0.0, nan],
         'birads_shape_irregular': [0.0, nan], 'birads_kinetic_curve': [2.0, 1.0]}
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if "case_id" not in table:
        raise InputError("table", "a case_id column", f"columns {', '.join(map(str, table.columns))}")
    found: dict[str, Any] = {}
    for col in table.columns:
        d = _COLUMNS.get(_column_key(col))
        if d is None or col == "case_id":
            continue
        if d in found:
            raise InputError(
                "table", f"one column for the descriptor {d!r}", f"two: {found[d]!r} and {col!r}", "drop or rename one"
            )
        found[d] = col
    if descriptors is None:
        wanted = [d for d in BIRADS_DESCRIPTORS if d in found]
        if not wanted:
            raise InputError(
                "table",
                f"at least one BI-RADS descriptor column ({', '.join(BIRADS_DESCRIPTORS)})",
                f"columns {', '.join(map(str, table.columns))}",
            )
    else:
        asked = {_descriptor(d) for d in descriptors}
        missing = [d for d in BIRADS_DESCRIPTORS if d in asked and d not in found]
        if missing:
            raise InputError(
                "table", f"a column for each requested descriptor ({', '.join(missing)} missing)", "no such column"
            )
        wanted = [d for d in BIRADS_DESCRIPTORS if d in asked]

    out: dict[str, Any] = {"case_id": table["case_id"].to_numpy()}
    case_ids = table["case_id"].tolist()
    for d in wanted:
        col, cats, lookup = found[d], BIRADS_DESCRIPTORS[d], _LOOKUP[d]
        codes = np.full(len(table), np.nan)
        bad: list[str] = []
        for i, value in enumerate(table[col].tolist()):
            if _missing(value):
                continue
            code = lookup.get(_norm(_cell_text(value)))
            if code is not None:
                codes[i] = code
                continue
            where = f"row {i} (case_id {case_ids[i]!r}), column {col!r}"
            if strict:
                raise InputError(
                    where,
                    f"a BI-RADS {d.replace('_', ' ')} category: one of {', '.join(cats)} (case-insensitive)",
                    repr(value),
                    "fix the cell, leave it empty for unknown, or pass strict=False to make it NaN",
                )
            bad.append(f"{where}: {value!r}")
        if bad:
            warnings.warn(
                f"{len(bad)} unknown {d} value(s) set to NaN (allowed: {', '.join(cats)}): {'; '.join(bad[:10])}"
                + (" …" if len(bad) > 10 else ""),
                stacklevel=2,
            )
        if d in BIRADS_ORDINAL:
            out[f"birads_{d}"] = codes
        else:
            for k, c in enumerate(cats):
                out[f"birads_{d}_{_slug(c)}"] = np.where(np.isnan(codes), np.nan, (codes == k).astype(np.float64))
    return pd.DataFrame(out, index=table.index)


_READ: tuple[str, ...] = (
    "shape",
    "margin",
    "internal_enhancement",
    "kinetic_initial",
    "kinetic_curve",
    "t2_signal",
    "peritumoral_edema",
    "axillary_lymph_nodes",
)
_NEEDED = (
    "case_id",
    "trait_lobulation",
    "trait_peak_enhancement_pct",
    "trait_curve_type",
    "trait_edema_mm",
    "grade",
    "tumour_size_mm",
)


def _true_codes(manifest: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
    n = len(manifest)
    lob = manifest["trait_lobulation"].to_numpy(np.float64)
    peak = manifest["trait_peak_enhancement_pct"].to_numpy(np.float64)
    size = manifest["tumour_size_mm"].to_numpy(np.float64)
    grade = manifest["grade"].to_numpy(np.float64)
    node_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB1, 1]))
    p_node = expit(-1.2 + 0.7 * (grade - 2) + 0.6 * np.log(size / 20.0) / 0.35)
    return {
        "shape": np.where(lob >= 0.5, 2, 0),
        "margin": np.digitize(lob, [0.3, 0.6]),
        "internal_enhancement": np.digitize(peak, [90.0, 150.0]),
        "kinetic_initial": np.where(peak < 50, 0, np.where(peak <= 100, 1, 2)),
        "kinetic_curve": manifest["trait_curve_type"].to_numpy(np.float64).astype(np.int64),
        "t2_signal": np.ones(n, dtype=np.int64),
        "peritumoral_edema": (manifest["trait_edema_mm"].to_numpy(np.float64) > 0).astype(np.int64),
        "axillary_lymph_nodes": (node_rng.random(n) < p_node).astype(np.int64),
    }


def phantom_descriptors(manifest: pd.DataFrame, *, seed: int = 0, reader_error: float = 0.15) -> pd.DataFrame:
    """A simulated radiologist's BI-RADS descriptor table for a breast phantom cohort.

    The true categories follow the module docstring's table; each cell is then misread (another
    category of the descriptor, uniformly) with probability ``reader_error``.

    Args:
        manifest: A breast manifest from :func:`usher2.mri.phantom.simulate_mri_cohort` (or a
            :func:`~usher2.mri.phantom.simulate_mri_labels` table with a ``case_id`` column).
        seed: Seed of the reader (lymph-node draw and errors).
        reader_error: Probability in [0, 1) that a cell holds a wrong category.

    Returns:
        ``case_id``, ``shape``, ``margin``, ``internal_enhancement``, ``kinetic_initial``,
        ``kinetic_curve``, ``t2_signal``, ``peritumoral_edema``, ``axillary_lymph_nodes`` as text
        categories of :data:`BIRADS_DESCRIPTORS`, ready for :func:`encode_birads`.

    Raises:
        InputError: A needed column is missing or not finite (e.g. a prostate manifest).

    Example:
        >>> from usher2.mri.phantom import simulate_mri_labels
        >>> m = simulate_mri_labels(200, seed=0).assign(case_id=lambda d: [f"c{i}" for i in d.index])
        >>> t = phantom_descriptors(m, reader_error=0.0)
        >>> bool((encode_birads(t)["birads_kinetic_curve"] == m["trait_curve_type"]).all())
        True
    """
    if not isinstance(manifest, pd.DataFrame):
        raise TypeError(f"manifest must be a pandas DataFrame, got {type(manifest).__name__}")
    missing = [c for c in _NEEDED if c not in manifest]
    if missing:
        raise InputError(
            "manifest",
            "a breast phantom manifest (usher2.mri.phantom) with " + ", ".join(_NEEDED),
            f"no {', '.join(missing)}",
        )
    for c in _NEEDED[1:]:
        if not np.all(np.isfinite(manifest[c].to_numpy(np.float64))):
            raise InputError(f"manifest column {c!r}", "finite numbers", "missing or non-finite values")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(reader_error, bool) or not (
        isinstance(reader_error, int | float) and math.isfinite(reader_error) and 0 <= reader_error < 1
    ):
        raise ValueError(f"reader_error must be a probability in [0, 1), got {reader_error!r}")

    truth = _true_codes(manifest, int(seed))
    err_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB1, 2]))
    out: dict[str, Any] = {"case_id": manifest["case_id"].to_numpy()}
    n = len(manifest)
    for d in _READ:  # every draw is made whatever reader_error, so the stream stays stable
        cats = BIRADS_DESCRIPTORS[d]
        code = truth[d]
        flip = err_rng.random(n) < reader_error
        other = err_rng.integers(0, len(cats) - 1, n)
        other = other + (other >= code)  # a uniformly chosen *other* category
        read = np.where(flip, other, code)
        out[d] = np.asarray(cats, dtype=object)[read]
    return pd.DataFrame(out, index=manifest.index)
