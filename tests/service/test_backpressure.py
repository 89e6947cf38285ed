"""Back-pressure (usher2.service.backpressure): the bounded pool, the queue, 503 and Retry-After."""

from __future__ import annotations

import asyncio
import threading

import pytest

from usher2.service.api_errors import ApiError
from usher2.service.backpressure import Runner
from usher2.service.settings import make_settings


@pytest.fixture
def runner():
    r = Runner(make_settings(20, 64, "", 2, 3), thread_safe=False)
    yield r
    r.pool.shutdown(wait=True)


def test_capacity_is_running_plus_waiting(runner):
    assert runner.capacity == 5 and runner.pending == 0
    assert runner.parallel == 1  # a model that is not thread-safe runs one job at a time
    assert Runner(make_settings(20, 64, "", 2, 3), thread_safe=True).parallel == 2


def test_retry_after_is_the_mean_job_time_per_parallel_job_clamped(runner):
    runner._mean_s = 2.5
    runner.pending = 3
    assert runner.retry_after() == 8  # ceil(2.5 * 3 / 1)
    runner.pending = 0
    assert runner.retry_after() == 1
    runner.pending = 1000
    assert runner.retry_after() == 120


def test_run_returns_the_job_output_and_releases_its_place(runner):
    seen = {}

    def fn(queue_s):
        seen["queue_s"], seen["thread"] = queue_s, threading.current_thread().name
        return {"timings": {"model_wait_s": 0.0}, "value": 42}

    out = asyncio.run(runner.run(fn))
    assert out["value"] == 42 and seen["queue_s"] >= 0 and seen["thread"].startswith("usher2-score")
    assert runner.pending == 0
    assert 0.8 <= runner._mean_s < 1.0  # 0.8 * 1.0 + 0.2 * (a job of a few microseconds)


def test_a_failing_job_releases_its_place_too(runner):
    def fn(queue_s):
        raise ApiError(422, "file", "a frame", "nothing")

    with pytest.raises(ApiError):
        asyncio.run(runner.run(fn))
    assert runner.pending == 0


def test_a_full_queue_is_503_with_retry_after(runner):
    runner.pending = runner.capacity
    with pytest.raises(ApiError) as info:
        asyncio.run(runner.run(lambda q: {"timings": {"model_wait_s": 0.0}}))
    e = info.value
    assert e.status_code == 503 and e.headers == {"Retry-After": str(runner.retry_after())}
    assert e.detail.startswith("service: expected at most 3 waiting and 2 running requests, got a full queue")
    assert runner.pending == runner.capacity  # the refused request took no place
