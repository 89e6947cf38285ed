"""``usher2 score`` to a table (usher2.score.table): its columns and an ``out`` that is no CSV (full scoring is
tested in tests/test_cli_fit.py and tests/score/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from usher2.io.errors import InputError
from usher2.score.table import SCORE_COLUMNS, score_inputs


def test_score_columns_are_the_documented_ones_in_order() -> None:
    assert SCORE_COLUMNS == [
        "case_id",
        "probability",
        "label",
        "threshold",
        "no_lesion",
        "low_segmentation_confidence",
        "mask_uncertainty",
        "clinical_missing",
        "clinical_out_of_range",
    ]
    import usher2.score.table as table

    for column in SCORE_COLUMNS:  # each is explained in the module docstring's table
        assert f"``{column}``" in table.__doc__


def test_an_out_that_is_not_csv_is_named_before_anything_is_read(tmp_path: Path) -> None:
    with pytest.raises(
        InputError, match=r"scores\.parquet: expected a scores file ending in \.csv, got 'scores\.parquet'"
    ):
        score_inputs(tmp_path / "no-such-input", tmp_path / "no-such-bundle", tmp_path / "scores.parquet")
