"""Deprecated: moved to :mod:`usher2.score.folder` (issue 24); this alias goes in the next release."""

from __future__ import annotations

import warnings

from usher2.score.folder import *  # noqa: F403
from usher2.score.folder import __all__  # noqa: F401

warnings.warn(
    "usher2.fusion.score_frames moved to usher2.score.folder; import it from there",
    DeprecationWarning,
    stacklevel=2,
)

from usher2.explain.render import contact_sheet  # noqa: E402,F401
from usher2.explain.render import render_overlay as annotate  # noqa: E402,F401
