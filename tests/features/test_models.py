"""The per-process model cache (usher2.features.models): each model is built once per key, and the small
helpers around it (segmenter specs, the CPU test, torch threads)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from usher2.features import models
from usher2.io.errors import InputError


@dataclass(frozen=True)
class _Cfg:
    segmenter: str = "unet"
    device: str | None = "cpu"


def test_cached_model_builds_once_per_kind_and_key() -> None:
    calls: list[str] = []

    def build(tag: str):
        return lambda: calls.append(tag) or object()

    a = models.cached_model("test-mirror", "k1", build("a"))
    assert models.cached_model("test-mirror", "k1", build("b")) is a  # the second builder never runs
    c = models.cached_model("test-mirror", "k2", build("c"))
    d = models.cached_model("test-mirror-other", "k1", build("d"))
    assert calls == ["a", "c", "d"]
    assert len({id(a), id(c), id(d)}) == 3


def test_enhancers_are_cached_by_name() -> None:
    a = models.enhancer("median")
    assert models.enhancer("median") is a
    assert models.enhancer("none") is not a


def test_radiomics_extractors_are_cached_by_their_settings_in_any_key_order() -> None:
    p1 = {"setting": {"binWidth": 16, "label": 1}, "featureClass": {"firstorder": None}}
    p2 = {"featureClass": {"firstorder": None}, "setting": {"label": 1, "binWidth": 16}}  # the same settings
    p3 = {"setting": {"binWidth": 32, "label": 1}, "featureClass": {"firstorder": None}}
    a = models.radiomics_extractor(SimpleNamespace(params=p1))
    assert models.radiomics_extractor(SimpleNamespace(params=p2)) is a
    assert models.radiomics_extractor(SimpleNamespace(params=p3)) is not a


def test_deep_extractors_are_cached_by_backbone_and_device() -> None:
    from usher2.features.deep import RandomInitWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        a = models.deep_extractor(_Cfg(), "resnet10t=random")
        assert models.deep_extractor(_Cfg(), "resnet10t=random") is a
    assert a.device.type == "cpu"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("unet", ("unet", {})), ("unet=w/seg.safetensors", ("unet", {"weights": "w/seg.safetensors"}))],
)
def test_segmenter_spec_splits_name_and_weights(spec: str, expected: tuple) -> None:
    assert models.segmenter_spec(spec) == expected


@pytest.mark.parametrize("bad", ["", "unet=", "=w.safetensors"])
def test_a_bad_segmenter_spec_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(InputError, match=rf"^segmenter: expected a segmenter name, or NAME=PATH .* got {bad!r}"):
        models.segmenter_spec(bad)


def test_with_segmenter_weights_keeps_the_network_and_points_at_the_file(tmp_path: Path) -> None:
    cfg = _Cfg(segmenter="unetplusplus=old.safetensors")
    assert models.with_segmenter_weights(cfg, None) is cfg
    w = tmp_path / "seg.safetensors"
    w.write_bytes(b"")
    assert models.with_segmenter_weights(cfg, w) == _Cfg(segmenter=f"unetplusplus={w.resolve()}")
    with pytest.raises(InputError, match=r"missing\.safetensors: expected segmenter weights .* got no such file"):
        models.with_segmenter_weights(cfg, tmp_path / "missing.safetensors")


@pytest.mark.parametrize(("device", "cuda", "expected"), [
    ("cpu", True, True),
    ("cpu:0", True, True),
    ("cuda", False, False),
    ("cuda:1", True, False),
    (None, False, True),  # None: CUDA when available, else the CPU
    (None, True, False),
])  # fmt: skip
def test_on_cpu(monkeypatch: pytest.MonkeyPatch, device: str | None, cuda: bool, expected: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert models.on_cpu(_Cfg(device=device)) is expected


def test_torch_threads_sets_the_count_and_restores_it() -> None:
    before = torch.get_num_threads()
    with models.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with models.torch_threads(None):  # None: unchanged
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), models.torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_this_process_is_not_a_dask_worker() -> None:
    assert models.in_dask_worker() is False
