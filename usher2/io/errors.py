"""Errors for bad input, and the record a batch keeps of the cases it skipped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class InputError(ValueError):
    """Bad input: names the file or field, what was expected and what arrived.

    Example:
        >>> str(InputError("a.png", "an image of at least 2x2 pixels", "1x1"))
        'a.png: expected an image of at least 2x2 pixels, got 1x1'
    """

    def __init__(self, where: str | Path, expected: str, got: str, fix: str | None = None) -> None:
        self.where = str(where)
        self.expected = expected
        self.got = got
        self.fix = fix
        msg = f"{self.where}: expected {expected}, got {got}"
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)


class NoLesion(InputError):
    """The segmenter found no lesion in a frame: a result ("nothing to score"), not a malfunction.

    Every door reports it as the ``no_lesion`` flag with no probability; a cohort extraction
    records it with stage ``no_lesion`` in its failures table.

    Example:
        >>> str(NoLesion("frame 3"))
        'frame 3: expected a lesion found by the segmenter, got an empty predicted mask'
    """

    def __init__(self, where: str | Path) -> None:
        super().__init__(where, "a lesion found by the segmenter", "an empty predicted mask")


@dataclass(frozen=True)
class Failure:
    """One case a batch could not process; the batch reports it and goes on."""

    case: str
    error: str

    @classmethod
    def from_exception(cls, case: str, exc: BaseException) -> Failure:
        return cls(case=case, error=f"{type(exc).__name__}: {exc}")
