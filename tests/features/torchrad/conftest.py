"""ROIs the torch radiomics backend is checked on against pyradiomics (issue 25).

Each ROI is ``(name, image, mask)``: ``image`` float32 ``(H, W)`` grey levels 0-255 (what
:func:`usher2.features.regions.radiomics_row` gives pyradiomics: pixels x 255), ``mask`` bool.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from usher2.io.frames import read_frame, read_mask


def _disk(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


@pytest.fixture(scope="session")
def sim_rois(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """16 simulated frames (128 px) and their lesion masks (the usher2 simulator, seed 3)."""
    from usher2.simulate import SimulationConfig, simulate_cohort

    root = tmp_path_factory.mktemp("torchrad-sim")
    man = simulate_cohort(16, 3, root, config=SimulationConfig(image_size=(128, 128)), workers=1)
    out = []
    for row in man.itertuples():
        frame = read_frame(root / row.image)
        mask = read_mask(root / row.mask, frame.shape, case=row.case_id)
        out.append((str(row.case_id), (frame.pixels * 255.0).astype(np.float32), mask.astype(bool)))
    return out


@pytest.fixture(scope="session")
def busbra_rois(bus_bra_root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """16 BUS-BRA frames (the first 16 in name order) and their lesion masks, at their own size."""
    images = sorted((bus_bra_root / "Images").glob("*.png"))[:16]
    out = []
    for path in images:
        frame = read_frame(path)
        mask = read_mask(bus_bra_root / "Masks" / path.name.replace("bus_", "mask_"), frame.shape, case=path.stem)
        out.append((path.stem, (frame.pixels * 255.0).astype(np.float32), mask.astype(bool)))
    return out


@pytest.fixture(scope="session")
def edge_rois() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The edge cases: a 1-pixel-wide line and a 2-pixel ROI (pyradiomics refuses both: fewer than
    2 dimensions), a border-touching ROI, a constant image, a 2 x 2 ROI, a whole-frame ROI, a ring
    (a hole) and two separate blobs."""
    rng = np.random.default_rng(7)
    img = (rng.random((48, 48)) * 255).astype(np.float32)
    line = np.zeros((48, 48), bool)
    line[10:40, 20] = True
    border = _disk(48, 48, 0, 0, 14, 18)
    tiny = np.zeros((48, 48), bool)
    tiny[5, 5:7] = True
    square = np.zeros((48, 48), bool)
    square[30:32, 8:10] = True
    ring = _disk(48, 48, 24, 24, 15, 15) & ~_disk(48, 48, 24, 24, 6, 6)
    blobs = _disk(48, 48, 12, 12, 6, 6) | _disk(48, 48, 34, 34, 7, 5)
    return [
        ("line-1px", img, line),
        ("border", img, border),
        ("constant", np.full((48, 48), 100.0, np.float32), _disk(48, 48, 24, 24, 10, 12)),
        ("tiny-2px", img, tiny),
        ("square-2x2", img, square),
        ("whole-frame", img, np.ones((48, 48), bool)),
        ("ring", img, ring),
        ("two-blobs", img, blobs),
    ]


SETTINGS = {"binWidth": 8, "label": 1, "normalize": False, "correctMask": True}


@pytest.fixture(scope="session")
def reference():
    """``reference(image, mask, feature_class, image_type="Original", **settings)``: pyradiomics'
    values (``{feature name: float}``) for one class on one image type, with usher2's settings
    (``binWidth`` 8 on 0-255), or the :class:`~usher2.io.errors.InputError` it raised."""
    from usher2.features.radiomics import RadiomicsExtractor
    from usher2.io.errors import InputError

    cache: dict[tuple, object] = {}

    def run(image: np.ndarray, mask: np.ndarray, feature_class: str, image_type: str = "Original", **settings):
        types = {"Original": {}, "Wavelet": {}, "LoG": {"sigma": [1.0, 2.0, 3.0]}}
        params = {
            "imageType": {image_type: types[image_type]},
            "featureClass": {feature_class: None},
            "setting": {**SETTINGS, **settings},
        }
        key = (image.tobytes(), mask.tobytes(), feature_class, image_type, tuple(sorted(settings.items())))
        if key not in cache:
            try:
                row = RadiomicsExtractor(params).extract(image, mask.astype(np.uint8))
                cache[key] = {k.removeprefix("radiomics_"): v for k, v in row.items()}
            except InputError as exc:
                cache[key] = exc
        return cache[key]

    return run
