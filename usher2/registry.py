"""Plain-dict registries: one per stage, unknown names list what is available."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to factories for one stage (``"enhancer"``, ``"segmenter"``, …).

    Example:
        >>> r = Registry("toy")
        >>> @r.register("one")
        ... def make_one() -> int:
        ...     return 1
        >>> r.create("one"), r.names()
        (1, ['one'])
        >>> r.create("two")
        Traceback (most recent call last):
        ...
        KeyError: "unknown toy 'two'; available: one"
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers a factory (a class or a function) under ``name``."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return deco

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name``."""
        try:
            return self._factories[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}") from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the registered object with keyword arguments."""
        return self.get(name)(**kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
