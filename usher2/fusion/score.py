"""Deprecated: moved to :mod:`usher2.score.table` (issue 24); this alias goes in the next release."""

from __future__ import annotations

import warnings

from usher2.score.table import *  # noqa: F403
from usher2.score.table import __all__  # noqa: F401

warnings.warn(
    "usher2.fusion.score moved to usher2.score.table; import it from there",
    DeprecationWarning,
    stacklevel=2,
)

from usher2.io.scan import list_files  # noqa: E402,F401
