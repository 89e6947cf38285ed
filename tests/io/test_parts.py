"""The part store (usher2.io.parts): a stable part name, finished parts skipped, failed cases tried again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from usher2.io.parts import finished_parts, part_name, parts_folder, run_parts


def _cases(n: int) -> list[dict[str, str]]:
    return [{"case_id": f"c{k}", "image_sha256": f"i{k}", "mask_sha256": f"m{k}"} for k in range(n)]


def _compute(seen: list[str], fail: str | None = None):
    def compute(chunk: list[dict[str, str]]) -> dict:
        seen.extend(c["case_id"] for c in chunk)
        rows = [{"case_id": c["case_id"], "x": 1.0} for c in chunk if c["case_id"] != fail]
        failures = (
            [{"case_id": fail, "stage": "features", "error": "boom"}] if fail in [c["case_id"] for c in chunk] else []
        )
        return {"rows": rows, "perturbations": [], "failures": failures}

    return compute


def test_part_name_is_the_digest_of_ids_and_hashes() -> None:
    cases = _cases(2)
    expected = hashlib.sha256(b"c0|i0|m0\nc1|i1|m1").hexdigest()[:20]
    assert part_name(cases) == expected == part_name([dict(c) for c in cases])
    assert part_name(cases[::-1]) != expected  # the order is part of the chunk


def test_run_parts_skips_finished_parts_and_retries_failed_cases(tmp_path: Path) -> None:
    folder = parts_folder(tmp_path / "t.parquet", "0123456789abcdef0123", {"a": 1})
    assert folder == tmp_path / "t.parts" / "0123456789abcdef"
    assert json.loads((tmp_path / "t.parts" / "settings.json").read_text()) == {"a": 1}
    seen: list[str] = []
    assert run_parts(_cases(5), folder, 2, _compute(seen, fail="c3")) == 5
    assert seen == ["c0", "c1", "c2", "c3", "c4"]
    assert len(list(folder.glob("*.json"))) == 3  # chunks of 2, 2, 1
    assert sorted(k[0] for k in finished_parts(folder)) == ["c0", "c1", "c2", "c4"]  # c3 failed
    again: list[str] = []
    progress: list[tuple[int, int]] = []
    assert run_parts(_cases(5), folder, 2, _compute(again), progress=lambda d, n: progress.append((d, n))) == 1
    assert again == ["c3"] and progress == [(4, 5), (5, 5)]
    rows = pd.read_parquet(folder / f"{part_name([_cases(5)[3]])}.rows.parquet")
    assert rows["case_id"].tolist() == ["c3"]
