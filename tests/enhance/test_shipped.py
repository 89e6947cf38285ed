"""The shipped default enhancer: loads, carries its card, and invents no structure."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from usher2.enhance import create_enhancer
from usher2.enhance.training import simulated_pairs
from usher2.evaluate.image_quality import gcnr, region_ring

WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "enhancer_pix2pix.safetensors"


def test_shipped_weights_and_card() -> None:
    e = create_enhancer("pix2pix", device="cpu")
    assert e.weights == WEIGHTS
    assert e.metadata["model"] == "pix2pix" and "enhancer_pix2pix_cpu.yaml" in e.metadata["command"]
    card = WEIGHTS.with_suffix(".md").read_text()
    for needle in ("Training data", "Command", "Steps", "wall time", "Validation", "SHA-256"):
        assert needle in card
    assert WEIGHTS.stat().st_size < 5_000_000  # fp16, compact enough for CPU


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        pairs = simulated_pairs(Path(tmp), 8, 3000)  # seed 3000: never used in training
    return pairs["x"][:, 0].numpy(), pairs["y"][:, 0].numpy().astype(np.float64), pairs["mask"][:, 0].numpy() > 0.5


def test_no_hallucinated_structure_outside_the_lesion(held_out) -> None:
    """A hallucination is error the generator creates where its input was faithful.

    Outside the lesion (dilated 8 px), smooth |output - clean| with a Gaussian (σ = 2 px); a blob
    is a connected region of at least 25 px (5 x 5) where that error exceeds 0.25 (a quarter of
    the grey range) while the input's own smoothed error there is at most 0.25. There must be none.
    """
    x, clean, masks = held_out
    y = create_enhancer("pix2pix", device="cpu")(x[:, None])[:, 0]
    for i in range(len(x)):
        outside = ~ndimage.binary_dilation(masks[i], iterations=8)
        err_out = ndimage.gaussian_filter(np.abs(y[i] - clean[i]), 2.0)
        err_in = ndimage.gaussian_filter(np.abs(x[i].astype(np.float64) - clean[i]), 2.0)
        labels, n = ndimage.label((err_out > 0.25) & (err_in <= 0.25) & outside)
        sizes = ndimage.sum(np.ones_like(err_out), labels, range(1, n + 1)) if n else np.array([])
        assert int(np.sum(sizes >= 25)) == 0, f"frame {i}: blobs of sizes {sorted(sizes)[-3:]}"
        # ... and it brings the frame closer to the clean target outside the lesion overall.
        assert err_out[outside].mean() < err_in[outside].mean()


def test_lesion_is_not_erased(held_out) -> None:
    x, _, masks = held_out
    y = create_enhancer("pix2pix", device="cpu")(x[:, None])[:, 0]
    before = np.mean([gcnr(x[i], masks[i], region_ring(masks[i])) for i in range(len(x))])
    after = np.mean([gcnr(y[i], masks[i], region_ring(masks[i])) for i in range(len(x))])
    assert after > before  # measured on seed 3000: 0.68 -> 0.87
