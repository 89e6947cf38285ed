"""Model families, the classifier zoo, and the selection pipelines that feed them.

**Families** pick columns of a feature table by name (:func:`family_columns`):

============  ==========================================================================
``clinical``  the clinical columns given by the user
``radiomics`` ``radiomics_*`` (and ``<sequence>_radiomics_*`` for MRI sequences)
``deep``      ``deep_*``; ``deep:NAME`` for one backbone (``deep_NAME_*``)
``dlr``       radiomics + deep (either may be absent, not both)
``combined``  dlr + clinical
============  ==========================================================================

MRI feature tables name columns ``<sequence>_<source>_...`` (:mod:`usher2.mri.features`); a
family takes every sequence's columns, and ``sequences=("t2", "adc")`` restricts the imaging
columns to those sequences' prefixes (``t2_radiomics_*``...), for per-sequence and
sequence-combination models. DCE kinetic features (``dce_kinetics_*``) count as radiomics.

**Pipelines.** Imaging columns go through ICC filter (when a perturbation table is given) ->
median imputation -> z-score -> univariate filter (Mann-Whitney, p < 0.05) -> Spearman
pruning (|r| > 0.9) -> LASSO (10-fold CV). Clinical columns go through median imputation ->
z-score -> univariate filter (p < 0.05, as the MRI study; at least one kept). The selected
columns of both blocks are concatenated (early fusion) and passed to the classifier.

**Late fusion** (:class:`LateFusionClassifier`, ``fusion="late"``): each imaging source
(radiomics, deep) gives its LASSO linear predictor (Radscore, Deep Score); a logistic
regression combines these scores with the selected clinical variables, as the nomogram
studies do. The scores the final model learns from are out-of-fold (``cv`` folds inside the
training data), never in-sample.

**Classifiers** (:data:`CLASSIFIERS`): ``lr``, ``rf``, ``xgboost``, ``lightgbm``, ``svm``,
``mlp``, each with a small hyperparameter grid searched in the inner folds. They are registered
once, in :data:`CLASSIFIER_SPECS`: how to build one, its grid, how its fitted model reads its
inputs (:mod:`usher2.fusion.needed`) and the types its bundle may construct
(:data:`usher2.fusion.bundle.TRUSTED_TYPES`). Adding a classifier is one entry there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from usher2.fusion.selection import (
    CorrelationPruner,
    ICCFilter,
    LassoSelector,
    PerturbationTable,
    UnivariateFilter,
    case_groups,
)
from usher2.io.errors import InputError

__all__ = [
    "CLASSIFIERS",
    "CLASSIFIER_SPECS",
    "FAMILIES",
    "SELECTION_KEYS",
    "ClassifierSpec",
    "LateFusionClassifier",
    "build_model",
    "check_selection",
    "clinical_selector",
    "family_columns",
    "imaging_selector",
    "make_classifier",
]

#: An MRI sequence prefix of a feature column: ``t2``, ``adc``, ``dwi_b800``, ``dce_p3``...
_SEQUENCE = r"[a-z][a-z0-9]*(?:_[bp][0-9.]+)?"
FAMILIES = ("clinical", "radiomics", "deep", "dlr", "combined")


@dataclass(frozen=True)
class ClassifierSpec:
    """One classifier of the registry.

    Attributes:
        name: Its name (``usher2 fit --classifier``).
        build: ``build(random_state)`` -> the unfitted estimator.
        grid: Its hyperparameter grid (keys without a Pipeline prefix), searched in the inner folds.
        fitted_type: The class name of the fitted estimator.
        reads: How the fitted model reads its inputs, for :func:`usher2.fusion.needed.find_needed`:
            ``coefficients`` (a zero coefficient's input is unused), ``sklearn-trees``,
            ``xgboost``, ``lightgbm`` (the features a split uses) or ``all``.
        trusted_types: Types beyond skops' scikit-learn and NumPy defaults that a bundle of this
            classifier constructs (:data:`usher2.fusion.bundle.TRUSTED_TYPES`).
    """

    name: str
    build: Callable[[int], Any]
    grid: Mapping[str, Sequence[Any]]
    fitted_type: str
    reads: str
    trusted_types: tuple[str, ...] = ()


def _lr(random_state: int) -> Any:
    return LogisticRegression(max_iter=5000)


def _rf(random_state: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=300, n_jobs=1, random_state=random_state)


def _xgboost(random_state: int) -> Any:
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=200, tree_method="hist", n_jobs=1, random_state=random_state, verbosity=0)


def _lightgbm(random_state: int) -> Any:
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_estimators=200, n_jobs=1, random_state=random_state, verbose=-1)


def _svm(random_state: int) -> Any:
    from sklearn.svm import SVC

    return SVC(kernel="rbf", random_state=random_state)


def _mlp(random_state: int) -> Any:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(32,), max_iter=2000, random_state=random_state)


#: The classifiers usher2 fits, registered once (see :class:`ClassifierSpec`).
CLASSIFIER_SPECS = (
    ClassifierSpec("lr", _lr, {"C": [0.1, 1.0, 10.0]}, "LogisticRegression", "coefficients"),
    ClassifierSpec(
        "rf",
        _rf,
        {"max_depth": [3, None], "min_samples_leaf": [1, 5]},
        "RandomForestClassifier",
        "sklearn-trees",
        ("sklearn.tree._tree.Tree",),
    ),
    ClassifierSpec(
        "xgboost",
        _xgboost,
        {"max_depth": [2, 4], "learning_rate": [0.05, 0.2]},
        "XGBClassifier",
        "xgboost",
        ("xgboost.core.Booster", "xgboost.sklearn.XGBClassifier"),
    ),
    ClassifierSpec(
        "lightgbm",
        _lightgbm,
        {"num_leaves": [7, 15], "learning_rate": [0.05, 0.2]},
        "LGBMClassifier",
        "lightgbm",
        ("lightgbm.basic.Booster", "lightgbm.sklearn.LGBMClassifier"),
    ),
    ClassifierSpec("svm", _svm, {"C": [0.3, 1.0, 3.0]}, "SVC", "all"),
    # alpha (weight decay): the regulariser for cohorts of a few hundred
    ClassifierSpec(
        "mlp",
        _mlp,
        {"alpha": [1e-3, 1e-1, 1.0]},
        "MLPClassifier",
        "all",
        (
            "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
            "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        ),
    ),
)
CLASSIFIERS = tuple(spec.name for spec in CLASSIFIER_SPECS)


def family_columns(
    columns: Sequence[str],
    family: str,
    clinical: Sequence[str] = (),
    sequences: Sequence[str] | None = None,
) -> dict[str, list[str]]:
    """The columns a family uses, by source: ``{"radiomics": [...], "deep": [...], "clinical": [...]}``.

    Raises:
        InputError: Unknown family, a clinical column missing, or a family with no columns.

    Example:
        >>> cols = ["radiomics_original_glcm_Contrast", "deep_usresnet10t_0", "deep_resnet50_0", "age"]
        >>> family_columns(cols, "combined", clinical=["age"])["deep"]
        ['deep_usresnet10t_0', 'deep_resnet50_0']
        >>> family_columns(cols, "deep:resnet50")["deep"]
        ['deep_resnet50_0']
    """
    name, _, backbone = family.partition(":")
    if name not in FAMILIES:
        raise InputError("model", f"one of {', '.join(FAMILIES)} (deep:BACKBONE for one backbone)", repr(family))
    cols = list(columns)
    missing = [c for c in clinical if c not in cols]
    if missing:
        raise InputError("clinical", "columns of the feature table or manifest", f"missing {missing}")

    def imaging(kind: str) -> list[str]:
        kinds = (kind, "kinetics") if kind == "radiomics" else (kind,)
        if sequences:
            prefixes = tuple(f"{s}_{k}_" for s in sequences for k in kinds)
            out = [c for c in cols if c.startswith(prefixes)]
        else:  # "radiomics_..." (ultrasound) or "<sequence>_radiomics_..." / "<sequence>_kinetics_..." (MRI)
            pattern = re.compile(rf"^(?:{_SEQUENCE}_(?:{'|'.join(kinds)})|{kind})_")
            out = [c for c in cols if pattern.match(c)]
        if kind == "deep" and backbone:
            out = [c for c in out if c.split("deep_", 1)[1].startswith(f"{backbone}_")]
        return out

    use = {
        "clinical": {"clinical"},
        "radiomics": {"radiomics"},
        "deep": {"deep"},
        "dlr": {"radiomics", "deep"},
        "combined": {"radiomics", "deep", "clinical"},
    }[name]
    out = {
        "radiomics": imaging("radiomics") if "radiomics" in use else [],
        "deep": imaging("deep") if "deep" in use else [],
        "clinical": list(clinical) if "clinical" in use else [],
    }
    if "clinical" in use and not out["clinical"]:
        raise InputError("model", f"clinical columns (--clinical) for the {family!r} model", "none")
    imaging_use = sorted(use - {"clinical"})
    if imaging_use and not any(out[k] for k in imaging_use):  # dlr/combined work with either imaging source
        what = " or ".join(f"{k} feature columns" for k in imaging_use)
        raise InputError("model", f"{what} for the {family!r} model", "none")
    return out


def make_classifier(name: str, random_state: int = 0) -> tuple[Any, dict[str, list[Any]]]:
    """A classifier of :data:`CLASSIFIER_SPECS` and its hyperparameter grid (keys without a Pipeline prefix).

    Example:
        >>> clf, grid = make_classifier("lr"); type(clf).__name__, grid
        ('LogisticRegression', {'C': [0.1, 1.0, 10.0]})
    """
    for spec in CLASSIFIER_SPECS:
        if spec.name == name:
            return spec.build(random_state), {k: list(v) for k, v in spec.grid.items()}
    raise InputError("classifier", f"one of {', '.join(CLASSIFIERS)}", repr(name))


def imaging_selector(
    perturbations: pd.DataFrame | None = None,
    *,
    icc_threshold: float = 0.9,
    icc_form: str = "ICC(3,1)",
    alpha: float = 0.05,
    fdr: bool = False,
    corr_threshold: float = 0.9,
    lasso_cv: int = 10,
    stability: int = 0,
    stability_threshold: float = 0.6,
    random_state: int = 0,
) -> Pipeline:
    """ICC -> impute -> z-score -> univariate -> Spearman pruning -> LASSO."""
    return Pipeline(
        [
            ("icc", ICCFilter(perturbations, threshold=icc_threshold, form=icc_form)),
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("univariate", UnivariateFilter(alpha=alpha, fdr=fdr, min_features=1)),
            ("correlation", CorrelationPruner(threshold=corr_threshold)),
            (
                "lasso",
                LassoSelector(
                    cv=lasso_cv,
                    stability=stability,
                    stability_threshold=stability_threshold,
                    random_state=random_state,
                ),
            ),
        ]
    )


def clinical_selector(alpha: float = 0.05) -> Pipeline:
    """Impute -> z-score -> univariate p < ``alpha`` (at least one variable kept)."""
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("univariate", UnivariateFilter(alpha=alpha, min_features=1)),
        ]
    )


#: Settings of the selection pipelines: :func:`imaging_selector`'s keyword arguments and
#: ``clinical_alpha`` (the clinical block's univariate p threshold; 1 keeps every clinical column).
SELECTION_KEYS: tuple[str, ...] = (
    "icc_threshold",
    "icc_form",
    "alpha",
    "fdr",
    "corr_threshold",
    "lasso_cv",
    "stability",
    "stability_threshold",
    "clinical_alpha",
)


def check_selection(selection: dict[str, Any] | None, where: str = "selection") -> dict[str, Any]:
    """``selection`` as a dict, or an :class:`InputError` naming unknown keys.

    Example:
        >>> check_selection({"alpha": 0.1, "clinical_alpha": 1.0})
        {'alpha': 0.1, 'clinical_alpha': 1.0}
        >>> check_selection({"lasso": 3})
        Traceback (most recent call last):
        usher2.io.errors.InputError: selection: expected keys among icc_threshold, ..., got unknown keys ['lasso']
    """
    selection = dict(selection or {})
    unknown = sorted(set(selection) - set(SELECTION_KEYS))
    if unknown:
        raise InputError(where, f"keys among {', '.join(SELECTION_KEYS)}", f"unknown keys {unknown}")
    return selection


_SOURCE_CACHE: dict[str, tuple[np.ndarray, Pipeline]] = {}


class LateFusionClassifier(ClassifierMixin, BaseEstimator):
    """Stacking of source scores (Radscore, Deep Score) and clinical variables in one logistic model.

    Args:
        sources: ``{name: columns}`` of the imaging sources; each gets an :func:`imaging_selector`
            whose LASSO linear predictor is the source's score.
        clinical: Clinical columns (selected with :func:`clinical_selector`).
        selector_params: Keyword arguments of :func:`imaging_selector`.
        cv: Folds for the out-of-fold scores the final model is fitted on.
        C: Inverse penalty of the final logistic regression.
        random_state: Seed of the folds.
        clinical_alpha: Univariate p threshold of the clinical block (1 keeps every column).

    Attributes:
        source_models_: ``{name: fitted imaging pipeline}`` (refitted on all training rows).
        clinical_model_: The fitted clinical selector, or None.
        final_: The fitted final logistic regression; its inputs are :attr:`final_features_`.
        feature_names_in_: The columns it was fitted on, in order (``n_features_in_`` of them).
    """

    def __init__(
        self,
        sources: dict[str, list[str]] | None = None,
        clinical: list[str] | None = None,
        selector_params: dict[str, Any] | None = None,
        cv: int = 5,
        C: float = 1.0,
        random_state: int = 0,
        clinical_alpha: float = 0.05,
    ) -> None:
        self.sources = sources
        self.clinical = clinical
        self.selector_params = selector_params
        self.cv = cv
        self.C = C
        self.random_state = random_state
        self.clinical_alpha = clinical_alpha

    def _scores(self, X: pd.DataFrame, fitted: bool = True) -> pd.DataFrame:
        out = {}
        for name, model in self.source_models_.items():
            lasso = model.named_steps["lasso"]
            out[f"{name}_score"] = lasso.radscore(model[:-1].transform(X[self.sources[name]]))
        return pd.DataFrame(out, index=X.index)

    def _design(self, X: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
        parts = [scores]
        if self.clinical_model_ is not None:
            parts.append(self.clinical_model_.transform(X[list(self.clinical or [])]))
        return pd.concat(parts, axis=1)

    def source_scores(self, X: pd.DataFrame) -> pd.DataFrame:
        """The fitted source models' scores (Radscore ``radiomics_score``, Deep Score ``deep_score``) of ``X``."""
        check_is_fitted(self, "final_")
        return self._scores(X)

    def final_inputs(self, X: pd.DataFrame, scores: pd.DataFrame | None = None) -> pd.DataFrame:
        """The final logistic regression's input table: the source scores (``scores``, else those of
        :meth:`source_scores`) and the selected clinical variables, in :attr:`final_features_` order."""
        check_is_fitted(self, "final_")
        return self._design(X, self._scores(X) if scores is None else scores)

    def out_of_fold_scores(self, X: pd.DataFrame, y: Any) -> pd.DataFrame:
        """Each source's out-of-fold scores on ``(X, y)`` (``cv`` folds, the source models' settings):
        what the final regression learns from, for a validation that refits only that regression."""
        params = dict(self.selector_params or {})
        oof = pd.DataFrame(index=X.index)
        for name, cols in (self.sources or {}).items():
            oof[f"{name}_score"], _ = self._source(X[cols], np.asarray(y), params)
        return oof

    def fit(self, X: pd.DataFrame, y: Any) -> LateFusionClassifier:
        if not isinstance(X, pd.DataFrame):
            raise ValueError("LateFusionClassifier needs X as a DataFrame with named columns")
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        # as every scikit-learn estimator fitted on a DataFrame: the columns it was given, in order
        self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        params = dict(self.selector_params or {})
        oof = pd.DataFrame(index=X.index)
        self.source_models_ = {}
        for name, cols in (self.sources or {}).items():
            oof[f"{name}_score"], self.source_models_[name] = self._source(X[cols], y, params)
        self.clinical_model_ = None
        if self.clinical:
            selector = clinical_selector(getattr(self, "clinical_alpha", 0.05))  # bundles saved before it existed
            self.clinical_model_ = selector.set_output(transform="pandas").fit(X[list(self.clinical)], y)
        design = self._design(X, oof)
        self.final_features_ = list(design.columns)
        self.final_ = LogisticRegression(C=self.C, max_iter=5000).fit(design.to_numpy(), y)
        return self

    def _source(self, X: pd.DataFrame, y: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, Pipeline]:
        """Out-of-fold scores and the refitted source model; memoised, because a grid search over the
        final model's C refits on the same training rows again and again."""
        import joblib
        from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

        key = joblib.hash((X.index.tolist(), X.columns.tolist(), X.to_numpy(), y, params, self.cv, self.random_state))
        if key in _SOURCE_CACHE:
            return _SOURCE_CACHE[key]
        proto = imaging_selector(**params).set_output(transform="pandas")
        col = np.zeros(len(X))
        cases = case_groups(X)  # perturbed copies of a case (a repeated index) stay in its fold
        if cases is None:
            splits = StratifiedKFold(int(self.cv), shuffle=True, random_state=self.random_state).split(X, y)
        else:
            splits = StratifiedGroupKFold(int(self.cv), shuffle=True, random_state=self.random_state).split(X, y, cases)
        for tr, te in splits:
            m = clone(proto).fit(X.iloc[tr], y[tr])
            col[te] = m.named_steps["lasso"].radscore(m[:-1].transform(X.iloc[te]))
        result = (col, clone(proto).fit(X, y))
        if len(_SOURCE_CACHE) >= 64:
            _SOURCE_CACHE.pop(next(iter(_SOURCE_CACHE)))
        _SOURCE_CACHE[key] = result
        return result

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "final_")
        return self.final_.decision_function(self._design(X, self._scores(X)).to_numpy())

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "final_")
        return self.final_.predict_proba(self._design(X, self._scores(X)).to_numpy())

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


def build_model(
    columns: dict[str, list[str]],
    classifier: str = "lr",
    *,
    fusion: str = "early",
    perturbations: pd.DataFrame | None = None,
    selector_params: dict[str, Any] | None = None,
    late_sources: str = "family",
    random_state: int = 0,
) -> tuple[Any, dict[str, list[Any]]]:
    """An unfitted model for a family's columns (:func:`family_columns`) and its search grid.

    Early fusion: a ColumnTransformer (imaging block, clinical block) and the classifier.
    Late fusion: :class:`LateFusionClassifier` (its grid: the final model's C), with one score per
    source: ``late_sources="family"`` gives a Radscore and a Deep Score, ``"backbone"`` a Radscore
    and one Deep Score per backbone (``deep_<backbone>_score``, as the MRI deep-learning study).
    ``selector_params`` takes the keys of :data:`SELECTION_KEYS`.
    """
    params = {"random_state": random_state, **check_selection(selector_params, "selector_params")}
    if perturbations is not None:  # a one-line repr: see PerturbationTable
        perturbations = PerturbationTable(perturbations)
    clinical_alpha = float(params.pop("clinical_alpha", 0.05))
    imaging = columns["radiomics"] + columns["deep"]
    if fusion == "late":
        if late_sources not in ("family", "backbone"):
            raise InputError("late sources", "'family' or 'backbone'", repr(late_sources))
        sources = {k: v for k, v in (("radiomics", columns["radiomics"]), ("deep", columns["deep"])) if v}
        if late_sources == "backbone" and columns["deep"]:
            del sources["deep"]
            for c in columns["deep"]:
                backbone = c.split("deep_", 1)[1].rsplit("_", 1)[0]
                sources.setdefault(f"deep_{backbone}", []).append(c)
        late = LateFusionClassifier(
            sources,
            columns["clinical"] or None,
            {**params, "perturbations": perturbations},
            random_state=random_state,
            clinical_alpha=clinical_alpha,
        )
        return late, {"C": [0.1, 1.0, 10.0]}
    if fusion != "early":
        raise InputError("fusion", "'early' or 'late'", repr(fusion))
    blocks = []
    if imaging:
        blocks.append(("imaging", imaging_selector(perturbations, **params), imaging))
    if columns["clinical"]:
        blocks.append(("clinical", clinical_selector(clinical_alpha), columns["clinical"]))
    clf, grid = make_classifier(classifier, random_state)
    model = Pipeline(
        [("select", ColumnTransformer(blocks, remainder="drop", verbose_feature_names_out=False)), ("classifier", clf)]
    )
    return model.set_output(transform="pandas"), {f"classifier__{k}": v for k, v in grid.items()}
