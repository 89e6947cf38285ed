"""Heat maps of frames: paste-back inverts roi_crop, the shipped backbone's CAM, overlays and PNGs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from usher2.explain import FrameCAM, explain_frame, overlay, paste_back, save_cam_pngs
from usher2.features.deep import DeepExtractor, roi_crop
from usher2.io.errors import InputError


@pytest.fixture(scope="module")
def shipped() -> DeepExtractor:
    return DeepExtractor("usresnet10t", device="cpu")


def _box(mask: np.ndarray, margin: float = 0.1, min_px: int = 4) -> tuple[int, int, int, int]:
    """The documented ROI box (mask box + max(margin * side, 4 px) each side), clipped to the frame."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    my, mx = max(min_px, round(margin * (y1 - y0))), max(min_px, round(margin * (x1 - x0)))
    h, w = mask.shape
    return max(0, y0 - my), min(h, y1 + my), max(0, x0 - mx), min(w, x1 + mx)


def _frame(h: int = 160, w: int = 200) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return (0.5 + 0.4 * np.sin(yy / 9.0) * np.cos(xx / 13.0)).astype(np.float32)


@pytest.mark.parametrize(
    ("box", "size"),
    [
        ((60, 80, 70, 100), (128, 128)),  # small lesion: the crop is upsampled
        ((10, 150, 20, 190), (64, 96)),  # large lesion: downsampled (area), aspect changed
        ((0, 30, 150, 200), (128, 128)),  # at the corner: the crop is padded past the frame
    ],
)
def test_paste_back_inverts_roi_crop_and_stays_inside_the_box(box, size):
    h, w = 160, 200
    mask = np.zeros((h, w), bool)
    mask[box[0] : box[1], box[2] : box[3]] = True
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    plane = 1.0 + yy + 2.0 * xx  # affine: any resampling of it is exact away from the padding
    full, got = paste_back(roi_crop(plane, mask, size), mask)
    expected = _box(mask)
    assert got == expected
    y0, y1, x0, x1 = expected
    outside = np.ones((h, w), bool)
    outside[y0:y1, x0:x1] = False
    assert float(np.abs(full[outside]).max()) == 0.0
    # Inside, the plane comes back: away from the box edge (bilinear sampling meets the border there) and from
    # padded sides (a crop pixel averages up to ~3 frame pixels here, some of them black padding).
    inner = (slice(y0 + 4, y1 - 4), slice(x0 + 4, x1 - 4))
    err = np.abs(full[inner] - plane[inner])
    # cv2.remap quantises sample positions to 1/32 of a crop pixel: with a slope of 2 per frame pixel and up to
    # 2.1 frame pixels per crop pixel that is at most 2 * 2.1 / 64 = 0.066; allow 0.1 (0.05 frame pixel).
    assert float(err.max()) < 0.1, float(err.max())


def test_shipped_backbone_gradcam_is_the_channel_sum_of_its_last_stage(shipped):
    frame = _frame()
    mask = np.zeros(frame.shape, bool)
    mask[50:110, 60:150] = True
    r = explain_frame(frame, mask, backbone=shipped, method="gradcam")
    assert r.roi.shape == r.roi_heat.shape == shipped.input_size == (128, 128)
    assert r.frame_heat.shape == frame.shape and r.box == _box(mask)
    # The default target sums the average-pooled features, so d target / d layer4 = 1/(h*w) for every
    # channel: Grad-CAM is ReLU(channel sum of layer4), min-max scaled, resized to the input and scaled again.
    x = torch.from_numpy(shipped.crops([frame], [mask]))
    with torch.no_grad():
        act = shipped.model.forward_features(x)[0].sum(0).numpy()
    act = np.maximum(act, 0)
    act = (act - act.min()) / (act.max() - act.min() + 1e-7)
    expected = cv2.resize(act.astype(np.float32), (128, 128))
    expected = (expected - expected.min()) / (expected.max() - expected.min() + 1e-7)
    np.testing.assert_allclose(r.roi_heat, expected, atol=1e-4)
    y0, y1, x0, x1 = r.box
    assert float(r.frame_heat.sum()) == pytest.approx(float(r.frame_heat[y0:y1, x0:x1].sum()))
    assert float(r.frame_heat.max()) == pytest.approx(1.0, abs=0.02)  # the crop's peak survives the resampling


def test_explain_frame_rejects_bad_input(shipped):
    frame = _frame(64, 64)
    with pytest.raises(InputError, match="a mask with at least one lesion pixel"):
        explain_frame(frame, np.zeros((64, 64), bool), backbone=shipped)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 20:40] = True
    with pytest.raises(InputError, match="one of gradcam"):
        explain_frame(frame, mask, backbone=shipped, method="saliency")


def test_overlay_blends_only_where_asked():
    img = np.full((6, 8), 0.5, np.float32)
    heat = np.zeros((6, 8), np.float32)
    where = np.zeros((6, 8), bool)
    where[2:4, 2:6] = True
    out = overlay(img, heat, alpha=0.5, where=where)
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    assert (out[~where] == 128).all()  # 0.5 grey untouched: round(127.5)
    # JET at 0 is (0, 0, 128) in RGB: half of it plus half of the grey.
    assert out[3, 3].tolist() == [64, 64, 128]
    with pytest.raises(InputError, match="image's shape"):
        overlay(img, np.zeros((5, 8), np.float32))


def test_save_cam_pngs_writes_the_frame_and_roi_overlays(tmp_path, shipped):
    frame = _frame()
    mask = np.zeros(frame.shape, bool)
    mask[40:90, 30:100] = True
    r = explain_frame(frame, mask, backbone=shipped, method="layercam")
    assert isinstance(r, FrameCAM) and r.method == "layercam"
    paths = save_cam_pngs(frame, r, tmp_path / "cams", "case_7")
    assert [p.name for p in paths] == ["case_7_frame.png", "case_7_roi.png"]
    full = cv2.cvtColor(cv2.imread(str(paths[0])), cv2.COLOR_BGR2RGB)
    roi = cv2.imread(str(paths[1]))
    assert full.shape == (*frame.shape, 3) and roi.shape == (128, 128, 3)
    y0, y1, x0, x1 = r.box
    outside = np.ones(frame.shape, bool)
    outside[y0:y1, x0:x1] = False
    grey = np.uint8(frame * 255 + 0.5)
    assert (full[outside] == grey[outside][:, None]).all()  # outside the box: the frame itself
    assert (full[y0:y1, x0:x1] != grey[y0:y1, x0:x1, None]).any()  # inside: coloured
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == ["case_7_frame.png", "case_7_roi.png"]
