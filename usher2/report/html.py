"""Small HTML helpers shared by the reports: one style, escaping, tables and embedded PNGs."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import numpy as np

_DPI = 100
CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums}.meta{color:#555}
.fail{background:#fff4e5;border-left:4px solid #e69f00;padding:.4em .8em}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}figcaption{font-size:.85em;color:#444}
img{max-width:100%;height:auto}.cams figure img{width:220px}
"""


def escape(x: Any) -> str:
    return html.escape(str(x), quote=True)


def f3(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{float(x):.3f}"


def fmt_p(p: float) -> str:
    """A p-value as printed in the report.

    Example:
        >>> fmt_p(0.00001), fmt_p(0.04321)
        ('<0.001', '0.043')
    """
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def ci_text(value: float, lo: float, hi: float) -> str:
    """A value with its CI as printed, e.g. ``0.812 (0.640-0.917)``."""
    return f"{f3(value)} ({f3(lo)}-{f3(hi)})"


def table(header: list[str], rows: list[list[Any]], num: set[int] | None = None) -> str:
    num = num or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if j in num else ''}>{escape(c)}</td>" for j, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def document(title: str, body: str) -> str:
    """A whole HTML page: the report style inline, ``title`` as its title and heading, then ``body``.

    Example:
        >>> document("A & B", "<p>x</p>").endswith("<h1>A &amp; B</h1><p>x</p></body></html>\\n")
        True
    """
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n"
    )


def fail(text: str) -> str:
    return f'<p class="fail">{escape(text)}</p>'


def png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def fig_uri(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)
    return png_uri(buf.getvalue())


def figure(uri: str, caption: str) -> str:
    return f'<figure><img src="{uri}" alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'


def rgb_uri(rgb: np.ndarray, max_side: int = 320) -> str:
    """An RGB uint8 image as a PNG data URI, shrunk to at most ``max_side`` pixels (keeps the report small)."""
    import cv2

    scale = max_side / max(rgb.shape[:2])
    if scale < 1:
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("could not encode a PNG")
    return png_uri(buf.tobytes())
