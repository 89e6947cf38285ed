"""The linear form of a fitted model (usher2.fusion.introspect): coefficients in original units."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from usher2.fusion.introspect import Affine, linear_form


def test_affine_composes_and_inverts() -> None:
    a = Affine(0, scale=2.0, shift=1.0).then(3.0, -1.0)  # z = 3 (2 x + 1) - 1 = 6 x + 2
    assert (a.scale, a.shift) == (6.0, 2.0) and a.to_original(14.0) == 2.0


def test_a_scaled_logistic_regression_is_linear_in_the_original_units() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(10, 3, 60), "b": rng.normal(-2, 0.5, 60)})
    y = (X["a"] / 3 + 2 * X["b"] + rng.normal(0, 1, 60) > -1).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    form = linear_form(model, ["a", "b"])
    assert form.names == ["a", "b"]
    lp = form.intercept + X.to_numpy() @ form.coef
    np.testing.assert_allclose(lp, model.decision_function(X), rtol=1e-10, atol=1e-10)
    assert form.cols[0].center == pytest.approx(X["a"].mean())
