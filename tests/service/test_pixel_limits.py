"""The service under the pixel bombs of issue 22 §2: 413 from the header, fast, in bounded memory.

The model is never reached for a refused upload, so a stand-in scorer keeps these tests cheap;
the memory test runs the app (with ``TestClient``) in a fresh process and measures its peak RSS
while it answers the three bombs one after another and then two at once.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from usher2.io import InputError
from usher2.io.limits import MAX_FRAME_PIXELS
from usher2.service import create_app

sys.path.insert(0, str(Path(__file__).parents[1] / "io"))  # tests/io is no package ("io" is taken)
from bombs import deflated_dicom_bomb, grey_png_bomb, peak_rss_growth_mb, png_zeros, rgb_png_bomb, write

ERROR_KEYS = {"detail", "field", "expected", "got", "fix", "request_id"}
GROWTH_MB = 200  # the "done when"

BOMBS = {
    # name: (builder, upload name, "RxC", pixels)
    "grey_png": (grey_png_bomb, "bomb.png", "12000x12000", 144_000_000),
    "rgb_png": (rgb_png_bomb, "bomb.png", "13000x13000", 169_000_000),
    "deflated_dicom": (deflated_dicom_bomb, "bomb.dcm", "20000x20000", 400_000_000),
}


class StandInScorer:
    """Has what ``create_app`` needs; scores every frame 0.5 and counts calls."""

    def __init__(self) -> None:
        self.model_info: dict[str, Any] = {"name": "stand-in", "version": "0", "sha256": "0" * 64, "clinical": []}
        self.calls = 0

    def score_frame(self, frame: Any, clinical: Any = None, **kw: Any) -> Any:
        self.calls += 1
        return SimpleNamespace(
            probability=0.5,
            label=1,
            threshold=0.5,
            flags=lambda: [],
            error=None,
            mask_uncertainty=None,
            pixels=None,
            mask=None,
            heat=None,
            no_lesion=False,
            seconds={},
        )


def _post(client: TestClient, data: bytes, name: str) -> Any:
    return client.post("/v1/score", files={"file": (name, data, "application/octet-stream")})


@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb_upload_gets_413_within_a_second(name: str) -> None:
    build, upload, dims, pixels = BOMBS[name]
    data = build()
    scorer = StandInScorer()
    client = TestClient(create_app(scorer, token=""))
    t0 = time.perf_counter()
    r = _post(client, data, upload)
    seconds = time.perf_counter() - t0
    assert r.status_code == 413, r.text
    body = r.json()
    assert set(body) == ERROR_KEYS and body["request_id"] == r.headers["x-request-id"]
    assert body["field"] == "file"
    assert f"at most {MAX_FRAME_PIXELS:,} pixels (64 megapixels" in body["expected"]
    assert body["got"] == f"{dims} (rows x columns) = {pixels:,} pixels ({pixels / 2**20:.1f} megapixels)"
    assert "--max-megapixels" in body["fix"] and "/tmp" not in r.text  # the temporary path is not shown
    assert scorer.calls == 0
    assert seconds < 1.0, f"{name}: answered in {seconds:.2f} s"


def test_limit_is_configurable_and_a_frame_at_it_is_scored() -> None:
    scorer = StandInScorer()
    client = TestClient(create_app(scorer, token="", max_megapixels=0.01))  # int(0.01 * 2**20) = 10,485 pixels
    r = _post(client, png_zeros(102, 102), "ok.png")  # 10,404 pixels
    assert r.status_code == 200, r.text
    assert r.json()["frame"]["height"] == 102 and scorer.calls == 1
    r = _post(client, png_zeros(102, 103), "over.png")  # 10,506 pixels
    assert r.status_code == 413 and "at most 10,485 pixels" in r.json()["expected"], r.text
    assert scorer.calls == 1


@pytest.mark.parametrize("bad", [0, -2.0, float("nan")])
def test_bad_max_megapixels_is_refused_at_startup(bad: float) -> None:
    with pytest.raises(InputError, match="max_megapixels: expected a number of megapixels > 0"):
        create_app(StandInScorer(), max_megapixels=bad)


def test_service_memory_stays_bounded_under_the_bombs(tmp_path: Path) -> None:
    """The issue's "done when": peak RSS of the service process grows by less than 200 MB."""
    paths = {name: str(write(tmp_path / f"{name}_{up}", build())) for name, (build, up, _, _) in BOMBS.items()}
    here = str(Path(__file__).parent)
    out = peak_rss_growth_mb(
        f"""
        import sys, threading, time
        sys.path.insert(0, {here!r})
        from fastapi.testclient import TestClient
        from test_pixel_limits import StandInScorer
        from usher2.service import create_app
        paths = {json.dumps(paths)}
        client = TestClient(create_app(StandInScorer(), token=""))
        assert client.get("/healthz").status_code == 200
        uploads = {{name: open(p, "rb").read() for name, p in paths.items()}}

        def post(name, answers):
            upload = "bomb.dcm" if name.endswith("dicom") else "bomb.png"
            t0 = time.perf_counter()
            r = client.post("/v1/score", files={{"file": (upload, uploads[name], "application/octet-stream")}})
            answers.append((name, r.status_code, time.perf_counter() - t0))
        """,
        """
        answers = []
        for name in uploads:
            post(name, answers)
        pair = [threading.Thread(target=post, args=(n, answers)) for n in ("rgb_png", "deflated_dicom")]
        for t in pair:
            t.start()
        for t in pair:
            t.join()
        result = answers
        """,
    )
    answers = out["result"]
    assert len(answers) == 5 and {status for _, status, _ in answers} == {413}, answers
    assert max(seconds for _, _, seconds in answers) < 1.0, answers
    print(f"service peak RSS growth under the bombs: {out['growth']:.1f} MiB (base {out['base']:.0f} MiB)")
    assert out["growth"] < GROWTH_MB, out
