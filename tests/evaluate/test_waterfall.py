"""Waterfall plot: cases sorted by score, bars measured from the cut-off, coloured by label."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from usher2.evaluate.figures import COLORS
from usher2.evaluate.waterfall import plot_waterfall, waterfall_table
from usher2.io.errors import InputError


def test_table_order_and_heights():
    score = pd.Series([0.3, -1.2, 2.0, 0.3, 0.9], index=["a", "b", "c", "d", "e"])
    y = [1, 0, 1, 0, 1]
    table = waterfall_table(score, y, threshold=0.5)
    assert table["case"].tolist() == ["c", "e", "a", "d", "b"]  # descending; the tie a/d keeps input order
    np.testing.assert_allclose(table["height"], [1.5, 0.4, -0.2, -0.2, -1.7])
    assert table["label"].tolist() == [1, 1, 1, 0, 0]
    assert table["rank"].tolist() == [0, 1, 2, 3, 4]
    # no threshold: heights are the scores themselves (a Radscore cut at 0); arrays give positions
    plain = waterfall_table(np.array([0.1, 0.4]), np.array([False, True]))
    assert plain["case"].tolist() == [1, 0] and plain["height"].tolist() == [0.4, 0.1]


def test_bad_input():
    with pytest.raises(InputError, match="one label per score"):
        waterfall_table([1, 2], [0])
    with pytest.raises(InputError, match="0/1"):
        waterfall_table([1, 2], [0, 2])
    with pytest.raises(InputError, match="finite"):
        waterfall_table([1, np.nan], [0, 1])


def test_plot_colours_bars_by_label_and_saves(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    score = rng.normal(size=40) + y
    fig, table = plot_waterfall(score, y, threshold=0.4, path=tmp_path / "waterfall", score_name="Radscore")
    bars = fig.axes[0].patches
    assert len(bars) == 40
    np.testing.assert_allclose([b.get_height() for b in bars], np.sort(score)[::-1] - 0.4)
    expected = [COLORS["positive"] if v else COLORS["negative"] for v in table["label"]]
    assert [to_hex(b.get_facecolor()).upper() for b in bars] == [c.upper() for c in expected]
    assert fig.axes[0].get_ylabel() == "Radscore - cut-off (0.4)"
    plt.close(fig)
    assert (tmp_path / "waterfall.png").stat().st_size > 0 and (tmp_path / "waterfall.svg").exists()
