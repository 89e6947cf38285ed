"""HTML helpers of the reports (usher2.report.html): number formats and escaped tables."""

from __future__ import annotations

import math

from usher2.report.html import ci_text, escape, f3, fmt_p, table


def test_number_formats() -> None:
    assert (f3(0.81249), f3(None), f3(math.nan)) == ("0.812", "n/a", "n/a")
    assert (fmt_p(0.00001), fmt_p(0.04321), fmt_p(0.001)) == ("<0.001", "0.043", "0.001")
    assert ci_text(0.8123, 0.64, 0.9171) == "0.812 (0.640-0.917)"


def test_tables_escape_their_cells() -> None:
    html = table(["a", "b<"], [["<x>", 1.5]], num={1})
    assert html == (
        "<table><thead><tr><th>a</th><th>b&lt;</th></tr></thead>"
        "<tbody><tr><td>&lt;x&gt;</td><td class=num>1.5</td></tr></tbody></table>"
    )
    assert escape('"&') == "&quot;&amp;"
