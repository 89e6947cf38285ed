"""Shared helpers of the evaluate tests: the figure-file check and figure clean-up."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from PIL import Image


def _check_files(base: Path) -> None:
    png, svg = base.with_suffix(".png"), base.with_suffix(".svg")
    assert png.is_file() and svg.is_file()
    with Image.open(png) as im:
        assert im.info["dpi"] == pytest.approx((300, 300), abs=0.01)  # PNG stores pixels per metre
    assert ET.parse(svg).getroot().tag.endswith("svg")


@pytest.fixture
def check_files():
    """``check_files(base)``: BASE.png at 300 dpi and BASE.svg, a parseable SVG."""
    return _check_files


@pytest.fixture
def close():
    figs = []
    yield figs.append
    for f in figs:
        plt.close(f)
