"""Checks of a fitted model (usher2.fusion.validate) on small scikit-learn models: the walk names every
estimator by its path, and a damaged field is refused naming the object and the field.

Bundles with every model usher2 fits, and crafted boosters, are tested in ``test_bundle_validation.py``.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from usher2.fusion.validate import check_boosters, check_tree_links, estimators, validate_model
from usher2.io.errors import InputError

COLUMNS = ["radiomics_a", "radiomics_b", "clinical_age"]


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 20)
    X = pd.DataFrame(rng.normal(size=(40, 3)) + y[:, None], columns=COLUMNS)
    return X, y


def _pipeline(data) -> Pipeline:
    return make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()).fit(*data)


def test_estimators_walks_a_pipeline_in_order_with_paths() -> None:
    pipe = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression())
    assert [(p, type(e).__name__) for p, e in estimators(pipe)] == [
        ("model", "Pipeline"),
        ("model.steps['simpleimputer']", "SimpleImputer"),
        ("model.steps['standardscaler']", "StandardScaler"),
        ("model.steps['logisticregression']", "LogisticRegression"),
    ]
    assert [p for p, _ in estimators(pipe, root="m")][1] == "m.steps['simpleimputer']"


def test_estimators_lists_a_shared_estimator_once_and_skips_drop_and_passthrough(data) -> None:
    scaler = StandardScaler()
    twice = Pipeline([("a", scaler), ("b", scaler)])
    assert [p for p, _ in estimators(twice)] == ["model", "model.steps['a']"]  # the first path it is reached by
    ct = ColumnTransformer([("img", scaler, COLUMNS[:2]), ("age", "passthrough", COLUMNS[2:])], remainder="drop")
    pipe = Pipeline([("cols", ct), ("skip", "passthrough"), ("lr", LogisticRegression())])
    paths = [p for p, _ in estimators(pipe)]
    assert paths == ["model", "model.steps['cols']", "model.steps['lr']", "model.steps['cols'].transformers['img']"]
    pipe.fit(*data)  # fitted: the fitted blocks (clones) come before the templates, in the order they are reached
    paths = [p for p, _ in estimators(pipe)]
    assert "model.steps['cols'].transformers_['img']" in paths
    assert paths.index("model.steps['cols'].transformers_['img']") < paths.index(
        "model.steps['cols'].transformers['img']"
    )
    assert len(paths) == len(set(paths)) == len({id(e) for _, e in estimators(pipe)})


def test_a_fitted_pipeline_and_a_calibrated_one_pass(data) -> None:
    validate_model(_pipeline(data), COLUMNS)
    cal = CalibratedClassifierCV(_pipeline(data), cv=2).fit(*data)
    validate_model(cal, COLUMNS)
    kinds = {type(e).__name__ for _, e in estimators(cal)}
    assert {"CalibratedClassifierCV", "_CalibratedClassifier", "_SigmoidCalibration", "Pipeline"} <= kinds


def test_a_coefficient_array_of_the_wrong_length_is_refused_naming_the_field(data) -> None:
    pipe = _pipeline(data)
    pipe[-1].coef_ = np.ones((1, 2))  # the model reads 3 columns
    with pytest.raises(InputError) as err:
        validate_model(pipe, COLUMNS, where="m.skops")
    e = err.value
    assert e.where == "m.skops: model.steps['logisticregression'] (LogisticRegression): coef_"
    assert (e.expected, e.got) == ("shape (1, 3)", "(1, 2)")
    assert "refit it or restore it" in str(e)


@pytest.mark.parametrize(
    ("damage", "where", "expected"),
    [
        (lambda p: setattr(p[1], "scale_", np.array([1.0, 0.0, 1.0])), "standardscaler'] (StandardScaler): scale_[1]",
         "a positive scale"),
        (lambda p: setattr(p[0], "statistics_", np.array([0.0, np.inf, 0.0])),
         "simpleimputer'] (SimpleImputer): statistics_[1]", "a finite fill value"),
        (lambda p: setattr(p[-1], "intercept_", np.array([np.nan])),
         "logisticregression'] (LogisticRegression): intercept_[0]", "a finite number"),
        (lambda p: setattr(p[-1], "classes_", np.array([1])), "(LogisticRegression): classes_",
         "an array of at least 2 class labels"),
        (lambda p: p[1].__dict__.pop("mean_"), "(StandardScaler): mean_", "the fitted attribute mean_"),
    ],
    ids=["zero-scale", "infinite-fill", "nan-intercept", "one-class", "missing-mean"],
)  # fmt: skip
def test_damaged_fields_are_named(data, damage, where: str, expected: str) -> None:
    pipe = _pipeline(data)
    damage(pipe)
    with pytest.raises(InputError) as err:
        validate_model(pipe, COLUMNS)
    assert err.value.where.endswith(where) and err.value.expected == expected


def test_a_step_that_reads_another_width_than_the_previous_step_writes_is_refused(data) -> None:
    X, y = data
    pipe = _pipeline(data)
    pipe.steps[-1] = ("logisticregression", LogisticRegression().fit(X.iloc[:, :2].to_numpy(), y))
    with pytest.raises(InputError) as err:
        validate_model(pipe, COLUMNS)
    assert err.value.where == "model: model.steps['logisticregression'].n_features_in_"
    assert (err.value.expected, err.value.got) == ("3 (its input width)", "2")


def test_the_model_must_read_the_bundles_columns_in_order(data) -> None:
    pipe = _pipeline(data)
    with pytest.raises(InputError, match=r"model\.n_features_in_: expected 2 \(the bundle's columns"):
        validate_model(pipe, COLUMNS[:2])
    swapped = [COLUMNS[1], COLUMNS[0], COLUMNS[2]]
    with pytest.raises(InputError, match=r"feature_names_in_: .* got column 0: 'radiomics_a' vs 'radiomics_b'"):
        validate_model(pipe, swapped)


def test_unfitted_models_and_unknown_types_are_refused(data) -> None:
    with pytest.raises(InputError, match=r"^model: model: expected a fitted model, got an unfitted Pipeline"):
        validate_model(make_pipeline(StandardScaler(), LogisticRegression()), COLUMNS)
    knn = KNeighborsClassifier(n_neighbors=3).fit(*data)
    with pytest.raises(InputError) as err:
        validate_model(knn, COLUMNS)
    assert err.value.expected == "an estimator type usher2 fits and knows how to check"
    assert err.value.got == "sklearn.neighbors._classification.KNeighborsClassifier"


def test_check_tree_links_accepts_a_tree_and_refuses_out_of_range_and_shared_children() -> None:
    # 0 -> (1, 2), 1 -> (3, 4); 2, 3, 4 leaves
    split = check_tree_links("t", [1, 3, -1, -1, -1], [2, 4, -1, -1, -1], 5, ("left", "right"))
    assert split.tolist() == [True, True, False, False, False]
    with pytest.raises(InputError, match=r"^t\.left\[1\]: expected -1 or a node index in \[1, 5\), got 7"):
        check_tree_links("t", [1, 7, -1, -1, -1], [2, 4, -1, -1, -1], 5, ("left", "right"))
    with pytest.raises(InputError, match=r"^t\.right\[2\]: expected -1 for a leaf"):
        check_tree_links("t", [1, 3, -1, -1, -1], [2, 4, 3, -1, -1], 5, ("left", "right"))
    with pytest.raises(InputError, match=r"^t\.left\[1\]: expected -1 or a node index in \[1, 5\), got 0"):
        check_tree_links("t", [1, 0, -1, -1, -1], [2, 4, -1, -1, -1], 5, ("left", "right"))  # back to the root
    with pytest.raises(InputError, match=r"^t\.right\[1\]: expected a node that no other node points to, got 2"):
        check_tree_links("t", [1, 3, -1, -1, -1], [2, 2, -1, -1, -1], 5, ("left", "right"))


def test_check_boosters_passes_a_model_without_boosters_and_refuses_a_file_that_is_not_skops(data) -> None:
    buf = io.BytesIO(sio.dumps(_pipeline(data)))
    check_boosters(buf, where="m.skops")  # nothing to check: no error
    with pytest.raises(InputError, match=r"^m\.skops: expected a skops model file, got an unreadable file"):
        check_boosters(io.BytesIO(b"not a zip"), where="m.skops")
