"""Figures: PNG at 300 dpi plus a parseable SVG, labelled axes, and the numbers they print."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from usher2.evaluate.calibration import plot_calibration
from usher2.evaluate.dca import plot_decision_curve
from usher2.evaluate.survival import plot_kaplan_meier


def test_calibration_plot(check_files, tmp_path, close):
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, 200)
    y = (rng.uniform(size=200) < p).astype(int)
    fig = plot_calibration(y, {"model": p}, n_bins=5, path=tmp_path / "cal.png")
    close(fig)
    check_files(tmp_path / "cal")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Predicted probability" and ax.get_ylabel().startswith("Observed proportion")
    assert ax.get_title() == "Calibration (5 quantile bins)"
    assert "slope" in ax.get_legend().get_texts()[1].get_text()


def test_decision_curve_plot(check_files, tmp_path, close):
    d = pd.read_csv(Path(__file__).resolve().parents[1] / "data" / "reference" / "stats" / "dcurves_df_binary.csv")
    fig = plot_decision_curve(d["cancer"].astype(int), {"marker": d["cancerpredmarker"]}, path=tmp_path / "dca")
    close(fig)
    check_files(tmp_path / "dca")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Threshold probability", "Net benefit")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["marker", "Treat All", "Treat None"]
    assert ax.get_ylim()[0] == pytest.approx(-0.25 * 0.14)  # a quarter of the prevalence below 0
    treat_all = ax.get_lines()[1]
    assert treat_all.get_ydata()[9] == pytest.approx(0.04444444444444445, abs=1e-12)  # dcurves, threshold 0.10


def test_kaplan_meier_plot(check_files, tmp_path, close):
    fig = plot_kaplan_meier(
        [10, 20, 30, 10, 20, 50],
        [1, 0, 1, 1, 0, 1],
        ["low", "low", "low", "high", "high", "high"],
        path=tmp_path / "km",
    )
    close(fig)
    check_files(tmp_path / "km")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Time", "Survival probability")
    assert ax.get_title() == "Kaplan-Meier (log-rank p = 0.535)"  # R survdiff: p = 0.535143
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["high (n = 3)", "low (n = 3)"]
