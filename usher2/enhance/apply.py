"""Enhance files on disk: an image, a directory tree or a manifest in, 8-bit PNGs out.

This is the library behind ``usher2 enhance INPUT --out DIR [--model NAME]``. Input kinds,
output names, multi-frame inputs, failures, resuming and batching are those of
:mod:`usher2.io.runner`; the settings file is ``DIR/enhance.json`` and holds the enhancer's
settings (:meth:`~usher2.enhance.base.Enhancer.settings`).

**8-bit output.** ``round(clip(y, 0, 1) * 255)`` with NumPy's round-half-to-even, so an 8-bit
input with the ``none`` enhancer comes back unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usher2.enhance import create_enhancer
from usher2.enhance.base import Enhancer
from usher2.io.errors import Failure
from usher2.io.runner import FAILURES_FILE, FRAMES_FILE, INPUT_SUFFIXES, map_frames, to_uint8, write_png

__all__ = [
    "DEFAULT_ENHANCER",
    "FAILURES_FILE",
    "FRAMES_FILE",
    "INPUT_SUFFIXES",
    "SETTINGS_FILE",
    "EnhanceResult",
    "enhance_paths",
]

DEFAULT_ENHANCER = "pix2pix"
"""The enhancer ``usher2 enhance`` uses without ``--model``."""

SETTINGS_FILE = "enhance.json"


@dataclass(frozen=True)
class EnhanceResult:
    """What one :func:`enhance_paths` run did.

    Attributes:
        out: The output folder.
        written: Every PNG written by this run, in input order (frames in frame order).
        enhanced: The inputs enhanced by this run (names as in failures), in input order.
        skipped: Inputs whose outputs were already complete, in input order.
        failures: Inputs that could not be enhanced, in input order.
        settings: The enhancer's settings, as saved in ``enhance.json``.
    """

    out: Path
    written: list[Path]
    enhanced: list[str]
    skipped: list[str]
    failures: list[Failure]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_inputs(self) -> int:
        """Every input found: enhanced + skipped + failed."""
        return len(self.enhanced) + len(self.skipped) + len(self.failures)


def enhance_paths(
    input: str | Path,
    out: str | Path,
    *,
    model: str = DEFAULT_ENHANCER,
    strength: float = 1.0,
    batch_size: int = 8,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> EnhanceResult:
    """Enhance an image, a directory tree or a manifest's images into 8-bit PNGs under ``out``.

    See :mod:`usher2.io.runner` for output names, multi-frame inputs, resuming and failures.

    Args:
        input: An image, DICOM or video file; a directory (searched recursively); or a manifest.
        out: Output folder (created).
        model: A registered enhancer name (``usher2.enhance.available_enhancers()``).
        strength: In [0, 1], the speckle-preserving blend (0 keeps the input, 1 the full filter).
        batch_size: Frames of equal shape enhanced together.
        overwrite: Re-enhance every input even where outputs exist, also when ``out`` holds
            outputs of other settings.
        progress: Called as ``progress(done, total)`` with counts of inputs.

    Returns:
        An :class:`EnhanceResult`; ``len(enhanced) + len(skipped) + len(failures)`` is the
        number of inputs found.

    Raises:
        ValueError: Unknown ``model`` (the message lists the available ones), ``strength``
            outside [0, 1] or ``batch_size`` < 1.
        InputError: ``input`` is missing or holds no frame files, the manifest is invalid,
            ``out`` is the input's folder or a file, or ``out`` holds outputs of other settings.

    Example:
        >>> import pathlib, tempfile
        >>> from PIL import Image
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> (d / "in" / "a").mkdir(parents=True)
        >>> Image.new("L", (16, 16), 128).save(d / "in" / "a" / "x.png")
        >>> r = enhance_paths(d / "in", d / "out", model="median")
        >>> [p.relative_to(d / "out").as_posix() for p in r.written], r.failures
        (['a/x.png'], [])
        >>> enhance_paths(d / "in", d / "out", model="median").skipped
        ['a/x.png']
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    try:
        enhancer: Enhancer = create_enhancer(model, strength=strength)
    except KeyError as exc:  # the registry's message already lists every available name
        raise ValueError(exc.args[0]) from None
    r = map_frames(
        input,
        out,
        stage="enhance",
        settings=enhancer.settings(),
        process=lambda x: to_uint8(np.asarray(enhancer(x)))[:, 0],
        write=write_png,
        batch_size=batch_size,
        overwrite=overwrite,
        progress=progress,
    )
    return EnhanceResult(r.out, r.written, r.processed, r.skipped, r.failures, r.settings)
