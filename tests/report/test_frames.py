"""The per-frame report (usher2.report.frames): one HTML file naming the frames, probabilities and flags given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from usher2.io.errors import InputError
from usher2.report.frames import FLAG_TEXT, write_frame_report
from usher2.report.html import escape


def _still(case: str, p: float | None, label: int | None, **flags: bool) -> dict:
    frame = {"frame": 0, "probability": p, "label": label, "low_segmentation_confidence": False, **flags}
    agg = {"n_scored": int(p is not None), "n_frames": 1, "probability": p, "label": label, "rule": "single frame"}
    return {"case_id": case, "kind": "image", "frames": [frame], "aggregate": agg}


def _score_dir(root: Path, inputs: list[dict], failures: list[dict]) -> Path:
    model = {"name": "toy-bundle", "family": "combined", "classifier": "logistic", "threshold": 0.4}
    root.mkdir(parents=True, exist_ok=True)
    (root / "scores.json").write_text(json.dumps({"model": model, "inputs": inputs, "failures": failures}))
    return root


def test_the_report_names_every_frame_probability_flag_and_failure(tmp_path: Path) -> None:
    inputs = [_still("case_a", 0.8125, 1), _still("case_b", None, None, no_lesion=True)]
    root = _score_dir(tmp_path / "s", inputs, [{"case_id": "case_c", "error": "InputError: corrupt"}])
    out = write_frame_report(root, tmp_path / "r.html")
    html = out.read_text()
    assert out == tmp_path / "r.html" and html.lstrip().lower().startswith("<!doctype html>")
    assert "toy-bundle" in html and "0.400" in html  # the bundle and its threshold, to 3 decimals
    assert 'id="case-case_a"' in html and 'id="case-case_b"' in html
    assert "p = 0.812, label 1; flags: -" in html  # f3 rounds half to even: 0.8125 -> 0.812
    assert "p = -, label -; flags: no_lesion" in html
    assert "case_c" in html and "InputError: corrupt" in html
    assert all(escape(text) in html for text in FLAG_TEXT.values())  # the legend, HTML-escaped


def test_no_scored_frame_is_stated_and_a_missing_folder_is_named(tmp_path: Path) -> None:
    root = _score_dir(tmp_path / "s", [_still("case_b", None, None, no_lesion=True)], [])
    html = write_frame_report(root, tmp_path / "r.html").read_text()
    assert "No frame could be scored" in html and "None: every input was read." in html
    with pytest.raises(InputError, match=r"scores\.json: expected scores\.json of a score folder"):
        write_frame_report(tmp_path / "empty", tmp_path / "x.html")
