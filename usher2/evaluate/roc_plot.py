"""ROC curves of one or more scores, with the DeLong CI of each AUC in the legend.

The curve is the empirical ROC (``sklearn.metrics.roc_curve``: every distinct score is a threshold,
a case is positive when ``score >= threshold``). The legend gives ``AUC (95% CI)`` from
:func:`usher2.evaluate.roc.roc_auc_ci` (DeLong, as R pROC). The optional band is a pointwise
percentile interval of the sensitivity at each false-positive rate over stratified bootstrap
resamples (cases resampled within each class, seeded), as pROC's ``ci.se``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from usher2.evaluate._checks import check_binary
from usher2.evaluate.roc import roc_auc_ci
from usher2.io.errors import InputError

__all__ = ["plot_roc", "roc_band"]


def _tpr_on_grid(y: np.ndarray, s: np.ndarray, grid: np.ndarray) -> np.ndarray:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    return np.interp(grid, fpr, tpr)  # fpr is non-decreasing; at a vertical step the upper value is kept


def roc_band(
    y: object, score: object, n_boot: int = 500, alpha: float = 0.05, seed: int = 0, n_grid: int = 101
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise bootstrap interval of sensitivity on a grid of false-positive rates.

    Returns ``(fpr_grid, low, high)``.

    Example:
        >>> fpr, lo, hi = roc_band([0, 0, 0, 1, 1, 1], [0.1, 0.4, 0.3, 0.35, 0.8, 0.9], n_boot=50)
        >>> float(fpr[0]), float(fpr[-1]), bool((lo <= hi).all())
        (0.0, 1.0, True)
    """
    yy, (s,) = check_binary(y, score, names=["score"])
    if int(n_boot) < 10:
        raise InputError("n_boot", "at least 10 bootstrap resamples", repr(n_boot))
    if not 0 < float(alpha) < 1:
        raise InputError("alpha", "a value strictly between 0 and 1", repr(alpha))
    grid = np.linspace(0.0, 1.0, int(n_grid))
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(yy == 1), np.flatnonzero(yy == 0)
    curves = np.empty((int(n_boot), grid.size))
    lab = np.concatenate([np.ones(pos.size, dtype=int), np.zeros(neg.size, dtype=int)])
    for b in range(int(n_boot)):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        curves[b] = _tpr_on_grid(lab, s[idx], grid)
    lo, hi = np.percentile(curves, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return grid, lo, hi


def plot_roc(
    y: object,
    scores: Mapping[str, object] | object,
    path: str | Path | None = None,
    alpha: float = 0.05,
    bootstrap_band: bool = False,
    n_boot: int = 500,
    seed: int = 0,
    title: str | None = None,
) -> Any:
    """ROC curve of each score, AUC with DeLong CI in the legend; optional bootstrap band.

    Args:
        y: 0/1 outcomes.
        scores: A mapping name -> score, or one score (named "Model").
        path: Where to save (PNG at 300 dpi and SVG); nothing is saved when ``None``.
        alpha: Two-sided miss rate of the AUC CIs and the band.
        bootstrap_band: Shade a pointwise bootstrap interval of each curve.
        n_boot: Bootstrap resamples of the band.
        seed: Bootstrap seed.
        title: Axes title (default "ROC curve").

    Example:
        >>> import matplotlib.pyplot as plt
        >>> fig = plot_roc([0, 0, 1, 1, 0, 1], {"A": [0.1, 0.4, 0.35, 0.8, 0.2, 0.7]})
        >>> fig.axes[0].get_legend().get_texts()[0].get_text()
        'A: AUC 0.889 (95% CI 0.581-1.000)'
        >>> plt.close(fig)
    """
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    from usher2.evaluate.figures import COLORS, PALETTE, figure_style, label_and_save

    models = {str(k): v for k, v in scores.items()} if isinstance(scores, Mapping) else {"Model": scores}
    if not models:
        raise InputError("scores", "at least one score", "an empty mapping")
    checked = check_binary(y, *models.values(), names=list(models))
    yy, arrays = checked
    level = round(100 * (1 - float(alpha)))
    with figure_style():
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1], ls="--", lw=1, color=COLORS["reference"], label="_chance")
        for i, (name, s) in enumerate(zip(models, arrays, strict=True)):
            color = PALETTE[i % len(PALETTE)]
            r = roc_auc_ci(yy, s, alpha=alpha)
            fpr, tpr, _ = roc_curve(yy, s)
            label = f"{name}: AUC {r.auc:.3f} ({level}% CI {r.ci_low:.3f}-{r.ci_high:.3f})"
            ax.plot(fpr, tpr, color=color, label=label, drawstyle="default")
            if bootstrap_band:
                grid, lo, hi = roc_band(yy, s, n_boot=n_boot, alpha=alpha, seed=seed)
                ax.fill_between(grid, lo, hi, color=color, alpha=0.15, lw=0)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        labels = ("1 - Specificity (false-positive rate)", "Sensitivity (true-positive rate)", title or "ROC curve")
        label_and_save(fig, ax, labels, "lower right", path)
    return fig
