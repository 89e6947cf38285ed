"""Back-pressure: a bounded number of requests in the service, and 503 with ``Retry-After`` beyond it.

:class:`Runner` admits at most ``max_concurrent + max_queue`` requests at a time; beyond that
:meth:`Runner.run` answers 503 at once, with a ``Retry-After`` estimated from the running mean
of a request's own seconds. An admitted request holds a :class:`Ticket` until its last piece of
work has finished, whatever stage it is in: waiting for a thread, reading its upload, waiting in
the :class:`~usher2.service.batching.MicroBatcher`'s queue or running in its batch, encoding
its images. The micro-batcher's queue therefore counts toward the same limit.

Reading and encoding (CPU work that releases the GIL in OpenCV and the image readers) run on a
pool of ``max_concurrent`` threads (:meth:`Ticket.call`); waiting for the model
(:meth:`Ticket.wait`) holds no thread, so every admitted request can join the next batch.
``torch.set_num_threads`` is never changed per request.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from usher2.service.api_errors import ApiError
from usher2.service.settings import Settings

__all__ = ["Runner", "Ticket"]

T = TypeVar("T")


class Ticket:
    """One admitted request's place; released when the request and its last piece of work are done.

    Attributes:
        queue_s: Seconds spent waiting for a pool thread, over all :meth:`call`\\ s.
        busy_s: Seconds of the request's own work on pool threads, over all :meth:`call`\\ s.
    """

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._pending: set[Future[Any]] = set()
        self._closed = False
        self._released = False
        self.queue_s = 0.0
        self.busy_s = 0.0

    async def call(self, fn: Callable[..., T], *args: Any) -> tuple[T, float]:
        """Run ``fn(*args)`` on the pool: ``(its value, its own seconds)``."""
        submitted = time.perf_counter()

        def job() -> tuple[T, float]:
            start = time.perf_counter()
            self.queue_s += start - submitted
            value = fn(*args)
            own = time.perf_counter() - start
            self.busy_s += own
            return value, own

        return await self.wait(self._runner.pool.submit(job))

    async def wait(self, fut: Future[T]) -> T:
        """Await a concurrent future; the place stays taken until it is done, also when this await is cancelled."""
        self._pending.add(fut)
        fut.add_done_callback(self._done)
        return await asyncio.wrap_future(fut)

    def _done(self, fut: Future[Any]) -> None:
        self._pending.discard(fut)
        if self._closed and not self._pending:
            self._release()

    def close(self) -> None:
        """The request is over: release the place now, or when its outstanding work finishes."""
        self._closed = True
        if not self._pending:
            self._release()

    def _release(self) -> None:
        with self._runner._lock:  # _done runs on pool and worker threads, close on the event loop's
            if self._released:
                return
            self._released = True
            self._runner.pending -= 1


class Runner:
    """Admits a bounded number of requests and runs their CPU work on a bounded thread pool.

    Args:
        settings: The app's limits: ``max_concurrent`` pool threads, and ``max_queue`` more
            requests admitted beyond them.

    Example:
        >>> from usher2.service.settings import make_settings
        >>> runner = Runner(make_settings(20, 64, "", 2, 3))
        >>> runner.capacity, runner.retry_after()
        (5, 1)
        >>> runner.pool.shutdown()
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = ThreadPoolExecutor(settings.max_concurrent, thread_name_prefix="usher2-score")
        self.capacity = settings.max_concurrent + settings.max_queue
        self.pending = 0
        self._lock = threading.Lock()
        self._mean_s = 1.0  # running mean of a request's own seconds, for Retry-After

    def retry_after(self) -> int:
        """Seconds until the admitted requests have likely drained by one (1 to 120).

        The model runs one batch at a time, so the estimate is the pending requests times the
        running mean of one request's own seconds (its pool work plus its share of a batch).
        """
        return int(min(max(math.ceil(self._mean_s * self.pending), 1), 120))

    def admit(self) -> Ticket:
        """A place for one request, or a 503 with ``Retry-After`` when all are taken."""
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
        return Ticket(self)

    async def run(self, job: Callable[[Ticket], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """``await job(ticket)`` in an admitted place, or raise a 503 when none is free.

        ``job`` returns the response's fields; their ``timings`` may hold ``score_s`` and
        ``batch_size`` (the batch's seconds and frames), of which the request's share counts
        toward its own seconds, with its pool work (``ticket.busy_s``).
        """
        ticket = self.admit()
        try:
            out = await job(ticket)
        finally:
            ticket.close()
        t = out.get("timings", {})
        own = ticket.busy_s + float(t.get("score_s", 0.0)) / max(float(t.get("batch_size", 1)), 1.0)
        self._mean_s = 0.8 * self._mean_s + 0.2 * own
        return out
