"""Back-pressure (usher2.service.backpressure): admitted places, the pool, 503 and Retry-After."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest

from usher2.service.api_errors import ApiError
from usher2.service.backpressure import Runner
from usher2.service.settings import make_settings


@pytest.fixture
def runner():
    r = Runner(make_settings(20, 64, "", 2, 3))
    yield r
    r.pool.shutdown(wait=True)


def test_capacity_is_running_plus_waiting(runner):
    assert runner.capacity == 5 and runner.pending == 0


def test_retry_after_is_the_mean_request_time_per_pending_request_clamped(runner):
    runner._mean_s = 2.5
    runner.pending = 3
    assert runner.retry_after() == 8  # ceil(2.5 * 3): the model runs one batch at a time
    runner.pending = 0
    assert runner.retry_after() == 1
    runner.pending = 1000
    assert runner.retry_after() == 120


def test_run_returns_the_job_output_and_releases_its_place(runner):
    seen = {}

    def work(x):
        seen["thread"], seen["pending"] = threading.current_thread().name, runner.pending
        return x + 1

    async def job(ticket):
        value, own = await ticket.call(work, 41)
        assert own >= 0 and ticket.busy_s == own and ticket.queue_s >= 0
        # a batch of 4 that ran 0.5 s: this request's share is 0.125 s
        return {"timings": {"score_s": 0.5, "batch_size": 4.0}, "value": value}

    out = asyncio.run(runner.run(job))
    assert out["value"] == 42 and seen["thread"].startswith("usher2-score") and seen["pending"] == 1
    assert runner.pending == 0
    # 0.8 * 1.0 + 0.2 * (0.125 + a pool job of a few microseconds)
    assert 0.825 <= runner._mean_s < 0.83


def test_a_failing_job_releases_its_place_too(runner):
    async def job(ticket):
        await ticket.call(lambda: None)
        raise ApiError(422, "file", "a frame", "nothing")

    with pytest.raises(ApiError):
        asyncio.run(runner.run(job))
    assert runner.pending == 0


def test_a_cancelled_request_keeps_its_place_until_its_work_is_done(runner):
    """A client that goes away mid-batch: its frame still occupies the model, so its place stays taken."""
    model: Future[int] = Future()
    model.set_running_or_notify_cancel()  # already in a running batch: it cannot be cancelled

    async def main():
        task = asyncio.create_task(runner.run(lambda ticket: ticket.wait(model)))
        while runner.pending == 0:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert runner.pending == 1  # the batch still runs this request's frame
        model.set_result(1)
        assert runner.pending == 0

    asyncio.run(main())


def test_a_full_queue_is_503_with_retry_after(runner):
    runner.pending = runner.capacity
    with pytest.raises(ApiError) as info:
        asyncio.run(runner.run(lambda ticket: asyncio.sleep(0, {"timings": {}})))
    e = info.value
    assert e.status_code == 503 and e.headers == {"Retry-After": str(runner.retry_after())}
    assert e.detail.startswith("service: expected at most 3 waiting and 2 running requests, got a full queue")
    assert runner.pending == runner.capacity  # the refused request took no place
