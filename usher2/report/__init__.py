"""Reports: one self-contained HTML file per evaluation (figures embedded, no scripts, no external fetches).

- :func:`write_cohort_report`: the cohort report of an evaluation directory (see
  :mod:`usher2.report.cohort` for its sections and the directory contract).

Example:
    >>> SECTIONS[0]
    '1. Data'
"""

from __future__ import annotations

from usher2.report.cohort import METHOD_FIELDS, SECTIONS, write_cohort_report

__all__ = ["METHOD_FIELDS", "SECTIONS", "write_cohort_report"]
