"""One look for every figure, and one way to save it: PNG at 300 dpi plus SVG, written atomically.

Every plotting function in usher2 draws inside :func:`figure_style` and saves with
:func:`save_figure`, so a report's figures share fonts, line widths, colours and size.

Example:
    >>> import matplotlib.pyplot as plt
    >>> with figure_style():
    ...     fig, ax = plt.subplots()
    ...     _ = ax.plot([0, 1], [0, 1], color=COLORS["model"])
    >>> plt.close(fig)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# No backend switch here: matplotlib picks Agg where there is no display (servers, CI) and the
# inline backend in Jupyter, so figures still show in notebooks.
import matplotlib
import matplotlib.pyplot as plt

from usher2.io.atomic import atomic_path
from usher2.io.errors import InputError

__all__ = ["COLORS", "FORMATS", "PALETTE", "figure_style", "label_and_save", "save_figure"]

FORMATS = ("png", "svg")
DPI = 300
# Colour-blind-safe (Okabe-Ito); fixed roles so a model keeps its colour across figures.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
COLORS = {
    "model": PALETTE[0],
    "positive": PALETTE[1],
    "negative": PALETTE[0],
    "reference": "#7F7F7F",
    "treat_all": "#4D4D4D",
    "treat_none": "#000000",
}
_RC: dict[str, Any] = {
    "figure.figsize": (4.5, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=list(PALETTE)),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.5,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "svg.fonttype": "none",  # text stays text in the SVG (editable for journals)
    "svg.hashsalt": "usher2",  # stable element ids: the same figure gives the same SVG
}


@contextmanager
def figure_style() -> Iterator[None]:
    """Matplotlib settings of every usher2 figure (a context manager; the global settings are restored)."""
    with plt.rc_context(_RC):
        yield


def save_figure(fig: Any, path: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Save ``fig`` as ``path`` with each suffix in ``formats`` (PNG at 300 dpi; SVG), atomically.

    ``path``'s own suffix, if any, is replaced. Returns the written paths.

    Raises:
        InputError: An unknown format.

    Example:
        >>> import tempfile
        >>> fig, ax = plt.subplots(); _ = ax.plot([0, 1])
        >>> with tempfile.TemporaryDirectory() as d:
        ...     [p.name for p in save_figure(fig, Path(d) / "roc.png")]
        ['roc.png', 'roc.svg']
        >>> plt.close(fig)
    """
    base = Path(path)
    base = base.with_suffix("") if base.suffix.lower() in (".png", ".svg", ".pdf") else base
    out = []
    for fmt in formats:
        if fmt not in ("png", "svg", "pdf"):
            raise InputError("formats", "png, svg or pdf", repr(fmt))
        target = base.parent / f"{base.name}.{fmt}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            meta = {"Software": None} if fmt == "png" else {"Date": None} if fmt == "svg" else None
            fig.savefig(os.fspath(tmp), format=fmt, dpi=DPI, metadata=meta)
        out.append(target)
    return out


def label_and_save(fig: Any, ax: Any, labels: tuple[str, str, str], legend: str, path: str | Path | None) -> None:
    """Name both axes and title the plot (``labels``: x, y, title), place the legend at ``legend``
    and save ``fig`` when ``path`` is set.

    The last steps of every usher2 curve figure, in this order; call it inside :func:`figure_style`.

    Example:
        >>> fig, ax = plt.subplots(); _ = ax.plot([0, 1], label="a")
        >>> label_and_save(fig, ax, ("x", "y", "t"), "upper left", None)
        >>> ax.get_title()
        't'
        >>> plt.close(fig)
    """
    xlabel, ylabel, title = labels
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc=legend)
    if path is not None:
        save_figure(fig, path)
