r"""Clinical variables, lesion traits and the HER2 label model of the synthetic cohort.

Every variable is drawn **independently** from the prior listed below, so the oracle
(Bayes) score of any subset of variables can be computed exactly by integrating the others
over their prior (no conditioning is needed).

Label model
-----------
Each variable :math:`x_j` is mapped by a fixed transform :math:`z_j = f_j(x_j)` (roughly
zero mean, unit spread under its prior) and

.. math::

    \eta = b_0 + \sum_j \beta_j z_j,\qquad
    \text{true\_prob} = \sigma(\eta) = \frac{1}{1 + e^{-\eta}},\qquad
    \text{label} \sim \text{Bernoulli}(\text{true\_prob}).

=========================  ====================================  ===================================  =======
variable (column)          prior                                 transform :math:`z_j`                 β
=========================  ====================================  ===================================  =======
age                        round(N(56, 12)) clipped to [25, 90]   (age − 56) / 12                      −0.45
tumour_size_mm (shared)    LogNormal(ln 18, 0.4), [6, 36], 0.1    ln(size / 18) / 0.4                  +0.30
ln_status                  Bernoulli(0.35)                       ln_status                            +0.85
er                         Bernoulli(0.70)                       er                                   −1.50
pr                         Bernoulli(0.60)                       pr                                   −0.70
grade                      {1, 2, 3} w.p. (0.20, 0.45, 0.35)     grade − 2                            +0.75
ki67 (%)                   round(100 · Beta(1.5, 4))             (ki67 − 27) / 17.5                   +0.55
trait_aspect_ratio         U(0.4, 1.0) (short / long axis)       (ar − 0.7) / 0.17                    −0.25
trait_orientation_deg      U(−90, 90) (long axis vs skin)        (|sin θ| − 0.637) / 0.308            −0.40
trait_lobulation           Beta(1.5, 2.5)                        (x − 0.375) / 0.217                  +0.75
trait_spiculation          Beta(1.2, 3.0)                        (x − 0.286) / 0.198                  −0.90
trait_echogenicity_db      N(−12, 5) clipped to [−28, 2]          (x + 12) / 5                         +0.50
trait_heterogeneity        U(0, 1)                               (x − 0.5) / 0.289                    +0.65
trait_posterior            U(−1, 1) (−shadow … +enhancement)     x / 0.577                            +0.90
trait_halo_mm              0 w.p. 0.6, else U(0.5, 3)            (x − 0.7) / 0.97                     −0.40
trait_calcifications       0 w.p. 0.55, else 1 + Poisson(3)      (ln(1 + n) − 0.8) / 0.8              +1.10
=========================  ====================================  ===================================  =======

with :math:`b_0 = -0.40` (prevalence ≈ 0.30). The coefficients live in :class:`LabelModel`
(frozen, configurable); the table gives its defaults, calibrated with a labels-only
simulation of 400,000 patients to give oracle AUCs of ≈ 0.70 (clinical), ≈ 0.84 (image)
and ≈ 0.90 (all). With independent views these three cannot be set separately: clinical and
image signal add up to "all".

Tumour size in both views
-------------------------
The tumour size is **one** variable: the clinical ``tumour_size_mm`` is the lesion's longest
diameter that the image shows (``trait_size_mm`` holds the same number). It enters
:math:`\eta` once. The "clinical" view is {age, tumour_size_mm, ln_status, er, pr, grade,
ki67}; the "image" view is {tumour_size_mm, all ``trait_*`` columns}; "all" is their union.

Oracle score of a subset
------------------------
For a subset S the oracle score is :math:`E[\text{true\_prob} \mid x_S] =
\int \sigma(\eta_S + u)\, dF(u)` with :math:`\eta_S = b_0 + \sum_{j\in S}\beta_j z_j` and
:math:`u = \sum_{j\notin S}\beta_j z_j` distributed under the prior. :math:`F` is estimated by
a fixed-seed Monte Carlo sample of the prior; the integral is evaluated on a grid of
:math:`\eta_S` and interpolated. The score is strictly increasing in :math:`\eta_S`, so its AUC
equals the AUC of :math:`\eta_S` and does not depend on the Monte Carlo error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.metrics import roc_auc_score

__all__ = [
    "ALL_VARIABLES",
    "CLINICAL_VARIABLES",
    "IMAGE_VARIABLES",
    "LabelModel",
    "draw_in_blocks",
    "linear_predictor",
    "oracle_auc",
    "oracle_aucs",
    "oracle_scores",
    "simulate_labels",
]

CLINICAL_VARIABLES: tuple[str, ...] = ("age", "tumour_size_mm", "ln_status", "er", "pr", "grade", "ki67")
IMAGE_VARIABLES: tuple[str, ...] = (
    "tumour_size_mm",
    "trait_aspect_ratio",
    "trait_orientation_deg",
    "trait_lobulation",
    "trait_spiculation",
    "trait_echogenicity_db",
    "trait_heterogeneity",
    "trait_posterior",
    "trait_halo_mm",
    "trait_calcifications",
)
ALL_VARIABLES: tuple[str, ...] = CLINICAL_VARIABLES + IMAGE_VARIABLES[1:]
NAMED_SUBSETS: dict[str, tuple[str, ...]] = {
    "clinical": CLINICAL_VARIABLES,
    "image": IMAGE_VARIABLES,
    "all": ALL_VARIABLES,
}
# The image view records the shared size under its own name too; both mean the same variable.
_ALIASES = {"trait_size_mm": "tumour_size_mm"}

# Patients are drawn in fixed blocks, each from its own seed, so patient i is the same whatever n is.
_BLOCK = 4096
_LABEL_STREAM = 0x1ABE1  # tag that keeps the label stream apart from the rendering streams


@dataclass(frozen=True)
class LabelModel:
    """Coefficients of the HER2 logistic model (see the module docstring for the transforms).

    Each ``beta_*`` multiplies the standardised transform of its variable; ``intercept`` is
    :math:`b_0`.

    Example:
        >>> LabelModel().intercept
        -0.4
        >>> LabelModel(beta_er=-2.0).beta_er
        -2.0
    """

    intercept: float = -0.40
    beta_age: float = -0.45
    beta_tumour_size_mm: float = 0.30
    beta_ln_status: float = 0.85
    beta_er: float = -1.50
    beta_pr: float = -0.70
    beta_grade: float = 0.75
    beta_ki67: float = 0.55
    beta_trait_aspect_ratio: float = -0.25
    beta_trait_orientation_deg: float = -0.40
    beta_trait_lobulation: float = 0.75
    beta_trait_spiculation: float = -0.90
    beta_trait_echogenicity_db: float = 0.50
    beta_trait_heterogeneity: float = 0.65
    beta_trait_posterior: float = 0.90
    beta_trait_halo_mm: float = -0.40
    beta_trait_calcifications: float = 1.10

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"LabelModel.{f.name} must be a finite number, got {v!r}")
            if abs(v) > 20:
                raise ValueError(f"LabelModel.{f.name} must lie in [-20, 20] (a logit scale), got {v}")

    def beta(self, variable: str) -> float:
        """The coefficient of ``variable`` (a column name from :data:`ALL_VARIABLES`)."""
        return float(getattr(self, f"beta_{_canonical(variable)}"))


# --- priors and transforms --------------------------------------------------------------------------


def _draw_age(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.clip(np.round(rng.normal(56.0, 12.0, n)), 25, 90)


def _draw_size(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.round(np.clip(rng.lognormal(math.log(18.0), 0.4, n), 6.0, 36.0), 1)


def _draw_bernoulli(p: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return (rng.random(n) < p).astype(np.float64)

    return draw


def _draw_grade(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(np.array([1.0, 2.0, 3.0]), size=n, p=[0.20, 0.45, 0.35])


def _draw_ki67(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.round(100.0 * rng.beta(1.5, 4.0, n))


def _draw_uniform(lo: float, hi: float, digits: int = 3) -> Callable[[np.random.Generator, int], np.ndarray]:
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.round(rng.uniform(lo, hi, n), digits)

    return draw


def _draw_beta(a: float, b: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.round(rng.beta(a, b, n), 3)

    return draw


def _draw_echo(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.round(np.clip(rng.normal(-12.0, 5.0, n), -28.0, 2.0), 2)


def _draw_halo(rng: np.random.Generator, n: int) -> np.ndarray:
    present = rng.random(n) >= 0.6
    return np.where(present, np.round(rng.uniform(0.5, 3.0, n), 2), 0.0)


def _draw_calcs(rng: np.random.Generator, n: int) -> np.ndarray:
    present = rng.random(n) >= 0.55
    return np.where(present, 1.0 + rng.poisson(3.0, n), 0.0)


@dataclass(frozen=True)
class _Variable:
    draw: Callable[[np.random.Generator, int], np.ndarray]
    transform: Callable[[np.ndarray], np.ndarray]


_VARIABLES: dict[str, _Variable] = {
    "age": _Variable(_draw_age, lambda x: (x - 56.0) / 12.0),
    "tumour_size_mm": _Variable(_draw_size, lambda x: np.log(x / 18.0) / 0.4),
    "ln_status": _Variable(_draw_bernoulli(0.35), lambda x: x),
    "er": _Variable(_draw_bernoulli(0.70), lambda x: x),
    "pr": _Variable(_draw_bernoulli(0.60), lambda x: x),
    "grade": _Variable(_draw_grade, lambda x: x - 2.0),
    "ki67": _Variable(_draw_ki67, lambda x: (x - 27.0) / 17.5),
    "trait_aspect_ratio": _Variable(_draw_uniform(0.4, 1.0), lambda x: (x - 0.7) / 0.17),
    "trait_orientation_deg": _Variable(
        _draw_uniform(-90.0, 90.0, 1), lambda x: (np.abs(np.sin(np.deg2rad(x))) - 0.637) / 0.308
    ),
    "trait_lobulation": _Variable(_draw_beta(1.5, 2.5), lambda x: (x - 0.375) / 0.217),
    "trait_spiculation": _Variable(_draw_beta(1.2, 3.0), lambda x: (x - 0.286) / 0.198),
    "trait_echogenicity_db": _Variable(_draw_echo, lambda x: (x + 12.0) / 5.0),
    "trait_heterogeneity": _Variable(_draw_uniform(0.0, 1.0), lambda x: (x - 0.5) / 0.289),
    "trait_posterior": _Variable(_draw_uniform(-1.0, 1.0), lambda x: x / 0.577),
    "trait_halo_mm": _Variable(_draw_halo, lambda x: (x - 0.7) / 0.97),
    "trait_calcifications": _Variable(_draw_calcs, lambda x: (np.log1p(x) - 0.8) / 0.8),
}
assert tuple(_VARIABLES) == ALL_VARIABLES  # the draw order is part of the seeded stream


def _canonical(name: str) -> str:
    name = _ALIASES.get(name, name)
    if name not in _VARIABLES:
        raise KeyError(f"unknown variable {name!r}; expected one of {', '.join(ALL_VARIABLES)} (or trait_size_mm)")
    return name


def _resolve_subset(subset: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(subset, str):
        if subset in NAMED_SUBSETS:
            return NAMED_SUBSETS[subset]
        if subset in _VARIABLES or subset in _ALIASES:
            return (_canonical(subset),)
        raise KeyError(
            f"unknown subset {subset!r}; expected one of {', '.join(NAMED_SUBSETS)}, a variable name, "
            "or a list of variable names"
        )
    out = tuple(dict.fromkeys(_canonical(s) for s in subset))
    if not out:
        raise ValueError("subset is empty; give at least one variable (or use 'all')")
    return out


def _draw_block(seed: int, block: int, n: int, model: LabelModel) -> pd.DataFrame:
    rng = np.random.default_rng(np.random.SeedSequence([seed, _LABEL_STREAM, block]))
    cols = {name: var.draw(rng, n) for name, var in _VARIABLES.items()}
    df = pd.DataFrame(cols)
    eta = linear_predictor(df, model)
    df["true_prob"] = expit(eta)
    df["label"] = (rng.random(n) < df["true_prob"].to_numpy()).astype(np.int64)
    return df


def draw_in_blocks(n: int, seed: int, draw_block: Callable[[int, int, int], pd.DataFrame]) -> pd.DataFrame:
    """The first ``n`` rows of ``draw_block(seed, block, size)`` over blocks ``0, 1, …`` of a fixed size.

    Every block draws from its own seed, so patient ``i`` does not depend on ``n``.

    Raises:
        ValueError: ``n`` is not a positive integer or ``seed`` not a non-negative one.

    Example:
        >>> draw_in_blocks(3, 0, lambda seed, block, size: pd.DataFrame({"i": range(size)})).i.tolist()
        [0, 1, 2]
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n_blocks = -(-int(n) // _BLOCK)
    df = pd.concat([draw_block(int(seed), b, _BLOCK) for b in range(n_blocks)], ignore_index=True)
    return df.iloc[: int(n)].reset_index(drop=True)


# --- public functions -------------------------------------------------------------------------------


def simulate_labels(n: int, seed: int, model: LabelModel | None = None) -> pd.DataFrame:
    """Draw clinical variables, lesion traits, ``true_prob`` and ``label`` for ``n`` patients.

    No image is rendered, so this is fast (about a million patients per second). Patients are drawn
    in blocks with their own seeds, so the first ``k`` rows do not depend on ``n``.

    Args:
        n: Number of patients (>= 1).
        seed: Cohort seed (>= 0).
        model: Label coefficients; the defaults of :class:`LabelModel` when None.

    Returns:
        One row per patient: the columns of :data:`ALL_VARIABLES` (``age``, ``grade`` and ``ki67``
        as integers; ``er``, ``pr``, ``ln_status`` as 0/1), ``trait_size_mm`` (= ``tumour_size_mm``),
        ``true_prob`` and ``label`` (HER2 positive = 1).

    Example:
        >>> df = simulate_labels(1000, seed=0)
        >>> df.shape[0], bool(df["true_prob"].between(0, 1).all())
        (1000, True)
    """
    model = model or LabelModel()
    df = draw_in_blocks(n, seed, lambda s, block, size: _draw_block(s, block, size, model))
    for col in ("age", "ln_status", "er", "pr", "grade", "ki67", "trait_calcifications"):
        df[col] = df[col].astype(np.int64)
    df.insert(df.columns.get_loc("trait_aspect_ratio"), "trait_size_mm", df["tumour_size_mm"])
    return df


def linear_predictor(
    df: pd.DataFrame | Mapping[str, np.ndarray], model: LabelModel | None = None, subset: str | Iterable[str] = "all"
) -> np.ndarray:
    """:math:`\\eta_S = b_0 + \\sum_{j \\in S} \\beta_j z_j` for every row.

    Args:
        df: Table with the columns of the subset.
        model: Label coefficients (defaults when None).
        subset: "all", "clinical", "image", one variable name, or a list of names.

    Returns:
        ``(n,)`` float64.

    Example:
        >>> df = simulate_labels(5, seed=1)
        >>> bool(np.allclose(1 / (1 + np.exp(-linear_predictor(df))), df["true_prob"]))
        True
    """
    model = model or LabelModel()
    names = _resolve_subset(subset)
    eta: np.ndarray | None = None
    for name in names:
        col = name if name in df else next((a for a, c in _ALIASES.items() if c == name and a in df), None)
        if col is None:
            raise KeyError(f"column {name!r} is missing; the table has {', '.join(map(str, df))}")
        x = np.asarray(df[col], dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"column {col!r} holds {int((~np.isfinite(x)).sum())} non-finite values")
        term = model.beta(name) * _VARIABLES[name].transform(x)
        eta = term if eta is None else eta + term
    assert eta is not None
    return model.intercept + eta


def _marginal_sample(others: tuple[str, ...], model: LabelModel, n_mc: int) -> np.ndarray:
    # A fixed seed: the oracle score is a property of the model, not of the cohort.
    rng = np.random.default_rng(np.random.SeedSequence([20240917, n_mc]))
    u = np.zeros(n_mc)
    for name in ALL_VARIABLES:
        x = _VARIABLES[name].draw(rng, n_mc)  # drawn for every variable so the stream is stable
        if name in others:
            u += model.beta(name) * _VARIABLES[name].transform(x)
    return u


def oracle_scores(
    df: pd.DataFrame, subset: str | Iterable[str] = "all", model: LabelModel | None = None, n_mc: int = 16384
) -> np.ndarray:
    """Oracle score :math:`E[\\text{true\\_prob} \\mid x_S]` of every row for the subset S.

    Args:
        df: Table with the columns of the subset.
        subset: "all", "clinical", "image", one variable name, or a list of names.
        model: Label coefficients (defaults when None).
        n_mc: Monte Carlo draws of the other variables' prior.

    Returns:
        ``(n,)`` float64 probabilities. For "all" this is ``sigmoid(eta)`` itself.

    Example:
        >>> df = simulate_labels(100, seed=0)
        >>> s = oracle_scores(df, "clinical")
        >>> s.shape, bool(((s > 0) & (s < 1)).all())
        ((100,), True)
    """
    model = model or LabelModel()
    names = _resolve_subset(subset)
    eta_s = linear_predictor(df, model, names)
    others = tuple(v for v in ALL_VARIABLES if v not in names)
    if not others:
        return expit(eta_s)
    u = _marginal_sample(others, model, n_mc)
    lo, hi = float(eta_s.min()), float(eta_s.max())
    grid = np.linspace(lo - 1e-9, hi + 1e-9, 1024)
    g = np.empty_like(grid)
    for i in range(0, grid.size, 64):
        g[i : i + 64] = expit(grid[i : i + 64, None] + u[None, :]).mean(axis=1)
    return np.interp(eta_s, grid, g)


def oracle_auc(df: pd.DataFrame, subset: str | Iterable[str] = "all", model: LabelModel | None = None) -> float:
    """ROC AUC of the oracle score of ``subset`` against ``df["label"]``.

    For "all" the score is the ``true_prob`` column when present, so the result equals
    ``roc_auc_score(df.label, df.true_prob)`` exactly.

    Example:
        >>> df = simulate_labels(2000, seed=0)
        >>> 0.5 < oracle_auc(df, "clinical") < oracle_auc(df, "all")
        True
    """
    if "label" not in df:
        raise KeyError("column 'label' is missing; oracle AUCs need the 0/1 label")
    y = np.asarray(df["label"])
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError(f"label must contain both 0 and 1, got values {sorted(set(np.unique(y).tolist()))}")
    names = _resolve_subset(subset)
    if set(names) == set(ALL_VARIABLES) and "true_prob" in df:
        score = np.asarray(df["true_prob"], dtype=np.float64)
    else:
        score = oracle_scores(df, names, model)
    return float(roc_auc_score(y, score))


def oracle_aucs(df: pd.DataFrame, config: object | None = None) -> dict[str, float]:
    """Oracle AUCs of the named subsets "clinical", "image" and "all".

    Args:
        df: A manifest from :func:`usher2.simulate.simulate_cohort` or a table from
            :func:`simulate_labels` (needs ``label`` and the variable columns).
        config: A :class:`usher2.simulate.SimulationConfig` or :class:`LabelModel` whose
            coefficients made the labels; the defaults when None.

    Returns:
        ``{"clinical": auc, "image": auc, "all": auc}``.

    Example:
        >>> aucs = oracle_aucs(simulate_labels(5000, seed=0))
        >>> sorted(aucs)
        ['all', 'clinical', 'image']
    """
    if config is None:
        model = LabelModel()
    elif isinstance(config, LabelModel):
        model = config
    elif isinstance(getattr(config, "label_model", None), LabelModel):
        model = config.label_model  # type: ignore[attr-defined]
    else:
        raise TypeError(f"config must be a SimulationConfig, a LabelModel or None, got {type(config).__name__}")
    return {name: oracle_auc(df, name, model) for name in ("clinical", "image", "all")}
