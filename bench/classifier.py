"""Batch-1 latency of the classifier step: a fitted fusion model's ``predict_proba`` against its compiled form.

Usage:
    python bench/classifier.py [--rows 160] [--calls 200] [--classifiers lr rf xgboost lightgbm svm mlp late]

A seeded feature table of 1,474 columns (471 radiomics, 1,000 deep from two backbones, 3 clinical) with
planted signals and a few NaN cells. Each classifier is fitted in early fusion as ``usher2 fit`` fits
a bundle's model (:func:`usher2.fusion.cv.fit_final`: the first point of its grid, the registry's
sizes, sigmoid calibration), and ``late`` is the late-fusion model, calibrated the same way.

Prints a markdown table: the columns the compiled form reads, then the median of ``--calls`` batch-1
calls of ``model.predict_proba`` on a one-row DataFrame of all 1,474 columns (what
``Bundle.predict_proba`` does today), of :meth:`~usher2.fusion.compiled.CompiledModel.predict_proba` on
the same DataFrames and on a NumPy row of only its columns, the speed-up on the DataFrame, and the
largest |difference| between the two over every row of the table. Every call gets a new DataFrame (a
new columns Index), as a scorer builds one per frame, so no lookup is reused between calls.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from usher2.fusion.compiled import compile_model
from usher2.fusion.cv import fit_final
from usher2.fusion.models import CLASSIFIERS, build_model, family_columns

CLINICAL = ["age", "er", "grade"]


def feature_table(rows: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """``rows`` cases x 1,474 columns, seeded, with a signal in a few columns of every source."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], rows // 2)
    radiomics = [f"radiomics_original_f{i:03d}" for i in range(471)]
    deep = [f"deep_{bb}_{i:04d}" for bb in ("usresnet10t", "resnet50") for i in range(500)]
    X = pd.DataFrame(rng.normal(size=(rows, 1474)), columns=radiomics + deep + CLINICAL)
    X.index = [f"case_{i:04d}" for i in range(rows)]
    for col, effect in [(radiomics[0], 1.2), (radiomics[7], 0.8), (deep[3], 1.0), (deep[600], 0.8), ("age", 0.5)]:
        X[col] += effect * y
    X.loc[X.index[::13], radiomics[0]] = np.nan
    return X, y


def fit(X: pd.DataFrame, y: np.ndarray, name: str) -> Any:
    """A bundle's model: ``name`` in early fusion (``late``: late fusion), fit_final with sigmoid calibration."""
    cols = family_columns(X.columns, "combined", clinical=CLINICAL)
    late = name == "late"
    model, grid = build_model(cols, "lr" if late else name, fusion="late" if late else "early")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted, _ = fit_final(model, {k: v[:1] for k, v in grid.items()}, X, y, calibration="sigmoid")
    return fitted


def median_ms(fn: Callable[[Any], Any], inputs: list[Any]) -> float:
    """Median wall time in ms of ``fn(x)`` over ``inputs``, after 5 warm-up calls."""
    for x in inputs[:5]:
        fn(x)
    times = []
    for x in inputs:
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=160)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--classifiers", nargs="+", default=[*CLASSIFIERS, "late"])
    a = ap.parse_args()
    X, y = feature_table(a.rows)
    # a new one-row DataFrame (and columns Index) for every call, as a scorer builds one per frame
    frames = [pd.DataFrame(X.iloc[[i % len(X)]].to_numpy(), columns=list(X.columns)) for i in range(a.calls)]
    print(f"Feature table: {X.shape[0]} rows x {X.shape[1]} columns; batch 1, median of {a.calls} calls.\n")
    print(
        "| model | compiled | columns read | model.predict_proba (ms) | compiled, DataFrame (ms) "
        "| compiled, NumPy row (ms) | speed-up | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in a.classifiers:
        model = fit(X, y, name)
        fast = compile_model(model, X.columns)
        rows = [f[fast.columns].to_numpy() for f in frames]
        slow_ms = median_ms(model.predict_proba, frames)
        fast_ms = median_ms(fast.predict_proba, frames)
        row_ms = median_ms(fast.predict_proba, rows)
        diff = np.abs(fast.predict_proba(X) - model.predict_proba(X)[:, 1]).max()
        label = name if name == "late" else f"{name} (early)"
        print(
            f"| {label} | {'yes' if fast.compiled else 'no: ' + fast.reason} | {len(fast.columns)} / {fast.n_inputs} "
            f"| {slow_ms:.2f} | {fast_ms:.3f} | {row_ms:.3f} | {slow_ms / fast_ms:.0f}x | {diff:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
