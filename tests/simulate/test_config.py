"""Simulator settings (usher2.simulate.config): the documented defaults, the JSON round trip, and errors
that name the setting."""

from __future__ import annotations

import json
import math

import pytest

from usher2.simulate.config import RenderSettings, SimulationConfig, clean_settings, degraded_settings
from usher2.simulate.labels import LabelModel


def test_defaults_are_the_documented_geometry() -> None:
    cfg = SimulationConfig()
    assert cfg.image_size == (256, 256) and cfg.fov_mm == (40.0, 40.0)
    assert cfg.spacing_mm == 40.0 / 256 == 0.15625
    assert cfg.axial_oversample == 6  # chosen when None (the docstring's value for the defaults)
    assert cfg.clean == clean_settings() and cfg.degraded == degraded_settings()
    assert cfg.label_model == LabelModel()


def test_the_chosen_oversampling_is_the_smallest_that_resolves_the_pulse() -> None:
    # The degraded f0 is lower; the clean one (7.5 MHz, bandwidth 0.6) sets the top frequency:
    # k0 = 2 * 7.5 / 1.54 cycles/mm, top = k0 * (1 + 3.5 * 0.6 / 2.3548), samples = ceil(2 * top * spacing)
    k0 = 2 * 7.5 / 1.54
    top = k0 * (1 + 3.5 * 0.6 / (2 * math.sqrt(2 * math.log(2))))
    for size in (256, 128, 64):
        cfg = SimulationConfig(image_size=(size, size))
        assert cfg.axial_oversample == math.ceil(2 * top * 40.0 / size)
    assert SimulationConfig(image_size=(128, 128)).axial_oversample == 12
    with pytest.raises(ValueError, match=r"axial_oversample must be >= 12 .* got 11"):
        SimulationConfig(image_size=(128, 128), axial_oversample=11)


def test_defaults_round_trip_through_json() -> None:
    cfg = SimulationConfig()
    doc = json.loads(json.dumps(cfg.to_dict()))  # tuples become lists on the way
    assert doc["image_size"] == [256, 256] and doc["clean"]["compound_angles_deg"] == [-8.0, 0.0, 8.0]
    back = SimulationConfig.from_dict(doc)
    assert back == cfg and back.to_dict() == cfg.to_dict()
    assert isinstance(back.clean.compound_angles_deg, tuple) and isinstance(back.image_size, tuple)


def test_a_changed_config_round_trips_with_its_changes() -> None:
    cfg = SimulationConfig(
        image_size=(64, 128),
        fov_mm=(20.0, 40.0),
        frames_per_patient=3,
        clean=RenderSettings(f0_mhz=10.0, compound_angles_deg=(-5, 5)),
        png_compression=6,
    )
    back = SimulationConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert back.clean.compound_angles_deg == (-5.0, 5.0)
    assert back.spacing_mm == 20.0 / 64


def test_an_unknown_key_is_refused_naming_it() -> None:
    doc = SimulationConfig().to_dict()
    with pytest.raises(TypeError, match="image_sise"):
        SimulationConfig.from_dict({**doc, "image_sise": [64, 64]})
    doc["clean"]["f0_mhz_typo"] = 7.5
    with pytest.raises(TypeError, match="f0_mhz_typo"):
        SimulationConfig.from_dict(doc)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": (16, 16)}, r"SimulationConfig\.image_size must be \(H, W\) integers in \[32, 4096\]"),
        ({"fov_mm": (40.0, 2.0)}, r"SimulationConfig\.fov_mm must be \(depth, width\) in \[5, 300\] mm"),
        ({"image_size": (64, 128)}, r"use fov_mm=\(40\.0, 80\.0\)"),
        ({"sound_speed_m_s": 3000.0}, r"sound_speed_m_s must be in \[1000, 2000\] m/s, got 3000\.0"),
        ({"attenuation_db_cm_mhz": float("nan")}, r"attenuation_db_cm_mhz must be in \[0, 3\], got nan"),
        ({"png_compression": 10}, r"png_compression must be an integer in \[0, 9\], got 10"),
        ({"clean": {"f0_mhz": 7.5}}, r"SimulationConfig\.clean must be a RenderSettings, got 'dict'"),
        ({"label_model": None}, r"label_model must be a LabelModel, got 'NoneType'"),
    ],
)
def test_bad_simulation_settings_name_the_field_and_the_range(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"f0_mhz": 25.0}, r"RenderSettings\.f0_mhz must be in \[1, 20\] MHz, got 25\.0"),
        ({"bandwidth": True}, r"RenderSettings\.bandwidth must be in \[0\.2, 1\.2\], got True"),
        ({"noise_db": 3.0}, r"RenderSettings\.noise_db must be <= 0 dB"),
        ({"focus_mm": -1.0}, r"RenderSettings\.focus_mm must be >= 0 mm"),
        ({"compound_angles_deg": ()}, r"compound_angles_deg must be one or more angles in \[-20, 20\]"),
        ({"compound_angles_deg": (0.0, 25.0)}, r"compound_angles_deg must be one or more angles"),
        ({"tgc_error": 1.0}, r"RenderSettings\.tgc_error must be in \[0, 1\), got 1\.0"),
    ],
)
def test_bad_render_settings_name_the_field_and_the_range(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RenderSettings(**kwargs)


def test_the_two_renderings_differ_as_documented() -> None:
    clean, degraded = clean_settings(), degraded_settings()
    assert clean.compound_angles_deg == (-8.0, 0.0, 8.0) and degraded.compound_angles_deg == (0.0,)
    assert clean.f0_mhz > degraded.f0_mhz and clean.lateral_fwhm_mm < degraded.lateral_fwhm_mm
    assert clean.noise_db < degraded.noise_db and clean.dynamic_range_db == 60.0 and degraded.dynamic_range_db == 45.0
    assert (clean.clutter, clean.gain_error_db, clean.tgc_error) == (0.0, 0.0, 0.0)
    assert (degraded.clutter, degraded.gain_error_db, degraded.tgc_error) == (0.35, 4.0, 0.15)
    assert clean.focus_mm == degraded.focus_mm == RenderSettings().focus_mm  # not listed: the default
