"""``usher2 segment``: masks and CSV, no-lesion results, RGB/16-bit/huge frames, multi-frame files, resume, errors."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from usher2.cli import app
from usher2.evaluate.segmentation import dice
from usher2.segment import create_segmenter
from usher2.segment.apply import CSV_COLUMNS, read_mask_record, segment_paths
from usher2.segment.networks import SegmenterConfig, build_network
from usher2.segment.unet import save_network

sys.path.insert(0, str(Path(__file__).parent / "io"))  # tests/io is no package ("io" is taken)
from io_helpers import write_dicom

runner = CliRunner()
TINY = SegmenterConfig(encoder="resnet18", decoder_channels=(16, 16, 8, 8, 8), input_size=64)


def _constant_network(tmp_path: Path, bias: float) -> Path:
    """A network whose logit is ``bias`` everywhere: +20 finds the whole frame, -20 finds nothing."""
    torch.manual_seed(0)
    net = build_network(TINY).eval()
    head = net.segmentation_head[0]
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.constant_(head.bias, bias)
    return save_network(net, TINY, tmp_path / f"const{bias:+.0f}.safetensors")


def _grey8(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _csv(out: Path) -> list[dict[str, str]]:
    with open(out / "segmentation.csv", newline="") as f:
        return list(csv.DictReader(f))


def _segment(*args: str) -> object:
    return runner.invoke(app, ["segment", *args])


@pytest.fixture(scope="module")
def sim_frame(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """One simulated 256 x 256 frame (seed 7000, used by no training run) and its true mask."""
    from usher2.simulate import SimulationConfig, simulate_cohort

    d = tmp_path_factory.mktemp("sim")
    df = simulate_cohort(1, 7000, d, config=SimulationConfig(image_size=(256, 256)), workers=1)
    img = cv2.imread(str(d / df["image"].iloc[0]), cv2.IMREAD_GRAYSCALE)
    return img, cv2.imread(str(d / df["mask"].iloc[0]), cv2.IMREAD_GRAYSCALE) > 127


def test_directory_gives_masks_a_csv_and_lists_the_bad_file(tmp_path: Path) -> None:
    _png(tmp_path / "in" / "a.png", _grey8((24, 32), 0))
    (tmp_path / "in" / "sub").mkdir()
    Image.fromarray(_grey8((20, 16), 1).astype(np.uint16) * 257).save(tmp_path / "in" / "sub" / "c.tif")
    (tmp_path / "in" / "sub" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    out = tmp_path / "out"
    result = _segment(str(tmp_path / "in"), "--out", str(out), "--weights", str(_constant_network(tmp_path, 20.0)))
    assert result.exit_code == 1, result.output
    assert "sub/bad.png" in (out / "failures.csv").read_text()
    for name, shape in [("a.png", (24, 32)), ("sub/c.png", (20, 16))]:
        mask = np.asarray(Image.open(out / name))
        assert mask.shape == shape and mask.dtype == np.uint8 and (mask == 255).all()
    rows = _csv(out)
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [(r["case"], r["mask"], r["area_px"], r["no_lesion"]) for r in rows] == [
        ("a.png", "a.png", str(24 * 32), "0"),
        ("sub/c.tif", "sub/c.png", str(20 * 16), "0"),
    ]
    assert float(rows[0]["area_fraction"]) == 1.0 and float(rows[0]["uncertainty"]) < 1e-5
    assert "2 inputs segmented (2 masks)" in result.output and "1 of 3 inputs failed" in result.output


def test_frames_without_a_lesion_are_reported_not_failed(tmp_path: Path) -> None:
    _png(tmp_path / "in" / "normal1.png", _grey8((40, 50), 2))
    _png(tmp_path / "in" / "normal2.png", np.zeros((30, 30), np.uint8))
    out = tmp_path / "out"
    result = _segment(str(tmp_path / "in"), "--out", str(out), "--weights", str(_constant_network(tmp_path, -20.0)))
    assert result.exit_code == 0, result.output
    assert "no lesion found in 2 of 2 frames" in result.output
    assert [(r["area_px"], r["no_lesion"], float(r["uncertainty"])) for r in _csv(out)] == [("0", "1", 0.0)] * 2
    assert not np.asarray(Image.open(out / "normal1.png")).any()


def test_rgb_and_16_bit_frames_give_the_mask_of_the_8_bit_grey_frame(
    tmp_path: Path, sim_frame: tuple[np.ndarray, np.ndarray]
) -> None:
    img, truth = sim_frame
    _png(tmp_path / "in" / "grey.png", img)
    _png(tmp_path / "in" / "rgb.png", np.repeat(img[..., None], 3, axis=2))
    Image.fromarray(img.astype(np.uint16) * 257).save(tmp_path / "in" / "deep.tif")  # exact 16-bit copy
    out = tmp_path / "out"
    result = _segment(str(tmp_path / "in"), "--out", str(out), "--device", "cpu")
    assert result.exit_code == 0, result.output
    grey = np.asarray(Image.open(out / "grey.png"))
    for name in ("rgb.png", "deep.png"):
        np.testing.assert_array_equal(np.asarray(Image.open(out / name)), grey)
    assert dice(grey > 0, truth) > 0.8  # the shipped segmenter finds the simulated lesion


@pytest.mark.slow
def test_a_huge_frame_gives_the_mask_of_the_small_one(sim_frame: tuple[np.ndarray, np.ndarray]) -> None:
    img, _ = sim_frame
    seg = create_segmenter("unet", device="cpu")
    small = seg.predict_mask(img[None, None].astype(np.float32) / 255)[0, 0]
    huge = cv2.resize(img, (8000, 6000), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    [result] = seg.segment(huge[None, None])
    assert result.mask.shape == (6000, 8000) and result.probability.dtype == np.float32
    back = cv2.resize(result.mask.astype(np.uint8), (256, 256), interpolation=cv2.INTER_NEAREST) > 0
    assert dice(back, small) > 0.9


def test_multi_frame_dicom_gives_one_row_per_frame(tmp_path: Path) -> None:
    frames = np.stack([_grey8((16, 20), s) for s in (10, 11, 12)])
    (tmp_path / "in").mkdir()
    write_dicom(tmp_path / "in" / "cine.dcm", frames.tobytes(), rows=16, cols=20, frames=3)
    out = tmp_path / "out"
    result = _segment(str(tmp_path / "in"), "--out", str(out), "--weights", str(_constant_network(tmp_path, 20.0)))
    assert result.exit_code == 0, result.output
    assert [(r["case"], r["frame"], r["mask"]) for r in _csv(out)] == [
        ("cine.dcm", str(i), f"cine/frame_{i:04d}.png") for i in range(3)
    ]


def test_a_killed_run_resumes_to_the_same_masks_and_csv(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "in" / f"f{i}.png", _grey8((32, 48), 20 + i))
    seg = create_segmenter("unet", device="cpu")
    whole = segment_paths(tmp_path / "in", tmp_path / "whole", model=seg, batch_size=1)

    def kill(done: int, total: int) -> None:
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        segment_paths(tmp_path / "in", tmp_path / "part", model=seg, batch_size=1, progress=kill)
    assert sorted(p.name for p in (tmp_path / "part").glob("*.png")) == ["f0.png"]
    resumed = segment_paths(tmp_path / "in", tmp_path / "part", model=seg, batch_size=1)
    assert resumed.skipped == ["f0.png"] and resumed.segmented == ["f1.png", "f2.png"]
    assert resumed.rows == whole.rows  # the same frames, batch size and process: bit-identical
    assert (tmp_path / "part" / "segmentation.csv").read_text() == (tmp_path / "whole" / "segmentation.csv").read_text()
    record = read_mask_record(tmp_path / "part" / "f0.png")
    assert record["area_px"] == int((np.asarray(Image.open(tmp_path / "part" / "f0.png")) == 255).sum())
    other = _constant_network(tmp_path, 20.0)
    result = _segment(str(tmp_path / "in"), "--out", str(tmp_path / "part"), "--weights", str(other))
    assert result.exit_code == 2 and "--overwrite" in result.output
    saved = json.loads((tmp_path / "part" / "segment.json").read_text())["segmenter"]
    assert saved["weights_sha256"] == seg.settings()["weights_sha256"]


def test_bad_model_and_weights_exit_2_naming_them(tmp_path: Path) -> None:
    _png(tmp_path / "x.png", _grey8((8, 8), 0))
    result = _segment(str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), "--model", "vnet")
    assert result.exit_code == 2 and "unknown segmenter 'vnet'; available: unet, unetplusplus" in result.output
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    result = _segment(str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), "--weights", str(bad))
    assert result.exit_code == 2 and "bad.safetensors" in result.output and "corrupt" in result.output


def test_help_lists_the_segmenters_and_the_default() -> None:
    result = _segment("--help")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())  # unwrap rich's help panels
    assert "Segmenter, one of: unet, unetplusplus. Default: unet." in text
