"""Shared fixtures: the real data beside the repository, and markers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (CI has ../shared beside the checkout)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared``; the test is skipped with a reason when it is absent."""
    return _need(SHARED)


@pytest.fixture(scope="session")
def bus_bra_root() -> Path:
    """``../shared/data/bus-bra``; skipped with a reason when absent."""
    return _need(SHARED / "data" / "bus-bra")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none here (CI never has one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
