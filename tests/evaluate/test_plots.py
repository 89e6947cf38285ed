"""Figures: PNG at 300 dpi plus a parseable SVG, labelled axes, and the numbers they print."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from usher2.evaluate.calibration import plot_calibration
from usher2.evaluate.dca import plot_decision_curve
from usher2.evaluate.roc_plot import plot_roc, roc_band
from usher2.evaluate.survival import plot_kaplan_meier


def check_files(base: Path) -> None:
    png, svg = base.with_suffix(".png"), base.with_suffix(".svg")
    assert png.is_file() and svg.is_file()
    with Image.open(png) as im:
        assert im.info["dpi"] == pytest.approx((300, 300), abs=0.01)  # PNG stores pixels per metre
    assert ET.parse(svg).getroot().tag.endswith("svg")


@pytest.fixture
def close():
    figs = []
    yield figs.append
    for f in figs:
        plt.close(f)


def test_roc_plot_prints_proc_delong_ci(tmp_path, close, shared_dir):
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


def test_calibration_plot(tmp_path, close):
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


def test_decision_curve_plot(tmp_path, close):
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


def test_kaplan_meier_plot(tmp_path, close):
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
