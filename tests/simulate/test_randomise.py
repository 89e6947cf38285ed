"""Randomised scanner settings (usher2.simulate.randomise): in their ranges and seeded."""

from __future__ import annotations

from usher2.simulate.randomise import COMPOUNDING_CHOICES, TRAINING_RANGES, randomised_configs


def test_randomised_settings_stay_in_their_ranges_and_are_seeded() -> None:
    a, b = randomised_configs(12, 3), randomised_configs(12, 3)
    assert [c.degraded for c in a] == [c.degraded for c in b]
    assert [c.degraded for c in a] != [c.degraded for c in randomised_configs(12, 4)]
    for c in a:
        for name, (lo, hi) in TRAINING_RANGES.items():
            assert lo <= getattr(c.degraded, name) <= hi, name
        assert c.degraded.compound_angles_deg in COMPOUNDING_CHOICES
    assert len({c.degraded.f0_mhz for c in a}) == 12
