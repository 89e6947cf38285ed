"""ROC figures (usher2.evaluate.roc_plot): PNG and SVG files, the pROC DeLong intervals, the bootstrap band."""

from __future__ import annotations

import pandas as pd

from usher2.evaluate.roc_plot import plot_roc, roc_band


def test_roc_plot_prints_proc_delong_ci(check_files, tmp_path, close, shared_dir):
    d = pd.read_csv(shared_dir / "reference" / "stats" / "pROC_aSAH.csv")  # GPL data: read from ../shared, not vendored
    y = (d["outcome"] == "Poor").astype(int)
    fig = plot_roc(y, {"ndka": d["ndka"], "s100b": d["s100b"]}, path=tmp_path / "roc")
    close(fig)
    check_files(tmp_path / "roc")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "1 - Specificity (false-positive rate)" and ax.get_ylabel().startswith("Sensitivity")
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    # pROC: ndka AUC 0.611958, DeLong CI 0.501245-0.722671; s100b 0.731369, 0.630118-0.832619
    assert texts == ["ndka: AUC 0.612 (95% CI 0.501-0.723)", "s100b: AUC 0.731 (95% CI 0.630-0.833)"]


def test_roc_bootstrap_band(close):
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    fig = plot_roc(y, s, bootstrap_band=True, n_boot=50)
    close(fig)
    assert len(fig.axes[0].collections) == 1  # one shaded band
    grid, lo, hi = roc_band(y, s, n_boot=50)
    assert grid.size == 101 and (lo <= hi).all() and lo.min() >= 0 and hi.max() <= 1
    assert lo[-1] == hi[-1] == 1.0  # every resampled curve ends at (1, 1)
