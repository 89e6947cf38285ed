"""Plain-dict registries (usher2.registry): register, create, and unknown names that list what is available."""

from __future__ import annotations

import pytest

from usher2.registry import Registry


def test_register_create_and_list() -> None:
    r: Registry[tuple] = Registry("toy")

    @r.register("pair")
    def make_pair(a: int = 1, b: int = 2) -> tuple:
        return (a, b)

    r.register("alpha")(tuple)
    assert r.names() == ["alpha", "pair"] and "pair" in r and "gone" not in r
    assert r.create("pair", b=5) == (1, 5) and r.get("pair") is make_pair and r.create("alpha") == ()


def test_unknown_and_duplicate_names_are_explained() -> None:
    r: Registry[int] = Registry("toy")
    r.register("one")(int)
    with pytest.raises(KeyError, match="unknown toy 'two'; available: one"):
        r.create("two")
    with pytest.raises(ValueError, match="toy 'one' is registered twice"):
        r.register("one")(float)
