"""Render one frame: anatomy → shared scatterer field → clean and degraded images + mask."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from usher2.simulate.anatomy import LesionShape, LesionTraits, make_scene
from usher2.simulate.config import SimulationConfig
from usher2.simulate.speckle import _RAYLEIGH_MEAN, RFGrid, log_compress, render_envelope, resample

__all__ = ["RenderedFrame", "render_frame"]

# Stream tags: every random draw comes from SeedSequence([seed, tag, patient, (frame)]).
_SHAPE_STREAM = 0x5A9E
_FRAME_STREAM = 0xF4A3
CALCIFICATION_AMPLITUDE = 40.0  # about +15 dB over glandular speckle at the peak of the PSF
CLUTTER_DEPTH_MM = 10.0  # reverberation clutter fades over this depth


@dataclass(frozen=True)
class RenderedFrame:
    """One rendered frame.

    Attributes:
        image: ``(H, W)`` uint8 degraded frame (the manifest ``image``).
        clean: ``(H, W)`` uint8 high-quality frame of the same scatterers.
        mask: ``(H, W)`` uint8 lesion mask, 0 or 255; aligned with both images.
        spacing_mm: Pixel size (mm).
        reflectivity: ``(H, W)`` float32 true echogenicity map of the frame: the scatterer
            amplitude scale both images were rendered from (glandular tissue = 1, coupling gel
            above the skin = 0; point calcifications are not in it). Ground truth for
            despeckling; it is not written to disk by :func:`~usher2.simulate.simulate_cohort`.
    """

    image: np.ndarray
    clean: np.ndarray
    mask: np.ndarray
    spacing_mm: float
    reflectivity: np.ndarray | None = None


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(img * 255.0).astype(np.uint8)


def render_frame(
    traits: LesionTraits, seed: int, patient: int, frame: int = 0, config: SimulationConfig | None = None
) -> RenderedFrame:
    """Render frame ``frame`` of patient ``patient`` of the cohort with ``seed``.

    The lesion margin depends only on ``(seed, patient)``; anatomy, lesion position, scatterers and
    noise on ``(seed, patient, frame)``. Frames after the first tilt the lesion by a few degrees.

    Args:
        traits: The patient's lesion traits.
        seed: Cohort seed.
        patient: Patient index.
        frame: Frame index (0 … frames_per_patient − 1).
        config: Geometry and acquisition settings; the defaults when None.

    Returns:
        The :class:`RenderedFrame` (``image``, ``clean`` and ``mask`` are ``config.image_size``).

    Example:
        >>> cfg = SimulationConfig(image_size=(64, 64), fov_mm=(40.0, 40.0), axial_oversample=24)
        >>> f = render_frame(LesionTraits(size_mm=15.0), seed=0, patient=0, config=cfg)
        >>> f.image.shape, f.image.dtype.name, sorted(set(np.unique(f.mask).tolist()))
        ((64, 64), 'uint8', [0, 255])
    """
    config = config or SimulationConfig()
    h, w = config.image_size
    sp = config.spacing_mm
    shape_rng = np.random.default_rng(np.random.SeedSequence([seed, _SHAPE_STREAM, patient]))
    rng = np.random.default_rng(np.random.SeedSequence([seed, _FRAME_STREAM, patient, frame]))
    scene = make_scene(traits, LesionShape.draw(traits, shape_rng), (h, w), sp, rng, view_jitter=frame > 0)

    grid = RFGrid.from_config(config)
    k = config.axial_oversample
    refl = cv2.resize(scene.reflectivity, (w, grid.rows), interpolation=cv2.INTER_LINEAR)
    # Tissue goes on beyond the field of view: mirror it into the margins, then leave the lower half
    # of the bottom pad empty so the circular convolution cannot wrap deep echoes onto the skin.
    refl = cv2.copyMakeBorder(refl, 0, grid.pad_rows, grid.pad_cols, grid.pad_cols, cv2.BORDER_REFLECT)
    refl[grid.rows + grid.pad_rows // 2 :] = 0.0
    scat = refl * rng.standard_normal(grid.shape, dtype=np.float32)
    if len(scene.points):
        r = np.minimum((scene.points[:, 0] * k).astype(int), grid.rows - 1)
        c = np.minimum(scene.points[:, 1].astype(int), w - 1) + grid.pad_cols
        np.add.at(scat, (r, c), (CALCIFICATION_AMPLITUDE * scene.points[:, 2]).astype(np.float32))

    deg = config.degraded
    gain_db = float(rng.uniform(-deg.gain_error_db, deg.gain_error_db))
    tgc_error = float(rng.uniform(-deg.tgc_error, deg.tgc_error))
    env_clean = resample(render_envelope(scat, grid, config.clean, config, rng), (h, w))
    env_deg = resample(render_envelope(scat, grid, deg, config, rng, gain_db=gain_db, tgc_error=tgc_error), (h, w))
    if deg.clutter > 0:
        # Clutter (reverberation, side lobes) is an incoherent haze strongest near the skin; it
        # fills in dark regions, which is what lowers lesion contrast on real scanners.
        z = ((np.arange(h, dtype=np.float32) + 0.5) * sp)[:, None]
        haze = deg.clutter * _RAYLEIGH_MEAN * (0.3 + np.exp(-z / CLUTTER_DEPTH_MM))
        speck = rng.exponential(1.0, (h, w)).astype(np.float32)
        env_deg = np.sqrt(env_deg**2 + haze**2 * speck).astype(np.float32)
    image = _to_uint8(log_compress(env_deg, deg.dynamic_range_db))
    clean = _to_uint8(log_compress(env_clean, config.clean.dynamic_range_db))
    mask = np.where(scene.mask, 255, 0).astype(np.uint8)
    return RenderedFrame(image=image, clean=clean, mask=mask, spacing_mm=sp, reflectivity=scene.reflectivity)
