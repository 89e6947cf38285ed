"""Intraclass correlation (Shrout & Fleiss 1979; McGraw & Wong 1996), vectorised over features.

A table of ``n`` subjects (rows) by ``k`` raters or repeated measurements (columns) gives the
two-way ANOVA mean squares

* ``MSR`` between subjects, ``MSC`` between raters, ``MSE`` residual, and the one-way ``MSW``
  within subjects (``(SSC + SSE) / (n (k - 1))``);

and the six forms

=========  ==========================================  ==================================================
form       model                                       formula
=========  ==========================================  ==================================================
ICC(1,1)   one-way random, single measure              (MSR - MSW) / (MSR + (k-1) MSW)
ICC(2,1)   two-way random, absolute agreement, single  (MSR - MSE) / (MSR + (k-1) MSE + k (MSC - MSE) / n)
ICC(3,1)   two-way mixed, consistency, single          (MSR - MSE) / (MSR + (k-1) MSE)
ICC(1,k)   one-way random, average of k                (MSR - MSW) / MSR
ICC(2,k)   two-way random, absolute, average of k      (MSR - MSE) / (MSR + (MSC - MSE) / n)
ICC(3,k)   two-way mixed, consistency, average of k    (MSR - MSE) / MSR
=========  ==========================================  ==================================================

F is ``MSR / MSE`` for the two-way forms and ``MSR / MSW`` for the one-way forms. A feature with
no variance at all gives NaN (its ICC is undefined), never a division warning.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ICC_FORMS", "icc", "icc_columns"]

ICC_FORMS = ("ICC(1,1)", "ICC(2,1)", "ICC(3,1)", "ICC(1,k)", "ICC(2,k)", "ICC(3,k)")
_ALIASES = {f.replace("ICC", "").strip("()").replace(",", ""): f for f in ICC_FORMS}  # "21" -> "ICC(2,1)"


def _form(form: str) -> str:
    f = str(form).upper().replace(" ", "")
    if f in ICC_FORMS:
        return f
    key = f.replace("ICC", "").strip("()").replace(",", "").lower()
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(f"ICC form must be one of {ICC_FORMS}, got {form!r}")


def icc_columns(values: np.ndarray, form: str = "ICC(3,1)") -> tuple[np.ndarray, np.ndarray]:
    """ICC and F of many features at once.

    Args:
        values: ``(n_subjects, k_raters, n_features)`` array, complete (no NaN).
        form: One of :data:`ICC_FORMS` (``"ICC(2,1)"``, ``"2,1"`` and ``"21"`` all work).

    Returns:
        ``(icc, F)``, each ``(n_features,)``; NaN where a feature has no variance.

    Raises:
        ValueError: Fewer than 2 subjects or raters, NaN values, or an unknown form.
    """
    form = _form(form)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    n, k = x.shape[0], x.shape[1]
    if n < 2 or k < 2:
        raise ValueError(f"ICC needs at least 2 subjects and 2 raters, got {n} x {k}")
    if not np.isfinite(x).all():
        raise ValueError("ICC values must be finite (drop subjects with a missing rating first)")
    grand = x.mean(axis=(0, 1))
    ssr = k * ((x.mean(axis=1) - grand) ** 2).sum(axis=0)
    ssc = n * ((x.mean(axis=0) - grand) ** 2).sum(axis=0)
    sst = ((x - grand) ** 2).sum(axis=(0, 1))
    sse = np.maximum(sst - ssr - ssc, 0.0)
    msr, msc = ssr / (n - 1), ssc / (k - 1)
    mse = sse / ((n - 1) * (k - 1))
    msw = (ssc + sse) / (n * (k - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        num_two, num_one = msr - mse, msr - msw
        table = {
            "ICC(1,1)": (num_one / (msr + (k - 1) * msw), msr / msw),
            "ICC(2,1)": (num_two / (msr + (k - 1) * mse + k * (msc - mse) / n), msr / mse),
            "ICC(3,1)": (num_two / (msr + (k - 1) * mse), msr / mse),
            "ICC(1,k)": (num_one / msr, msr / msw),
            "ICC(2,k)": (num_two / (msr + (msc - mse) / n), msr / mse),
            "ICC(3,k)": (num_two / msr, msr / mse),
        }
        value, f = table[form]
    constant = sst <= 1e-12 * np.maximum(1.0, np.abs(grand)) ** 2
    value = np.where(constant, np.nan, value)
    return value.astype(np.float64), np.where(constant, np.nan, f)


def icc(table: np.ndarray, form: str = "ICC(3,1)") -> dict[str, float]:
    """ICC of one ``(n_subjects, k_raters)`` table.

    Example (Shrout & Fleiss 1979, Table 2: 6 subjects, 4 judges):
        >>> t = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
        >>> round(icc(t, "ICC(2,1)")["icc"], 6), round(icc(t, "ICC(3,1)")["icc"], 6)
        (0.289764, 0.714841)
    """
    value, f = icc_columns(np.asarray(table, dtype=np.float64)[:, :, None], form)
    return {"form": _form(form), "icc": float(value[0]), "F": float(f[0])}
