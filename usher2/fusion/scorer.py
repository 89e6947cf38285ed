"""Deprecated: moved to :mod:`usher2.score.engine` (issue 24); this alias goes in the next release."""

from __future__ import annotations

import warnings

from usher2.score.engine import *  # noqa: F403
from usher2.score.engine import __all__  # noqa: F401

warnings.warn(
    "usher2.fusion.scorer moved to usher2.score.engine; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
