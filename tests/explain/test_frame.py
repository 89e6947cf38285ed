"""Heat maps of a frame (usher2.explain.frame): paste-back places a crop-sized map exactly in the ROI box,
overlay colours by hand-computed values, and explain_frame ties the crop, the target and the box together.

The shipped backbone's Grad-CAM and the PNG overlays are tested in ``test_cam_frame.py``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from usher2.explain.frame import FrameCAM, explain_frame, overlay, paste_back, save_cam_pngs
from usher2.explain.targets import LinearTarget, PooledFeatureTarget
from usher2.features.deep import DeepExtractor, RandomInitWarning, roi_crop
from usher2.io.errors import InputError


@pytest.fixture(scope="module")
def tiny() -> DeepExtractor:
    """A random-init resnet10t on CPU (no weights file): enough to check how the pieces fit."""
    import torch

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        return DeepExtractor("resnet10t=random", device="cpu")


def _mask(shape: tuple[int, int], ys: slice, xs: slice) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[ys, xs] = True
    return m


def test_a_heat_map_of_the_box_size_is_pasted_unchanged() -> None:
    # mask rows 10..19, cols 20..29: the box grows by max(4, 0.1 * 10) = 4 px each side -> (6, 24, 16, 34), 18 x 18
    mask = _mask((40, 60), slice(10, 20), slice(20, 30))
    heat = np.random.default_rng(0).random((18, 18), dtype=np.float32)
    full, box = paste_back(heat, mask)
    assert box == (6, 24, 16, 34) and full.dtype == np.float32 and full.shape == (40, 60)
    np.testing.assert_array_equal(full[6:24, 16:34], heat)
    full[6:24, 16:34] = 0
    assert not full.any()  # 0 outside the box


def test_a_box_past_the_frame_is_clipped_and_keeps_the_part_inside() -> None:
    mask = _mask((30, 30), slice(0, 10), slice(0, 10))  # the box is (-4, 14, -4, 14)
    heat = np.arange(18 * 18, dtype=np.float32).reshape(18, 18)
    full, box = paste_back(heat, mask)
    assert box == (0, 14, 0, 14)
    np.testing.assert_array_equal(full[:14, :14], heat[4:, 4:])
    assert float(full[14:].sum() + full[:, 14:].sum()) == 0.0


def test_paste_back_follows_the_margin_and_refuses_a_map_that_is_not_2d() -> None:
    mask = _mask((100, 100), slice(40, 60), slice(40, 60))
    _, box = paste_back(np.ones((8, 8), np.float32), mask, margin=0.5)  # 0.5 * 20 = 10 px each side
    assert box == (30, 70, 30, 70)
    with pytest.raises(InputError, match=r"^heat: expected a 2-D \(h, w\) map, got shape \(1, 8, 8\)"):
        paste_back(np.ones((1, 8, 8), np.float32), mask)


def test_overlay_colours_by_hand() -> None:
    grey = np.full((2, 3), 0.5, np.float32)
    hot = np.ones((2, 3), np.float32)
    # JET at 1 is RGB (128, 0, 0); half of it plus half of 0.5 grey: 255 * (0.25 + 0.5 * 128/255) = 127.75 -> 128
    out = overlay(grey, hot, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == [128, 64, 64]
    assert (overlay(grey, hot, alpha=0.0) == 128).all()  # alpha 0: the image only
    rgb = np.zeros((2, 3, 3), np.float32)
    rgb[..., 1] = 1.0  # a green image is accepted as it is
    assert overlay(rgb, hot, alpha=0.0)[1, 2].tolist() == [0, 255, 0]


@pytest.mark.parametrize(
    ("heat", "alpha", "message"),
    [
        (np.ones((3, 2), np.float32), 0.4, r"^heat: expected a map of the image's shape \(2, 3\), got shape \(3, 2\)"),
        (np.ones((2, 3), np.float32), 1.5, r"^alpha: expected a weight in \[0, 1\], got 1\.5"),
    ],
)
def test_overlay_refuses_bad_input_naming_it(heat: np.ndarray, alpha: float, message: str) -> None:
    with pytest.raises(InputError, match=message):
        overlay(np.zeros((2, 3), np.float32), heat, alpha=alpha)


def test_explain_frame_explains_the_extractors_crop_and_pastes_it_into_the_box(tiny: DeepExtractor) -> None:
    rng = np.random.default_rng(1)
    frame = rng.random((96, 128), dtype=np.float32)
    mask = _mask((96, 128), slice(30, 60), slice(40, 90))
    r = explain_frame(frame, mask, backbone=tiny, method="gradcam")
    assert isinstance(r, FrameCAM) and r.method == "gradcam"
    np.testing.assert_array_equal(r.roi, roi_crop(frame, mask, tiny.input_size, margin=tiny.margin))
    assert r.roi_heat.shape == tiny.input_size and 0.0 <= r.roi_heat.min() and r.roi_heat.max() <= 1.0
    full, box = paste_back(r.roi_heat, mask, margin=tiny.margin)
    assert r.box == box == (26, 64, 35, 95)  # grown by max(4, 0.1 * 30) = 4 rows, max(4, 0.1 * 50) = 5 cols
    np.testing.assert_array_equal(r.frame_heat, full)


def test_a_one_hot_linear_target_gives_the_map_of_that_pooled_feature(tiny: DeepExtractor) -> None:
    frame = np.random.default_rng(2).random((64, 64), dtype=np.float32)
    mask = _mask((64, 64), slice(20, 44), slice(16, 48))
    w = np.zeros(tiny.model.num_features, np.float32)
    w[7] = 1.0
    a = explain_frame(frame, mask, backbone=tiny, target=LinearTarget(w, bias=2.0))
    b = explain_frame(frame, mask, backbone=tiny, target=PooledFeatureTarget(7))
    np.testing.assert_allclose(a.roi_heat, b.roi_heat, atol=1e-6)


def test_explain_frame_refuses_a_colour_frame(tiny: DeepExtractor) -> None:
    with pytest.raises(InputError, match=r"^frame: expected a grey \(H, W\) frame, got shape \(8, 8, 3\)"):
        explain_frame(np.zeros((8, 8, 3), np.float32), np.ones((8, 8), bool), backbone=tiny)


def test_save_cam_pngs_writes_the_two_overlays_pixel_for_pixel(tmp_path: Path) -> None:
    frame = np.full((16, 20), 0.5, np.float32)
    r = FrameCAM(
        roi=np.zeros((8, 8), np.float32),
        roi_heat=np.ones((8, 8), np.float32),
        frame_heat=np.ones((16, 20), np.float32),
        box=(2, 10, 4, 12),
        method="gradcam",
    )
    paths = save_cam_pngs(frame, r, tmp_path / "new" / "folder", "bus_0001-l", alpha=1.0)
    assert [p.name for p in paths] == ["bus_0001-l_frame.png", "bus_0001-l_roi.png"]
    full = cv2.cvtColor(cv2.imread(str(paths[0])), cv2.COLOR_BGR2RGB)
    roi = cv2.cvtColor(cv2.imread(str(paths[1])), cv2.COLOR_BGR2RGB)
    assert (full[2:10, 4:12] == [128, 0, 0]).all()  # inside the box: JET at 1, alpha 1
    full[2:10, 4:12] = 128
    assert (full == 128).all()  # outside: the grey frame, round(127.5)
    assert roi.shape == (8, 8, 3) and (roi == [128, 0, 0]).all()
