"""EvaluationSummary: the one writer and reader of an evaluation directory's summary.json."""

from __future__ import annotations

import json

import pytest

from usher2.evaluate.summary import SUMMARY_FORMAT, CohortCounts, EvaluationSummary, predictions_table
from usher2.io.errors import InputError


def _summary() -> EvaluationSummary:
    return EvaluationSummary(
        title="t",
        primary_model="dlr",
        cohort={"train": CohortCounts.from_labels(["a", "a", "b", "c"], [1, 0, None, 1])},
        methods={"data": "simulated"},
        bundles={"dlr": "bundles/dlr"},
        oracle_auc={"dlr": 0.8},
        config={"seed": 7},
    )


def test_counts_are_derived_from_the_labels():
    # 4 cases of 3 patients, labels 1, 0, missing, 1
    assert CohortCounts.from_labels(["a", "a", "b", "c"], [1, 0, None, 1]) == CohortCounts(4, 3, 2, 1)


def test_write_then_read_gives_the_same_record(tmp_path):
    s = _summary()
    path = s.write(tmp_path)
    assert json.loads(path.read_text())["format"] == SUMMARY_FORMAT
    assert EvaluationSummary.read(tmp_path) == s


def test_a_summary_without_format_is_read_as_format_0(tmp_path):
    doc = _summary().to_dict()
    del doc["format"]
    (tmp_path / "summary.json").write_text(json.dumps(doc))
    assert EvaluationSummary.read(tmp_path) == _summary()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methds": {}}, "unknown ['methds']"),
        ({"cohort": {"test": {"n": 3, "cases": 2}}}, "unknown ['cases']"),
        ({"cohort": {"test": {"n": 2.5}}}, "cohort['test']['n'] as a count"),
        ({"bundles": ["x"]}, "'bundles' as a JSON object"),
        ({"format": SUMMARY_FORMAT + 1}, "upgrade usher2"),
    ],
)
def test_a_bad_field_is_named(tmp_path, change, message):
    (tmp_path / "summary.json").write_text(json.dumps({**_summary().to_dict(), **change}))
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(")):
        EvaluationSummary.read(tmp_path)


def test_predictions_rows():
    df = predictions_table("m", "test", [3, 4], ["p", "q"], [0, 1], [0.25, 0.75])
    assert df.to_dict(orient="list") == {
        "case_id": ["3", "4"],
        "patient_id": ["p", "q"],
        "label": [0, 1],
        "model": ["m", "m"],
        "split": ["test", "test"],
        "probability": [0.25, 0.75],
    }
