"""Faithfulness of a heat map (usher2.explain.faithfulness) on constructed maps of linear models, where the
confidence change is worked out by hand: target(x * map) - target(x)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from usher2.explain.faithfulness import FAITHFULNESS_METRICS, faithfulness
from usher2.explain.targets import ClassifierOutputTarget
from usher2.io.errors import InputError


def _linear(size: int = 4) -> nn.Module:
    """Logit 0 = sum of the pixels, logit 1 = minus that: on a positive image the arg-max is class 0."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(size * size, 2, bias=False))
    with torch.no_grad():
        net[1].weight[0] = 1.0
        net[1].weight[1] = -1.0
    return net


class _Segmenter(nn.Module):
    """An smp-shaped network whose lesion logits are its input: the encoder, decoder and head are identities."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.decoder, self.segmentation_head = nn.Identity(), nn.Identity(), nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.decoder(self.encoder(x)))


def _quadrant(size: int = 4, value: float = 1.0) -> np.ndarray:
    m = np.zeros((size, size), np.float32)
    m[: size // 2, : size // 2] = value
    return m


def test_confidence_change_of_a_quadrant_map_is_the_logit_outside_it() -> None:
    x = torch.ones(2, 1, 4, 4)
    cams = np.stack([_quadrant(), np.full((4, 4), 0.25, np.float32)])
    # default target: class 0 (sum = 16). Image 0 keeps 4 pixels: 4 - 16; image 1 keeps a quarter of each: 4 - 16.
    got = faithfulness(_linear(), x, cams, metric="confidence_drop")
    assert got.dtype == np.float32 and got.shape == (2,)
    np.testing.assert_allclose(got, [-12.0, -12.0], atol=1e-6)
    # explicit targets: class 1 (minus the sum) rises by as much
    got = faithfulness(_linear(), x, cams, [ClassifierOutputTarget(1)] * 2, metric="confidence_drop")
    np.testing.assert_allclose(got, [12.0, 12.0], atol=1e-6)


def test_a_map_of_ones_keeps_everything_and_one_of_zeros_loses_the_whole_score() -> None:
    x = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 4, 4)  # sum 136
    ones, zeros = np.ones((1, 4, 4), np.float32), np.zeros((1, 4, 4), np.float32)
    assert faithfulness(_linear(), x, ones, metric="confidence_drop").tolist() == [0.0]
    assert faithfulness(_linear(), x, zeros, metric="confidence_drop").tolist() == [-136.0]


def test_a_segmentation_network_is_scored_on_its_predicted_lesion_by_default() -> None:
    x = torch.full((1, 1, 4, 4), -1.0)
    x[0, 0, :2, :2] = 2.0  # predicted lesion: the top-left 2 x 2 (logits > 0), lesion score 4 * 2 = 8
    half = _quadrant(value=0.5)[None]  # halves the lesion logits, zeroes the rest (outside the predicted mask)
    np.testing.assert_allclose(faithfulness(_Segmenter(), x, half, metric="confidence_drop"), [-4.0], atol=1e-6)
    np.testing.assert_allclose(faithfulness(_Segmenter(), x, _quadrant()[None], metric="confidence_drop"), [0.0])


def test_road_is_reproducible_under_its_seed_and_favours_the_pixels_the_model_reads() -> None:
    size = 8
    net = nn.Sequential(nn.Flatten(), nn.Linear(size * size, 1, bias=False))
    with torch.no_grad():  # the model reads the top-left quadrant only
        net[1].weight.copy_(torch.from_numpy(_quadrant(size)).reshape(1, -1))
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0)) + 1.0
    targets = [ClassifierOutputTarget(0)]
    right = _quadrant(size)[None] * 0.9 + 0.05
    kw = {"metric": "road", "percentiles": (25, 50, 75)}
    a = faithfulness(net, x, right, targets, seed=3, **kw)
    assert faithfulness(net, x, right, targets, seed=3, **kw).tolist() == a.tolist()
    wrong = faithfulness(net, x, 1.0 - right, targets, seed=3, **kw)
    assert float(a[0]) > 0 > float(wrong[0])


def test_the_model_is_evaluated_in_eval_mode_and_its_mode_restored() -> None:
    seen: list[bool] = []
    net = _linear()
    net.register_forward_hook(lambda m, i, o: seen.append(m.training))
    net.train()
    faithfulness(net, torch.ones(1, 1, 4, 4), np.ones((1, 4, 4), np.float32), metric="confidence_drop")
    assert seen and not any(seen)
    assert net.training


def test_bad_arguments_are_named() -> None:
    net, x, cams = _linear(), torch.ones(2, 1, 4, 4), np.ones((2, 4, 4), np.float32)
    assert FAITHFULNESS_METRICS == ("road", "confidence_drop")
    with pytest.raises(InputError, match=r"^metric: expected one of road, confidence_drop, got 'drop'"):
        faithfulness(net, x, cams, metric="drop")
    with pytest.raises(InputError, match=r"^inputs: expected a \(B, C, H, W\) torch tensor, got ndarray"):
        faithfulness(net, np.ones((2, 1, 4, 4)), cams)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"^cams: expected maps of shape \(2, 4, 4\), got \(1, 4, 4\)"):
        faithfulness(net, x, cams[:1])
    with pytest.raises(InputError, match=r"^targets: expected one target per image \(2\), got 1 targets"):
        faithfulness(net, x, cams, [ClassifierOutputTarget(0)])
