"""segment_paths (usher2.segment.apply), called directly: masks, the CSV and the record in each mask PNG."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from usher2.segment.apply import CSV_COLUMNS, CSV_FILE, read_mask_record, segment_paths
from usher2.segment.networks import SegmenterConfig, build_network
from usher2.segment.unet import UNetSegmenter, save_network

TINY = SegmenterConfig(encoder="resnet18", decoder_channels=(16, 16, 8, 8, 8), input_size=64)


def _constant(tmp_path: Path, bias: float) -> UNetSegmenter:
    """A segmenter whose logit is ``bias`` everywhere: +20 finds the whole frame, -20 nothing."""
    torch.manual_seed(0)
    net = build_network(TINY).eval()
    torch.nn.init.zeros_(net.segmentation_head[0].weight)
    torch.nn.init.constant_(net.segmentation_head[0].bias, bias)
    return UNetSegmenter(save_network(net, TINY, tmp_path / f"c{bias:+.0f}.safetensors"), device="cpu")


def test_whole_frame_and_no_lesion_give_the_masks_and_rows_worked_out_by_hand(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((24, 32), 90, np.uint8)).save(tmp_path / "in" / "f.png")
    full = segment_paths(tmp_path / "in", tmp_path / "full", model=_constant(tmp_path, 20.0))
    mask = np.asarray(Image.open(tmp_path / "full" / "f.png"))
    assert full.segmented == ["f.png"] and mask.shape == (24, 32) and (mask == 255).all()
    record = read_mask_record(tmp_path / "full" / "f.png")
    assert record["area_px"] == 24 * 32 and int(record["no_lesion"]) == 0
    with open(tmp_path / "full" / CSV_FILE, newline="") as f:
        [row] = list(csv.DictReader(f))
    assert list(row) == list(CSV_COLUMNS) and row["no_lesion"] == "0"
    empty = segment_paths(tmp_path / "in", tmp_path / "none", model=_constant(tmp_path, -20.0))
    assert empty.n_no_lesion == 1 and not np.asarray(Image.open(tmp_path / "none" / "f.png")).any()
