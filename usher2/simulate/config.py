"""Frozen, self-checking settings of the simulator.

Geometry: the image is ``image_size = (H, W)`` pixels covering ``fov_mm = (depth, width)``
millimetres (default 256 × 256 px over 40 × 40 mm, i.e. 0.15625 mm per pixel, recorded per case
as ``spacing_mm``). Row 0 is the skin surface, rows grow with depth.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from usher2.simulate.labels import LabelModel

__all__ = ["RenderSettings", "SimulationConfig", "clean_settings", "degraded_settings"]


def _check(cond: bool, where: str, expected: str, got: object) -> None:
    if not cond:
        raise ValueError(f"{where} must be {expected}, got {got!r}")


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _check_range(where: str, value: Any, lo: float, hi: float, expected: str) -> None:
    """A finite number in ``[lo, hi]`` (an infinite bound leaves that side open), else a ValueError."""
    _check(_finite(value) and lo <= value <= hi, where, expected, value)


@dataclass(frozen=True)
class RenderSettings:
    """One rendering of the scatterer field (an acquisition setting of the virtual scanner).

    Attributes:
        f0_mhz: Centre frequency of the pulse (MHz).
        bandwidth: Fractional −6 dB bandwidth of the pulse (0.2–1.2).
        lateral_fwhm_mm: Lateral −6 dB beam width at the focal depth (mm).
        focus_mm: Focal depth (mm).
        depth_of_field_mm: Depth offset from the focus at which the lateral width has grown by √2.
        compound_angles_deg: Steering angles whose envelopes are averaged (spatial compounding).
        noise_db: Electronic noise RMS relative to the echo of unit reflectivity at the skin (dB).
        clutter: Level of the diffuse clutter haze relative to the mean tissue envelope (0 = none).
        dynamic_range_db: Displayed dynamic range of the log compression (dB).
        gain_error_db: Half-width of the uniform per-frame gain error (dB).
        tgc_error: Half-width of the uniform per-frame error of the TGC slope (fraction of the
            attenuation it should compensate).

    Example:
        >>> RenderSettings(f0_mhz=7.5).f0_mhz
        7.5
    """

    f0_mhz: float = 7.5
    bandwidth: float = 0.6
    lateral_fwhm_mm: float = 0.45
    focus_mm: float = 18.0
    depth_of_field_mm: float = 14.0
    compound_angles_deg: tuple[float, ...] = (0.0,)
    noise_db: float = -80.0
    clutter: float = 0.0
    dynamic_range_db: float = 60.0
    gain_error_db: float = 0.0
    tgc_error: float = 0.0

    def __post_init__(self) -> None:
        name = "RenderSettings"
        _check_range(f"{name}.f0_mhz", self.f0_mhz, 1.0, 20.0, "in [1, 20] MHz")
        _check_range(f"{name}.bandwidth", self.bandwidth, 0.2, 1.2, "in [0.2, 1.2]")
        _check_range(f"{name}.lateral_fwhm_mm", self.lateral_fwhm_mm, 0.05, 5.0, "in [0.05, 5] mm")
        _check_range(f"{name}.focus_mm", self.focus_mm, 0, math.inf, ">= 0 mm")
        _check(
            _finite(self.depth_of_field_mm) and self.depth_of_field_mm > 0,
            f"{name}.depth_of_field_mm",
            "> 0 mm",
            self.depth_of_field_mm,
        )
        angles = tuple(self.compound_angles_deg)
        _check(
            len(angles) >= 1 and all(_finite(a) and abs(a) <= 20 for a in angles),
            f"{name}.compound_angles_deg",
            "one or more angles in [-20, 20] degrees",
            self.compound_angles_deg,
        )
        object.__setattr__(self, "compound_angles_deg", tuple(float(a) for a in angles))
        _check_range(f"{name}.noise_db", self.noise_db, -math.inf, 0, "<= 0 dB")
        _check_range(f"{name}.clutter", self.clutter, 0, 2, "in [0, 2]")
        _check_range(f"{name}.dynamic_range_db", self.dynamic_range_db, 10, 100, "in [10, 100] dB")
        _check_range(f"{name}.gain_error_db", self.gain_error_db, 0, 20, "in [0, 20] dB")
        _check(_finite(self.tgc_error) and 0 <= self.tgc_error < 1, f"{name}.tgc_error", "in [0, 1)", self.tgc_error)


#: The two renderings of every frame side by side, ``(clean, degraded)``; the settings not listed
#: keep their defaults.
_RENDERINGS: dict[str, tuple[Any, Any]] = {
    "f0_mhz": (7.5, 5.0),
    "bandwidth": (0.6, 0.5),
    "lateral_fwhm_mm": (0.40, 0.85),
    "depth_of_field_mm": (20.0, 9.0),
    "compound_angles_deg": ((-8.0, 0.0, 8.0), (0.0,)),
    "noise_db": (-90.0, -42.0),
    "clutter": (0.0, 0.35),
    "dynamic_range_db": (60.0, 45.0),
    "gain_error_db": (0.0, 4.0),
    "tgc_error": (0.0, 0.15),
}


def clean_settings() -> RenderSettings:
    """High quality: higher frequency, narrow beam, 3-angle compounding, low noise, 60 dB."""
    return RenderSettings(**{key: pair[0] for key, pair in _RENDERINGS.items()})


def degraded_settings() -> RenderSettings:
    """Degraded: lower frequency, wider beam, noise, clutter, 45 dB, gain and TGC errors."""
    return RenderSettings(**{key: pair[1] for key, pair in _RENDERINGS.items()})


@dataclass(frozen=True)
class SimulationConfig:
    """Everything a cohort depends on besides ``n`` and ``seed``.

    Attributes:
        image_size: ``(H, W)`` pixels of every PNG.
        fov_mm: ``(depth, width)`` in mm that the image covers; ``spacing_mm`` = depth / H
            (square pixels are required: depth / H == width / W).
        frames_per_patient: Frames (views with new scatterers) of the same lesion per patient.
        axial_oversample: RF samples per output row; must resolve the highest centre frequency.
            None picks the smallest that does (6 for the defaults).
        sound_speed_m_s: Speed of sound (m/s).
        attenuation_db_cm_mhz: Tissue attenuation (dB / cm / MHz), one way.
        clean: Settings of the high-quality rendering (``out/clean``).
        degraded: Settings of the degraded rendering (``out/images``).
        label_model: Coefficients of the HER2 label model.
        png_compression: zlib level of the PNGs (0–9); a speed/size trade, not a content one.

    Example:
        >>> cfg = SimulationConfig(image_size=(128, 128))
        >>> cfg.spacing_mm
        0.3125
    """

    image_size: tuple[int, int] = (256, 256)
    fov_mm: tuple[float, float] = (40.0, 40.0)
    frames_per_patient: int = 1
    axial_oversample: int | None = None
    sound_speed_m_s: float = 1540.0
    attenuation_db_cm_mhz: float = 0.5
    clean: RenderSettings = field(default_factory=clean_settings)
    degraded: RenderSettings = field(default_factory=degraded_settings)
    label_model: LabelModel = field(default_factory=LabelModel)
    png_compression: int = 1

    def __post_init__(self) -> None:
        name = "SimulationConfig"
        size = tuple(self.image_size)
        _check(
            len(size) == 2 and all(isinstance(s, int) and not isinstance(s, bool) and 32 <= s <= 4096 for s in size),
            f"{name}.image_size",
            "(H, W) integers in [32, 4096]",
            self.image_size,
        )
        object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        fov = tuple(self.fov_mm)
        _check(
            len(fov) == 2 and all(_finite(f) and 5 <= f <= 300 for f in fov),
            f"{name}.fov_mm",
            "(depth, width) in [5, 300] mm",
            self.fov_mm,
        )
        object.__setattr__(self, "fov_mm", (float(fov[0]), float(fov[1])))
        dy, dx = fov[0] / size[0], fov[1] / size[1]
        _check(
            abs(dy - dx) <= 1e-9 * max(dy, dx),
            f"{name}.fov_mm / image_size",
            f"square pixels (depth/H == width/W); use fov_mm=({fov[0]}, {fov[0] * size[1] / size[0]})",
            (self.fov_mm, self.image_size),
        )
        _check(
            isinstance(self.frames_per_patient, int) and 1 <= self.frames_per_patient <= 64,
            f"{name}.frames_per_patient",
            "an integer in [1, 64]",
            self.frames_per_patient,
        )
        _check_range(f"{name}.sound_speed_m_s", self.sound_speed_m_s, 1000, 2000, "in [1000, 2000] m/s")
        _check_range(f"{name}.attenuation_db_cm_mhz", self.attenuation_db_cm_mhz, 0, 3, "in [0, 3]")
        for which in ("clean", "degraded"):
            _check(
                isinstance(getattr(self, which), RenderSettings),
                f"{name}.{which}",
                "a RenderSettings",
                type(getattr(self, which)).__name__,
            )
        _check(
            isinstance(self.label_model, LabelModel),
            f"{name}.label_model",
            "a LabelModel",
            type(self.label_model).__name__,
        )
        _check(
            isinstance(self.png_compression, int) and 0 <= self.png_compression <= 9,
            f"{name}.png_compression",
            "an integer in [0, 9]",
            self.png_compression,
        )
        # The RF grid must sample the pulse spectrum up to ~3.5 sigma above the carrier, or the
        # Hilbert envelope aliases and speckle statistics go wrong.
        need = self._min_oversample()
        if self.axial_oversample is None:
            object.__setattr__(self, "axial_oversample", need)
        _check(
            isinstance(self.axial_oversample, int)
            and not isinstance(self.axial_oversample, bool)
            and 1 <= self.axial_oversample <= 64,
            f"{name}.axial_oversample",
            "an integer in [1, 64] or None",
            self.axial_oversample,
        )
        _check(
            self.axial_oversample >= need,
            f"{name}.axial_oversample",
            f">= {need} to sample the pulse spectrum without aliasing (or None to choose it)",
            self.axial_oversample,
        )

    def _min_oversample(self) -> int:
        k_top = 0.0
        for s in (self.clean, self.degraded):
            k0 = 2.0 * s.f0_mhz / (self.sound_speed_m_s / 1000.0)  # cycles / mm of the RF along depth
            k_top = max(k_top, k0 * (1.0 + 3.5 * s.bandwidth / (2.0 * math.sqrt(2.0 * math.log(2.0)))))
        return max(1, math.ceil(2.0 * k_top * self.spacing_mm - 1e-9))

    @property
    def spacing_mm(self) -> float:
        """Pixel spacing of the output images (mm, square pixels)."""
        return self.fov_mm[0] / self.image_size[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every setting (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimulationConfig:
        """Inverse of :meth:`to_dict`.

        Example:
            >>> SimulationConfig.from_dict(SimulationConfig().to_dict()) == SimulationConfig()
            True
        """
        d = dict(d)
        d["clean"] = RenderSettings(**{**d["clean"], "compound_angles_deg": tuple(d["clean"]["compound_angles_deg"])})
        d["degraded"] = RenderSettings(
            **{**d["degraded"], "compound_angles_deg": tuple(d["degraded"]["compound_angles_deg"])}
        )
        d["label_model"] = LabelModel(**d["label_model"])
        d["image_size"] = tuple(d["image_size"])
        d["fov_mm"] = tuple(d["fov_mm"])
        return cls(**d)
