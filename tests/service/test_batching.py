"""Micro-batching (usher2.service.batching, usher2.service.batch_score) and the service around it.

The unit tests hold the worker in its first batch with an event, queue more items behind it, then
release it: which items share a batch is then fixed, with no timing involved.
"""

from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from usher2.io.errors import InputError
from usher2.io.frames import read_frame
from usher2.score.engine import FrameScorer
from usher2.service import create_app
from usher2.service.batch_score import score_batch
from usher2.service.batching import MicroBatcher

# A frame scored in a batch of several goes through the networks with other frames: on the CPU a
# float32 network output differs in its last bits with the batch it runs in, which moves the
# probability by about 1e-7 (usher2.score.engine's docstring: 1.5e-8 measured on the golden
# frames). 1e-6 is ten times that and still far below any threshold or rounding that matters.
BATCHED_PROB_TOL = 1e-6


class Held:
    """A batch function that records its batches and holds the first one until released."""

    def __init__(self, fn: Any = lambda xs: [x * 10 for x in xs]) -> None:
        self.fn = fn
        self.batches: list[list[Any]] = []
        self.threads: set[str] = set()
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, xs: list[Any]) -> list[Any]:
        self.batches.append(list(xs))
        self.threads.add(threading.current_thread().name)
        if len(self.batches) == 1:
            self.entered.set()
            if not self.release.wait(30):
                raise TimeoutError("the test never released the batch")
        return self.fn(xs)


def _held(fn: Held, *, max_batch: int = 16, max_wait_ms: float = 0.0) -> MicroBatcher:
    batcher = MicroBatcher(fn, max_batch=max_batch, max_wait_ms=max_wait_ms, name="test-batcher")
    batcher.submit("first")
    assert fn.entered.wait(30)
    return batcher


# ------------------------------------------------------------------------------ the batcher
def test_items_queued_while_a_batch_runs_share_the_next_batch():
    fn = Held()
    batcher = _held(fn)
    futures = [batcher.submit(k) for k in range(5)]
    assert batcher.depth == 6  # 1 running + 5 queued
    fn.release.set()
    got = [f.result(timeout=30) for f in futures]
    assert fn.batches == [["first"], [0, 1, 2, 3, 4]]
    assert [g.value for g in got] == [0, 10, 20, 30, 40] and {g.size for g in got} == {5}
    assert all(g.wait_s > 0 and g.run_s >= 0 for g in got)
    assert got[0].wait_s >= got[-1].wait_s  # the first one queued waited longest
    batcher.close()
    assert batcher.depth == 0 and fn.threads == {"test-batcher"}


def test_max_batch_caps_a_batch():
    fn = Held()
    batcher = _held(fn, max_batch=3)
    futures = [batcher.submit(k) for k in range(7)]
    fn.release.set()
    assert [f.result(timeout=30).size for f in futures] == [3, 3, 3, 3, 3, 3, 1]
    assert [len(b) for b in fn.batches] == [1, 3, 3, 1]
    batcher.close()


def test_a_full_batch_does_not_wait_out_the_window():
    """max_wait_ms of 10 minutes: three items still run at once, as the third fills the batch."""
    batcher = MicroBatcher(lambda xs: [len(xs)] * len(xs), max_batch=3, max_wait_ms=600_000)
    futures = [batcher.submit(k) for k in range(3)]
    assert [f.result(timeout=30).value for f in futures] == [3, 3, 3]
    batcher.close()


def test_one_failing_item_fails_only_its_own_future():
    fn = Held(lambda xs: [ValueError(f"bad item {x}") if x == 2 else x for x in xs])
    batcher = _held(fn)
    futures = [batcher.submit(k) for k in range(4)]
    fn.release.set()
    with pytest.raises(ValueError, match="bad item 2"):
        futures[2].result(timeout=30)
    assert [futures[k].result(timeout=30).value for k in (0, 1, 3)] == [0, 1, 3]
    assert len(fn.batches) == 2  # one call for the four: no retries needed
    batcher.close()


def test_a_batch_that_raises_is_retried_item_by_item():
    def fragile(xs):
        if "poison" in xs:
            raise RuntimeError("one frame broke the batch")
        return [x * 10 for x in xs]

    fn = Held(fragile)
    batcher = _held(fn)
    futures = [batcher.submit(x) for x in (1, "poison", 3)]
    fn.release.set()
    with pytest.raises(RuntimeError, match="broke the batch"):
        futures[1].result(timeout=30)
    assert [(futures[k].result(timeout=30).value, futures[k].result().size) for k in (0, 2)] == [(10, 1), (30, 1)]
    assert fn.batches[1:] == [[1, "poison", 3], [1], ["poison"], [3]]
    batcher.close()


def test_a_wrong_number_of_outcomes_is_an_error_not_a_hang():
    batcher = MicroBatcher(lambda xs: [], max_batch=4, max_wait_ms=0)
    with pytest.raises(RuntimeError, match="returned 0 outcomes for 1 item"):
        batcher.submit(1).result(timeout=30)
    batcher.close()


def test_a_cancelled_item_is_left_out_of_its_batch():
    fn = Held()
    batcher = _held(fn)
    keep, drop = batcher.submit(1), batcher.submit(2)
    assert drop.cancel()
    fn.release.set()
    assert keep.result(timeout=30).value == 10 and keep.result().size == 1
    with pytest.raises(CancelledError):
        drop.result()
    assert fn.batches == [["first"], [1]]
    batcher.close()
    assert batcher.depth == 0


def test_close_finishes_submitted_items_joins_and_refuses_new_ones():
    fn = Held()
    batcher = _held(fn)
    queued = batcher.submit(7)
    worker = batcher.thread
    closing = threading.Thread(target=batcher.close)
    closing.start()
    fn.release.set()
    closing.join(30)
    assert not closing.is_alive() and not worker.is_alive() and batcher.thread is None
    assert queued.result(timeout=0).value == 70  # submitted before close: run, not dropped
    with pytest.raises(RuntimeError, match="test-batcher is closed"):
        batcher.submit(8)
    batcher.close()  # idempotent


def test_an_idle_worker_stops_and_the_next_item_starts_another():
    """A batcher never closed (an app without its lifespan) leaves no thread running."""
    workers: list[threading.Thread] = []
    batcher = MicroBatcher(lambda xs: workers.append(threading.current_thread()) or xs, max_wait_ms=0, idle_s=0.05)
    assert batcher.submit(1).result(timeout=30).value == 1
    workers[0].join(30)  # returns once the worker has been idle for 0.05 s and stopped
    assert not workers[0].is_alive() and batcher.thread is None
    assert batcher.submit(2).result(timeout=30).value == 2  # served by a new worker
    batcher.close()
    assert workers[1] is not workers[0] and not workers[1].is_alive()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"max_batch": 0}, "max_batch: expected an integer >= 1, got 0"),
        ({"max_wait_ms": -0.5}, "max_wait_ms: expected a finite number of milliseconds >= 0, got -0.5"),
    ],
)
def test_bad_limits_are_named(kw, message):
    with pytest.raises(InputError, match=message):
        MicroBatcher(lambda xs: xs, **kw)


def test_score_batch_calls_a_scorer_without_a_batched_method_once_per_frame():
    class OnlyScoreFrame:
        def score_frame(self, frame, clinical=None):
            if frame < 0:
                raise ValueError("negative frame")
            return (frame, clinical)

    out = score_batch(OnlyScoreFrame(), [(1, None), (-1, None), (3, {"age": 50})])
    assert out[0] == (1, None) and out[2] == (3, {"age": 50})
    assert isinstance(out[1], ValueError) and str(out[1]) == "negative frame"


# ------------------------------------------------------------------------- through the service
class Gated:
    """A FrameScorer whose first batched call waits until released; records every batch and thread."""

    def __init__(self, inner: FrameScorer) -> None:
        self.inner = inner
        self.sizes: list[int] = []
        self.threads: set[str] = set()
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:  # model_info, cam, and what the batched heat maps read
        return getattr(self.inner, name)

    def score(self, frames: Any, clinical: Any = None, **kw: Any) -> Any:
        self.sizes.append(len(frames))
        self.threads.add(threading.current_thread().name)
        if len(self.sizes) == 1:
            self.entered.set()
            if not self.release.wait(60):
                raise TimeoutError("the test never released the scorer")
        return self.inner.score(frames, clinical, **kw)


def _png(b64: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)


def _post(client: TestClient, path: Path, clinical: dict[str, float] | None) -> Any:
    data = {"clinical": json.dumps(clinical)} if clinical else {}
    return client.post("/v1/score", files={"file": ("f.png", path.read_bytes(), "image/png")}, data=data)


@pytest.fixture(scope="module")
def cohort(scoring_bundle) -> pd.DataFrame:
    m = pd.read_csv(scoring_bundle["test"] / "manifest.csv")
    m["path"] = [scoring_bundle["test"] / p for p in m["image"]]
    return m


def test_concurrent_requests_share_a_batch_with_their_own_results_and_heat_maps(scoring_bundle, cohort, tmp_path):
    """Six requests, with and without clinical values and one frame without a lesion, queue behind a
    held batch and run as one batch of six in the model's thread; each gets what it gets alone."""
    ref = FrameScorer(scoring_bundle["bundle"])
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((128, 128), 51, np.uint8)).save(blank)  # the segmenter finds nothing
    rows = [cohort.iloc[k] for k in range(5)]
    sends = [
        (r["path"], {c: float(r[c]) for c in ("age", "er", "grade")} if k % 2 else None) for k, r in enumerate(rows)
    ]
    sends.insert(2, (blank, None))
    gated = Gated(ref)
    got: dict[int, Any] = {}
    with TestClient(create_app(gated, token="", max_concurrent=2, max_queue=8, max_wait_ms=0)) as c:
        first = threading.Thread(target=lambda: got.__setitem__("first", _post(c, rows[0]["path"], None)))
        first.start()
        assert gated.entered.wait(60)
        threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, _post(c, *sends[k]))) for k in range(6)]
        for t in threads:
            t.start()
        while c.get("/healthz").json()["batch_queue"] < 7:  # 1 held + 6 read and queued; each poll is a request
            assert all(t.is_alive() for t in threads), "a request finished before the batch was released"
        gated.release.set()
        for t in (first, *threads):
            t.join(120)
        batcher = c.app.state.batcher
        worker = batcher.thread
    assert not worker.is_alive() and batcher.thread is None  # the lifespan stopped the model's thread
    assert gated.sizes == [1, 6] and gated.threads == {"usher2-model"}
    lesions = 0
    for k, (path, clinical) in enumerate(sends):
        r = got[k]
        assert r.status_code == 200, r.text
        j = r.json()
        assert j["timings"]["batch_size"] == 6 and j["timings"]["model_wait_s"] > 0
        want = ref.score_frame(read_frame(path), clinical)
        if want.no_lesion:
            assert j["probability"] is None and j["flags"] == ["no_lesion"] and j["heatmap_png"] is None
            continue
        assert j["probability"] == pytest.approx(want.probability, abs=BATCHED_PROB_TOL)
        assert j["flags"] == want.flags() and ("clinical_missing" in j["flags"]) == (clinical is None)
        # The heat map made in one pass for the batch: round(255 * heat) within 1 of the frame's own.
        assert np.abs(_png(j["heatmap_png"]).astype(int) - np.uint8(np.clip(want.heat, 0, 1) * 255 + 0.5)).max() <= 1
        assert want.heat.max() > 0  # a real map, not two blanks agreeing
        lesions += 1
    assert lesions == 5  # the blank frame alone had none, and did not fail its batch
    assert got["first"].json()["timings"]["batch_size"] == 1
