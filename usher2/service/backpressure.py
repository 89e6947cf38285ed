"""Back-pressure: a bounded thread pool with a bounded wait queue, and 503 with ``Retry-After`` beyond it.

:class:`Runner` runs each request's work on ``max_concurrent`` threads; up to ``max_queue`` more
requests wait for a thread, and beyond that :meth:`Runner.run` answers 503 at once, with a
``Retry-After`` estimated from the running mean of a job's own seconds. ``torch.set_num_threads``
is never changed per request.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from usher2.service.api_errors import ApiError
from usher2.service.settings import Settings

__all__ = ["Runner"]


class Runner:
    """Runs jobs in a bounded thread pool with a bounded wait queue.

    Args:
        settings: The app's limits (``max_concurrent`` threads, ``max_queue`` waiting requests).
        thread_safe: Whether the model runs in parallel; when not, only one job really runs at a
            time, which the ``Retry-After`` estimate takes into account.

    Example:
        >>> from usher2.service.settings import make_settings
        >>> runner = Runner(make_settings(20, 64, "", 2, 3), thread_safe=False)
        >>> runner.capacity, runner.parallel, runner.retry_after()
        (5, 1, 1)
        >>> runner.pool.shutdown()
    """

    def __init__(self, settings: Settings, *, thread_safe: bool) -> None:
        self.settings = settings
        self.pool = ThreadPoolExecutor(settings.max_concurrent, thread_name_prefix="usher2-score")
        self.capacity = settings.max_concurrent + settings.max_queue
        self.pending = 0
        self._lock = threading.Lock()
        self._mean_s = 1.0  # running mean of a job's own seconds (without waiting), for Retry-After
        self.parallel = settings.max_concurrent if thread_safe else 1  # jobs that really run at once

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained by one request (1 to 120)."""
        return int(min(max(math.ceil(self._mean_s * self.pending / self.parallel), 1), 120))

    async def run(self, fn: Callable[[float], dict[str, Any]]) -> dict[str, Any]:
        """Run ``fn(queue_seconds)`` on the pool, or raise a 503 when the queue is full.

        ``fn`` returns the response's fields, whose ``timings["model_wait_s"]`` (seconds spent
        waiting for the model) is left out of the job's own seconds.
        """
        with self._lock:
            if self.pending >= self.capacity:
                s = self.settings
                raise ApiError(
                    503,
                    "service",
                    f"at most {s.max_queue} waiting and {s.max_concurrent} running requests",
                    "a full queue",
                    fix="retry after the Retry-After seconds",
                    headers={"Retry-After": str(self.retry_after())},
                )
            self.pending += 1
        submitted = time.perf_counter()

        def job() -> dict[str, Any]:
            start = time.perf_counter()
            out = fn(start - submitted)
            busy = time.perf_counter() - start - out["timings"]["model_wait_s"]
            self._mean_s = 0.8 * self._mean_s + 0.2 * busy
            return out

        fut: Future[dict[str, Any]] = self.pool.submit(job)
        fut.add_done_callback(self._release)  # also when the client went away and the await was cancelled
        return await asyncio.wrap_future(fut)

    def _release(self, _: Future[dict[str, Any]]) -> None:
        with self._lock:
            self.pending -= 1
