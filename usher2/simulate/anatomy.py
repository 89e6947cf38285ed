"""Breast anatomy and the lesion: the reflectivity (echogenicity) map of one frame.

Reflectivity is the amplitude scale of the scatterers; glandular tissue is 1.0. Layers from the
skin down: coupling gel (0), skin line (bright), dermis, subcutaneous fat (≈ 0.3, hypoechoic
lobules with echogenic septa), Cooper's ligaments (thin bright curved lines), fibroglandular
tissue (≈ 1.0, textured), retromammary fat, pectoral muscle (≈ 0.45 with bright oblique
striations). The lesion sits in the glandular layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["FAT_LEVEL", "LesionTraits", "Scene", "lesion_mask", "make_scene"]

FAT_LEVEL = 0.30  # reflectivity of subcutaneous fat; lesion echogenicity is stated relative to it
GLAND_LEVEL = 1.0


@dataclass(frozen=True)
class LesionTraits:
    """The drawn lesion traits of one patient (columns ``tumour_size_mm`` and ``trait_*``).

    Attributes:
        size_mm: Longest diameter of the base ellipse (mm).
        aspect_ratio: Short / long axis (0 < ar <= 1).
        orientation_deg: Angle of the long axis from the skin line (degrees, −90…90);
            near ±90 with a small aspect ratio is "taller than wide".
        lobulation: Margin lobulation (0–1): low-order harmonics of the boundary radius.
        spiculation: Margin spiculation (0–1): number and length of thin radial spikes.
        echogenicity_db: Lesion reflectivity relative to subcutaneous fat (dB; < 0 hypoechoic).
        heterogeneity: Internal heterogeneity (0–1): log-normal texture strength.
        posterior: Posterior acoustic feature, −1 (strong shadowing) … +1 (strong enhancement).
        halo_mm: Thickness of the echogenic halo (mm; 0 = none).
        calcifications: Number of microcalcifications (bright point echoes).

    Example:
        >>> LesionTraits(size_mm=20.0, aspect_ratio=0.6).size_mm
        20.0
    """

    size_mm: float = 18.0
    aspect_ratio: float = 0.7
    orientation_deg: float = 0.0
    lobulation: float = 0.0
    spiculation: float = 0.0
    echogenicity_db: float = -12.0
    heterogeneity: float = 0.0
    posterior: float = 0.0
    halo_mm: float = 0.0
    calcifications: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("size_mm", 1.0 <= self.size_mm <= 100.0, "in [1, 100] mm"),
            ("aspect_ratio", 0.05 <= self.aspect_ratio <= 1.0, "in [0.05, 1]"),
            ("orientation_deg", -90.0 <= self.orientation_deg <= 90.0, "in [-90, 90] degrees"),
            ("lobulation", 0.0 <= self.lobulation <= 1.0, "in [0, 1]"),
            ("spiculation", 0.0 <= self.spiculation <= 1.0, "in [0, 1]"),
            ("echogenicity_db", -60.0 <= self.echogenicity_db <= 20.0, "in [-60, 20] dB"),
            ("heterogeneity", 0.0 <= self.heterogeneity <= 1.0, "in [0, 1]"),
            ("posterior", -1.0 <= self.posterior <= 1.0, "in [-1, 1]"),
            ("halo_mm", 0.0 <= self.halo_mm <= 10.0, "in [0, 10] mm"),
            ("calcifications", 0 <= self.calcifications <= 500, "an integer in [0, 500]"),
        ]
        for name, ok, expected in checks:
            v = getattr(self, name)
            if not (np.isfinite(v) and ok):
                raise ValueError(f"LesionTraits.{name} must be {expected}, got {v!r}")

    @classmethod
    def from_row(cls, row: dict[str, float]) -> LesionTraits:
        """Build from a row of :func:`usher2.simulate.simulate_labels`."""
        return cls(
            size_mm=float(row["tumour_size_mm"]),
            aspect_ratio=float(row["trait_aspect_ratio"]),
            orientation_deg=float(row["trait_orientation_deg"]),
            lobulation=float(row["trait_lobulation"]),
            spiculation=float(row["trait_spiculation"]),
            echogenicity_db=float(row["trait_echogenicity_db"]),
            heterogeneity=float(row["trait_heterogeneity"]),
            posterior=float(row["trait_posterior"]),
            halo_mm=float(row["trait_halo_mm"]),
            calcifications=int(row["trait_calcifications"]),
        )


@dataclass(frozen=True)
class LesionShape:
    """Patient-level margin randomness, so every frame shows the same lesion."""

    harmonics: np.ndarray  # (5, 2): amplitude and phase of boundary harmonics 3..7
    spikes: np.ndarray  # (k, 3): angle, height, angular half-width of each spicule

    @classmethod
    def draw(cls, traits: LesionTraits, rng: np.random.Generator) -> LesionShape:
        amp = rng.uniform(0.4, 1.0, 5) * np.array([0.16, 0.12, 0.09, 0.07, 0.05])
        harmonics = np.stack([amp, rng.uniform(0, 2 * np.pi, 5)], axis=1)
        k = round(3 + 15 * traits.spiculation) if traits.spiculation > 0 else 0
        spikes = (
            np.stack([rng.uniform(-np.pi, np.pi, k), rng.uniform(0.3, 0.9, k), rng.uniform(0.04, 0.09, k)], axis=1)
            if k
            else np.zeros((0, 3))
        )
        return cls(harmonics, spikes)


@dataclass(frozen=True)
class Scene:
    """One frame's truth at output resolution.

    Attributes:
        reflectivity: ``(H, W)`` float32 scatterer amplitude scale (gland = 1).
        mask: ``(H, W)`` bool lesion mask.
        points: ``(k, 3)`` float64 point reflectors: row, col (output pixels, sub-pixel), amplitude.
    """

    reflectivity: np.ndarray
    mask: np.ndarray
    points: np.ndarray


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field with correlation length ≈ ``cell`` pixels."""
    h, w = shape
    small = rng.standard_normal((max(2, math.ceil(h / cell)) + 2, max(2, math.ceil(w / cell)) + 2), dtype=np.float32)
    big = cv2.resize(small, (w + 2 * int(cell), h + 2 * int(cell)), interpolation=cv2.INTER_CUBIC)
    big = big[int(cell) : int(cell) + h, int(cell) : int(cell) + w]
    return (big - big.mean()) / max(float(big.std()), 1e-6)


def _smooth_curve(rng: np.random.Generator, x_mm: np.ndarray, amp_mm: float, period_mm: float) -> np.ndarray:
    out = np.zeros_like(x_mm)
    for k in (1.0, 2.1, 3.3):
        out += amp_mm / k * np.sin(2 * np.pi * k * x_mm / period_mm + rng.uniform(0, 2 * np.pi))
    return out


def lesion_mask(
    shape: tuple[int, int],
    spacing_mm: float,
    centre_mm: tuple[float, float],
    traits: LesionTraits,
    lesion_shape: LesionShape | None = None,
    orientation_deg: float | None = None,
) -> np.ndarray:
    """Boolean mask of the lesion: an ellipse whose boundary radius carries lobulation and spicules.

    With ``lobulation = spiculation = 0`` it is the ellipse with semi-axes ``a = size_mm / 2`` and
    ``b = a * aspect_ratio`` (pixel area ≈ π a b / spacing²).

    Args:
        shape: ``(H, W)``.
        spacing_mm: Pixel size (mm).
        centre_mm: ``(depth, lateral)`` of the lesion centre (mm).
        traits: The lesion traits.
        lesion_shape: Patient-level margin randomness (None: a plain ellipse).
        orientation_deg: Overrides ``traits.orientation_deg`` (frame-level view jitter).

    Returns:
        ``(H, W)`` bool.

    Example:
        >>> m = lesion_mask((200, 200), 0.1, (10.0, 10.0), LesionTraits(size_mm=10.0, aspect_ratio=0.5))
        >>> bool(abs(m.sum() / (np.pi * 50 * 25) - 1) < 0.01)
        True
    """
    h, w = shape
    theta = math.radians(traits.orientation_deg if orientation_deg is None else orientation_deg)
    a = traits.size_mm / 2.0
    b = a * traits.aspect_ratio
    irregular = lesion_shape is not None and (traits.lobulation > 0 or traits.spiculation > 0)
    # Only the lesion's bounding box is evaluated: the margin can reach at most this far out.
    reach = a * (1.0 + 0.5 * traits.lobulation + 0.9 * traits.spiculation if irregular else 1.0) + 2 * spacing_mm
    r0 = max(0, int((centre_mm[0] - reach) / spacing_mm))
    r1 = min(h, math.ceil((centre_mm[0] + reach) / spacing_mm) + 1)
    c0 = max(0, int((centre_mm[1] - reach) / spacing_mm))
    c1 = min(w, math.ceil((centre_mm[1] + reach) / spacing_mm) + 1)
    out = np.zeros(shape, bool)
    if r0 >= r1 or c0 >= c1:
        return out
    y = (np.arange(r0, r1, dtype=np.float32) + 0.5) * spacing_mm - centre_mm[0]
    x = (np.arange(c0, c1, dtype=np.float32) + 0.5) * spacing_mm - centre_mm[1]
    # Rows grow downwards, so a positive angle tilts the long axis downwards to the right.
    u = x[None, :] * math.cos(theta) + y[:, None] * math.sin(theta)
    v = -x[None, :] * math.sin(theta) + y[:, None] * math.cos(theta)
    un, vn = u / a, v / b
    rho = np.sqrt(un**2 + vn**2)
    limit = np.ones_like(rho)
    if irregular:
        assert lesion_shape is not None
        phi = np.arctan2(vn, un)
        for k, (amp, phase) in zip(range(3, 8), lesion_shape.harmonics, strict=True):
            limit += traits.lobulation * amp * np.cos(k * phi + phase)
        for ang, height, width in lesion_shape.spikes:
            d = np.abs(np.mod(phi - ang + np.pi, 2 * np.pi) - np.pi)  # angular distance, wrapped
            limit += traits.spiculation * height * np.clip(1.0 - d / width, 0.0, None) ** 2
    out[r0:r1, c0:c1] = rho < limit
    return out


def make_scene(
    traits: LesionTraits,
    lesion_shape: LesionShape,
    shape: tuple[int, int],
    spacing_mm: float,
    rng: np.random.Generator,
    *,
    view_jitter: bool = False,
) -> Scene:
    """Draw the anatomy of one frame around the lesion.

    Args:
        traits: The lesion traits.
        lesion_shape: Patient-level margin randomness.
        shape: ``(H, W)`` output size.
        spacing_mm: Pixel size (mm).
        rng: Frame-level generator (anatomy, lesion position, calcification positions).
        view_jitter: Tilt the lesion by a few degrees (a different view of the same lesion).

    Returns:
        The :class:`Scene`.

    Example:
        >>> sc = make_scene(LesionTraits(), LesionShape.draw(LesionTraits(), np.random.default_rng(0)),
        ...                 (128, 128), 0.3125, np.random.default_rng(1))
        >>> sc.reflectivity.shape, bool(sc.mask.any())
        ((128, 128), True)
    """
    h, w = shape
    depth, width = h * spacing_mm, w * spacing_mm
    y = ((np.arange(h, dtype=np.float32) + 0.5) * spacing_mm)[:, None]
    x_mm = (np.arange(w, dtype=np.float32) + 0.5) * spacing_mm
    px = 1.0 / spacing_mm  # pixels per mm

    skin = 0.3 + rng.uniform(0.0, 0.4) + _smooth_curve(rng, x_mm, 0.1, width * 1.5)
    fat_top = skin + rng.uniform(1.5, 2.2)
    gland_top = fat_top + rng.uniform(0.15, 0.3) * depth + _smooth_curve(rng, x_mm, 1.2, width)
    muscle_top = rng.uniform(0.72, 0.85) * depth + _smooth_curve(rng, x_mm, 1.0, width * 1.2)
    retro_top = muscle_top - rng.uniform(0.8, 2.0)

    # Subcutaneous fat: hypoechoic lobules whose borders (zero crossings of a smooth field) are septa.
    lob = _smooth_field(rng, shape, 5.0 * px)
    fat = FAT_LEVEL * (np.exp(0.2 * _smooth_field(rng, shape, 1.0 * px)) + 1.2 * np.exp(-((lob / 0.08) ** 2)))
    # Glandular tissue: bright, textured, with some fat islands.
    tex = _smooth_field(rng, shape, 1.5 * px)
    islands = _smooth_field(rng, shape, 3.0 * px)
    fatty = 1.0 / (1.0 + np.exp(-(islands - 1.2) / 0.12))  # smooth edges: fat islands are not cut out
    gland = GLAND_LEVEL * np.exp(0.3 * tex) * (1.0 - 0.65 * fatty)
    # Pectoral muscle: hypoechoic with bright oblique striations.
    slope = math.tan(math.radians(rng.uniform(-12, 12)))
    period = rng.uniform(1.0, 1.6)
    stria = np.cos(2 * np.pi * (y + slope * x_mm[None, :]) / period) ** 16
    muscle = 0.45 * (1.0 + 2.0 * stria) * np.exp(0.2 * tex)

    refl = np.where(y < fat_top, 1.2, fat)
    refl = np.where(y >= gland_top, gland, refl)
    refl = np.where(y >= retro_top, fat, refl)
    refl = np.where(y >= muscle_top, muscle, refl)
    refl = np.where(np.abs(y - muscle_top) < 0.35, 2.0, refl)  # muscle fascia
    refl = np.where(np.abs(y - skin - 0.2) < 0.25, 3.0, refl)  # skin line
    refl = np.where(y < skin, 0.0, refl).astype(np.float32)  # coupling gel: no scatterers

    # Cooper's ligaments: thin bright arcs rising from the gland surface towards the skin.
    lig = np.zeros(shape, np.float32)
    for _ in range(rng.integers(3, 7)):
        x0 = rng.uniform(0, width)
        top = float(np.interp(x0, x_mm, fat_top)) + rng.uniform(0.3, 1.5)
        bottom = float(np.interp(x0, x_mm, gland_top)) + 0.5
        bend = rng.uniform(-6, 6)
        t = np.linspace(0, 1, 24)
        pts = np.stack([(x0 + bend * (1 - t) ** 2) * px * 16, (top + (bottom - top) * t) * px * 16], axis=1)
        cv2.polylines(lig, [pts.astype(np.int32)], False, 1.0, 1, cv2.LINE_AA, 4)
    refl = np.maximum(refl, 2.5 * lig * (y > skin + 0.5))

    # The lesion: placed inside the frame with its centre in the glandular band where possible.
    theta = traits.orientation_deg + (rng.normal(0.0, 4.0) if view_jitter else 0.0)
    theta = float(np.clip(theta, -90.0, 90.0))
    a = traits.size_mm / 2.0
    sin_t, cos_t = math.sin(math.radians(theta)), math.cos(math.radians(theta))
    half_h = a * math.hypot(sin_t, traits.aspect_ratio * cos_t)  # half extent of the ellipse in depth
    half_w = a * math.hypot(cos_t, traits.aspect_ratio * sin_t)
    lo_y, hi_y = half_h + 3.0, depth - half_h - 4.0
    cy = rng.uniform(lo_y, hi_y) if hi_y > lo_y else depth / 2
    cy = float(np.clip(np.mean(gland_top) + 0.4 * (cy - np.mean(gland_top)), lo_y, max(lo_y, hi_y)))
    lo_x, hi_x = half_w + 1.0, width - half_w - 1.0
    cx = rng.uniform(lo_x, hi_x) if hi_x > lo_x else width / 2
    cx = 0.5 * width + 0.5 * (cx - 0.5 * width)
    mask = lesion_mask(shape, spacing_mm, (cy, cx), traits, lesion_shape, theta)
    if not mask.any():
        raise ValueError(
            f"lesion of {traits.size_mm} mm gives an empty mask at {spacing_mm} mm/px; "
            "use a finer spacing or a larger lesion"
        )

    # Echogenic halo: a bright rim of the given thickness just outside the margin.
    if traits.halo_mm > 0:
        dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5) * spacing_mm
        ring = np.clip(1.0 - dist / traits.halo_mm, 0.0, 1.0) * (dist > 0)
        refl = refl * (1.0 + 1.5 * ring) + 0.8 * ring

    # Posterior feature: gain change below the lesion, strongest behind its thickest part.
    cols = mask.any(axis=0)
    if traits.posterior != 0 and cols.any():
        thick = cv2.GaussianBlur(mask.sum(axis=0, dtype=np.float32)[None, :], (0, 0), 0.7 * px)[0]
        thick /= max(float(thick.max()), 1e-6)
        idx = np.flatnonzero(cols)
        last = (h - 1 - np.argmax(mask[::-1], axis=0)).astype(np.float32)
        # Columns beside the lesion take the nearest lesion column's bottom, so the blur has no step.
        bottom = np.interp(np.arange(w), idx, last[idx]).astype(np.float32)
        rows = np.arange(h, dtype=np.float32)[:, None]
        ramp = np.clip((rows - bottom[None, :]) / (1.5 * px), 0.0, 1.0)
        fade = np.exp(-np.clip(rows - bottom[None, :], 0, None) / (25.0 * px))
        refl = refl * 10.0 ** (traits.posterior * 12.0 * thick[None, :] * ramp * (0.5 + 0.5 * fade) / 20.0)

    # Lesion interior: level relative to fat, log-normal texture for heterogeneity.
    inner = FAT_LEVEL * 10.0 ** (traits.echogenicity_db / 20.0)
    texture = np.exp(1.1 * traits.heterogeneity * _smooth_field(rng, shape, 1.2 * px))
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.6)  # echo changes over ~0.1 mm, not a step
    refl = (refl * (1.0 - soft) + inner * texture * soft).astype(np.float32)

    # Microcalcifications: point reflectors at random places inside the mask.
    n_calc = traits.calcifications
    if n_calc:
        rr, cc = np.nonzero(mask)
        pick = rng.integers(0, rr.size, n_calc)
        points = np.stack(
            [rr[pick] + rng.uniform(0, 1, n_calc), cc[pick] + rng.uniform(0, 1, n_calc), rng.uniform(0.6, 1.0, n_calc)],
            axis=1,
        )
    else:
        points = np.zeros((0, 3))
    return Scene(refl, mask, points)
