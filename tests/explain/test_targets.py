"""CAM targets of head-less backbones (usher2.explain.targets): the score each one computes from a pooled
feature vector, its gradient, and the shapes it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from usher2.explain.targets import ClassifierOutputTarget, LinearTarget, PooledFeatureTarget
from usher2.io.errors import InputError

X = torch.tensor([3.0, -1.0, 0.5, 2.0])


def test_pooled_feature_target_is_one_feature_or_the_sum() -> None:
    assert float(PooledFeatureTarget()(X)) == 4.5  # 3 - 1 + 0.5 + 2
    assert float(PooledFeatureTarget(1)(X)) == -1.0
    assert float(PooledFeatureTarget(np.int64(3))(X)) == 2.0  # a NumPy index is an int
    assert repr(PooledFeatureTarget(2)) == "PooledFeatureTarget(index=2)"


def test_pooled_feature_target_refuses_a_batch() -> None:
    with pytest.raises(InputError, match=r"^target: expected one image's pooled features .* got shape \(2, 4\)"):
        PooledFeatureTarget()(X.repeat(2, 1))


def test_linear_target_is_w_dot_x_plus_b() -> None:
    w = np.array([1.0, 2.0, -4.0, 0.5])
    t = LinearTarget(w, bias=-1.5)
    # 3 - 2 - 2 + 1 - 1.5 = -1.5
    assert float(t(X)) == -1.5
    assert float(LinearTarget(torch.tensor([0.0, 0.0, 2.0, 0.0]))(X)) == 1.0  # torch weights too
    assert repr(t) == "LinearTarget(num_features=4, bias=-1.5)"


def test_the_gradient_of_a_linear_target_is_its_weights_and_of_the_sum_is_ones() -> None:
    w = np.array([1.0, 2.0, -4.0, 0.5], np.float32)
    x = X.clone().requires_grad_(True)
    LinearTarget(w, bias=10.0)(x).backward()
    np.testing.assert_array_equal(x.grad.numpy(), w)  # the bias does not change a gradient-based CAM
    x.grad = None
    PooledFeatureTarget()(x).backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones(4, np.float32))


def test_the_linear_score_follows_the_output_dtype() -> None:
    out = LinearTarget(np.ones(4))(X.double())
    assert out.dtype == torch.float64 and float(out) == 4.5


@pytest.mark.parametrize(("weights", "shape"), [(np.zeros(0), r"\(0,\)"), (np.ones((2, 2)), r"\(2, 2\)")])
def test_linear_target_refuses_weights_that_are_not_one_vector(weights: np.ndarray, shape: str) -> None:
    with pytest.raises(InputError, match=rf"^weights: expected a non-empty 1-D coefficient vector, got shape {shape}"):
        LinearTarget(weights)


def test_linear_target_refuses_features_of_another_length() -> None:
    with pytest.raises(InputError, match=r"^target: expected pooled features of shape \(3,\), got shape \(4,\)"):
        LinearTarget(np.ones(3))(X)


def test_classifier_output_target_is_re_exported_for_models_with_a_head() -> None:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget as Original

    assert ClassifierOutputTarget is Original
    assert float(ClassifierOutputTarget(2)(X)) == 0.5
