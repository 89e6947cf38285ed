"""Deep features: ROI crop, backbone widths (VGG's 4096 pre-logits), local weights, explicit random init."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import timm
import torch

from usher2.features.deep import (
    DEFAULT_BACKBONE,
    DeepExtractor,
    RandomInitWarning,
    parse_backbone,
    roi_crop,
)
from usher2.io.errors import InputError
from usher2.weights import default_weights_dir


def _random(spec: str, **kwargs) -> DeepExtractor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        return DeepExtractor(spec, device="cpu", **kwargs)


def _frame(seed: int = 0, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.random((size, size), dtype=np.float32)
    m = np.zeros((size, size), bool)
    m[30:60, 20:70] = True
    return img, m


def test_roi_crop_is_box_plus_margin_and_pads_outside_the_frame():
    img = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)
    m = np.zeros((40, 50), bool)
    m[10:20, 5:25] = True  # 10 x 20 box
    crop = roi_crop(img, m, (14, 28), margin=0.1, min_margin_px=2)  # margins: 2 rows, 2 cols -> 14 x 24 box
    assert crop.shape == (14, 28)
    exact = roi_crop(img, m, (14, 24), margin=0.1, min_margin_px=2)
    np.testing.assert_allclose(exact, img[8:22, 3:27])
    corner = np.zeros((40, 50), bool)
    corner[0:4, 0:4] = True  # margin reaches 4 px past the top-left corner: black padding
    padded = roi_crop(img + 1, corner, (12, 12), margin=0.0, min_margin_px=4)
    assert padded[:4].max() == 0 and padded[:, :4].max() == 0 and padded[4:, 4:].min() > 0


def test_roi_crop_rejects_empty_and_mismatched_masks():
    img, m = _frame()
    with pytest.raises(InputError, match="empty mask"):
        roi_crop(img, np.zeros_like(m), (32, 32))
    with pytest.raises(InputError, match="shape"):
        roi_crop(img, m[:50], (32, 32))


def test_parse_backbone_forms():
    assert parse_backbone("vgg19") == parse_backbone("vgg19 ")
    assert parse_backbone("vgg19=/w/v.safetensors").weights == "/w/v.safetensors"
    with pytest.raises(InputError, match="backbone"):
        parse_backbone("bad name!")


def test_timm_name_without_weights_is_an_error_not_a_random_network():
    with pytest.raises(InputError, match=r"resnet50=random"):
        DeepExtractor("resnet50", device="cpu")
    with pytest.raises(InputError, match="timm model name"):
        DeepExtractor("not_a_model=random", device="cpu")
    with pytest.raises(InputError, match="no such file"):
        DeepExtractor("resnet18=/nonexistent/w.safetensors", device="cpu")


def test_random_init_only_on_request_and_with_a_warning():
    with pytest.warns(RandomInitWarning, match="RANDOM"):
        ex = DeepExtractor("resnet18=random", device="cpu")
    assert ex.provenance()["random_init"] is True
    a = _random("resnet18=random", seed=3).features(*map(list, zip(_frame(), strict=True)))
    b = _random("resnet18=random", seed=3).features(*map(list, zip(_frame(), strict=True)))
    np.testing.assert_array_equal(a, b)  # reproducible under the seed: the same computation in one process


def test_local_weights_file_is_loaded_through_timm(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(11)
    ref = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    ex = DeepExtractor(f"resnet18={path}", device="cpu")
    img, m = _frame()
    ours = ex.features([img], [m])
    x = torch.from_numpy(ex.crops([img], [m]))
    ref.eval()
    with torch.inference_mode():
        expected = ref.forward_head(ref.forward_features(x), pre_logits=True).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    assert ex.weights_sha256 is not None and len(ex.weights_sha256) == 64
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match=r"broken\.safetensors"):
        DeepExtractor(f"resnet18={broken}", device="cpu")


def test_features_do_not_depend_on_batch_mates():
    ex = _random("resnet18=random", batch_size=3)
    frames = [_frame(s) for s in range(5)]
    together = ex.features([f[0] for f in frames], [f[1] for f in frames])
    alone = np.concatenate([ex.features([f[0]], [f[1]]) for f in frames])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)
    assert ex.columns[:2] == ["deep_resnet18_0", "deep_resnet18_1"] and len(ex.columns) == 512


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "width"),
    [
        ("resnet101", 2048),
        ("vgg19", 4096),  # the pre-logit block's width, not VGG's num_features (512)
        ("vit_small_patch16_224", 384),
        ("resnet50", 2048),
        ("vgg16", 4096),
        ("efficientnet_b0", 1280),
    ],
)
def test_study_backbones_give_pooled_pre_logit_features(name, width):
    ex = _random(f"{name}=random", batch_size=1)
    assert ex.num_features == width
    if name.startswith("vgg"):
        assert timm.create_model(name, pretrained=False).num_features == 512
    img, m = _frame()
    f = ex.features([img], [m])
    assert f.shape == (1, width) and np.isfinite(f).all()


@pytest.mark.skipif(
    not (default_weights_dir() / "deep_usresnet10t.safetensors").is_file(), reason="shipped backbone not trained yet"
)
def test_the_default_is_the_shipped_ultrasound_backbone_without_warning():
    assert DEFAULT_BACKBONE == "usresnet10t"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomInitWarning)
        ex = DeepExtractor(device="cpu")
    assert ex.num_features == 512 and ex.input_size == (128, 128)
    prov = ex.provenance()
    assert prov["random_init"] is False and len(prov["weights_sha256"]) == 64
    img, m = _frame()
    f = ex.features([img, img], [m, m])
    # Two rows of one float32 batch may go through different kernel tiles (a full tile and the tail), which can
    # round differently: equal to a few float32 ulps (eps 1.2e-7), not bit for bit.
    np.testing.assert_allclose(f[0], f[1], rtol=1e-5, atol=1e-6)
    assert np.isfinite(f).all() and f.std() > 0


@pytest.mark.gpu
def test_cuda_bf16_features_agree_with_cpu_fp32():
    cpu = _random("resnet18=random", seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        gpu = DeepExtractor("resnet18=random", device="cuda", seed=5)
    assert gpu.provenance()["precision"] == "bfloat16"
    frames = [_frame(s) for s in range(4)]
    a = cpu.features([f[0] for f in frames], [f[1] for f in frames])
    b = gpu.features([f[0] for f in frames], [f[1] for f in frames])
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert b.dtype == np.float32 and (cos > 0.99).all()


def test_a_backbone_file_from_usher2_train_backbone_keeps_its_own_input_size_and_normalisation(tmp_path):
    import shutil

    shipped = default_weights_dir() / "deep_usresnet10t.safetensors"
    copy = tmp_path / "mine.safetensors"
    shutil.copy(shipped, copy)
    ex = DeepExtractor(f"mine={copy}", device="cpu")
    ref = DeepExtractor(device="cpu")
    assert ex.input_size == (128, 128) and ex.columns[0] == "deep_mine_0"
    img, m = _frame()
    # The same weights, input and batch shape in one process run the same kernels: bit-identical.
    np.testing.assert_array_equal(ex.features([img], [m]), ref.features([img], [m]))
