"""Shared fixtures: the real data beside the repository, and markers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

# tests/io/io_helpers.py (DICOM writers) is imported by tests in several folders: importable from any
# of them, whichever runs first or alone
sys.path.insert(0, str(Path(__file__).parent / "io"))

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


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread for the module: networks on one thread give the same floats as ``usher2 extract``
    and ``usher2 score`` (a float sum's order depends on the thread count)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def scoring_bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small fitted ``combined`` bundle (radiomics + shipped deep backbone + clinical, logistic
    regression) on 40 simulated 128-px cases with predicted masks, and a held-out 12-case cohort.

    Returns ``{"bundle": BUNDLE_DIR, "train": TRAIN_DIR, "test": TEST_DIR}``; each cohort folder
    holds ``manifest.csv``, ``images/`` and ``masks/``. Built once per session (about 30 s).
    """
    from usher2.pipeline import Pipeline, PipelineConfig
    from usher2.simulate import SimulationConfig, simulate_cohort

    root = tmp_path_factory.mktemp("scoring")
    sim = SimulationConfig(image_size=(128, 128))
    simulate_cohort(40, 11, root / "train", config=sim, workers=1)
    simulate_cohort(12, 12, root / "test", config=sim, workers=1)
    params = {
        "imageType": {"Original": {}},
        "featureClass": {"shape2D": None, "firstorder": None, "glcm": None},
        "setting": {"binWidth": 16, "label": 1},
    }
    cfg = PipelineConfig(
        radiomics=params,
        masks="predicted",
        backbones=("usresnet10t",),
        models=("combined",),
        clinical=("age", "er", "grade"),
        outer_folds=3,
        inner_folds=2,
        calibration=None,
    )
    fits = Pipeline(cfg).fit(root / "train" / "manifest.csv", root / "fit")
    return {"bundle": Path(fits["combined"].bundle), "train": root / "train", "test": root / "test"}


@pytest.fixture(autouse=True, scope="session")
def _mlflow_store_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """The CLI tracks to ./mlruns by default: keep every test's MLflow runs out of the repository."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path_factory.mktemp('mlruns')}")
    yield
    mp.undo()
