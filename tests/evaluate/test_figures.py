"""Figure style and saving (usher2.evaluate.figures): PNG at 300 dpi of the size asked, SVG beside it,
reproducible bytes, and the style confined to its block."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pytest
from PIL import Image

from usher2.evaluate.figures import COLORS, DPI, FORMATS, PALETTE, figure_style, label_and_save, save_figure
from usher2.io.errors import InputError


@pytest.fixture
def fig():
    f, ax = plt.subplots(figsize=(2.0, 1.5))
    ax.plot([0, 1], [0, 1], label="model")
    yield f
    plt.close(f)


def test_the_png_has_the_size_asked_at_300_dpi(tmp_path: Path, fig) -> None:
    # outside figure_style there is no tight bounding box: the canvas is figsize * dpi
    paths = save_figure(fig, tmp_path / "roc.png")
    assert [p.name for p in paths] == ["roc.png", "roc.svg"] and FORMATS == ("png", "svg")
    with Image.open(paths[0]) as im:
        assert im.format == "PNG"
        assert im.size == (round(2.0 * DPI), round(1.5 * DPI)) == (600, 450)
        assert im.info["dpi"] == pytest.approx((DPI, DPI), abs=0.01)
        assert "Software" not in im.info  # no matplotlib version stamp: the bytes do not depend on it
    assert paths[1].read_text().lstrip().startswith("<?xml")


def test_the_suffix_is_replaced_or_kept_and_folders_are_made(tmp_path: Path, fig) -> None:
    assert [p.name for p in save_figure(fig, tmp_path / "a.svg", formats=("pdf",))] == ["a.pdf"]
    assert (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF")
    # a suffix that is not a figure format is part of the name
    got = save_figure(fig, tmp_path / "sub" / "dir" / "roc.v2", formats=("png",))
    assert got == [tmp_path / "sub" / "dir" / "roc.v2.png"] and got[0].is_file()
    assert sorted(p.name for p in (tmp_path / "sub" / "dir").iterdir()) == ["roc.v2.png"]  # no temporary left


def test_an_unknown_format_is_refused_naming_it(tmp_path: Path, fig) -> None:
    with pytest.raises(InputError, match=r"^formats: expected png, svg or pdf, got 'jpg'"):
        save_figure(fig, tmp_path / "roc", formats=("png", "jpg"))


def test_the_same_figure_gives_the_same_bytes(tmp_path: Path) -> None:
    def draw(path: Path) -> list[bytes]:
        with figure_style():
            f, ax = plt.subplots()
            ax.plot([0, 0.5, 1], [0, 0.8, 1], color=COLORS["model"], label="model")
            label_and_save(f, ax, ("1 - specificity", "sensitivity", "ROC"), "lower right", path)
            plt.close(f)
        return [p.read_bytes() for p in (path.with_suffix(".png"), path.with_suffix(".svg"))]

    assert draw(tmp_path / "a" / "roc") == draw(tmp_path / "b" / "roc")


def test_figure_style_applies_inside_and_restores_after() -> None:
    before = dict(matplotlib.rcParams)
    with figure_style():
        assert matplotlib.rcParams["savefig.dpi"] == DPI
        assert matplotlib.rcParams["axes.spines.top"] is False
        assert matplotlib.rcParams["axes.prop_cycle"].by_key()["color"] == list(PALETTE)
    assert dict(matplotlib.rcParams) == before


def test_label_and_save_names_the_axes_and_places_the_legend(tmp_path: Path, fig) -> None:
    ax = fig.axes[0]
    label_and_save(fig, ax, ("x", "y", "title"), "upper left", None)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("x", "y", "title")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["model"]
    assert list(tmp_path.iterdir()) == []  # no path: nothing written
    label_and_save(fig, ax, ("x", "y", "title"), "upper left", tmp_path / "f.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "f.svg"]


def test_colour_roles_are_colour_blind_safe_palette_entries() -> None:
    assert COLORS["model"] == COLORS["negative"] == PALETTE[0] == "#0072B2"
    assert COLORS["positive"] == PALETTE[1] == "#D55E00"
    assert len(set(PALETTE)) == len(PALETTE) == 8
