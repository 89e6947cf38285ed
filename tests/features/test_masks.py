"""Masks from stored probability maps (usher2.features.masks)."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from usher2.features.masks import predicted_masks
from usher2.io.errors import InputError


def test_threshold_dice_and_no_lesion(tmp_path):
    maps, out = tmp_path / "maps", tmp_path / "out"
    maps.mkdir()
    prob = np.zeros((32, 32), np.uint8)
    prob[8:16, 8:24] = 200  # p = 0.78 > 0.5: an 8 x 16 mask
    cv2.imwrite(str(maps / "a.png"), prob)
    cv2.imwrite(str(maps / "b.png"), np.full((32, 32), 60, np.uint8))  # p = 0.24 everywhere: no lesion
    truth = np.zeros((32, 32), np.uint8)
    truth[8:16, 8:16] = 255  # half of the predicted mask
    cv2.imwrite(str(tmp_path / "a_mask.png"), truth)
    manifest = pd.DataFrame({"case_id": ["a", "b", "c"], "mask_path": [str(tmp_path / "a_mask.png"), None, None]})
    res = predicted_masks(manifest, maps, out).set_index("case_id")
    assert list(res.index) == ["a", "b"]  # c has no map
    assert res.at["a", "area_px"] == 128 and res.at["a", "dice"] == pytest.approx(2 * 64 / (128 + 64))
    written = cv2.imread(res.at["a", "mask"], cv2.IMREAD_GRAYSCALE)
    assert int((written > 127).sum()) == 128
    assert bool(res.at["b", "no_lesion"]) and res.at["b", "mask"] == "" and np.isnan(res.at["b", "dice"])


def test_no_map_for_any_case_is_an_error(tmp_path):
    (tmp_path / "maps").mkdir()
    with pytest.raises(InputError, match=r"probability maps named <case_id>\.png"):
        predicted_masks(pd.DataFrame({"case_id": ["a"]}), tmp_path / "maps", tmp_path / "out")
