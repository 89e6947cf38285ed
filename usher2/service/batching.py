"""Micro-batching: requests that arrive within a few milliseconds share one pass through the networks.

:class:`MicroBatcher` owns one worker thread, the only thread that runs the model. A request
puts its item on a queue with :meth:`MicroBatcher.submit` and gets a
:class:`concurrent.futures.Future`; the worker takes the oldest item, keeps collecting until
``max_batch`` items are in hand or ``max_wait_ms`` have passed since that item *arrived* (an
item that already waited while the previous batch ran starts its batch at once, as Triton's
``max_queue_delay`` counts), calls the batch function once on them all, and resolves each future
with its own result. This is Triton's dynamic batching or Ray Serve's ``@serve.batch`` in one
process.

**One failure stays one failure.** The batch function returns one outcome per item, an
exception instance for an item that failed; that item's future raises it and the others get
their results. Should the batch function raise as a whole, the worker runs each item alone, so
a frame that breaks a batch fails only its own request.

**Thread safety by construction.** The networks, and the Grad-CAM hooks that are put on the
shared backbone during a heat map, are only ever touched by the worker thread: two requests can
no longer run Grad-CAM on the same backbone at once, without any lock around the model.

**Cancellation and shutdown.** An item whose future was cancelled before its batch started
(the client went away) is dropped from the batch. :meth:`MicroBatcher.close` refuses new items
(``RuntimeError``), lets the worker finish those already submitted (no caller waits forever)
and joins the thread; the app calls it when it shuts down. The worker starts with the first
item and stops after ``idle_s`` without one (the next item starts a new one), so an app that is
never shut down (one built in a test without its lifespan; FastAPI's caches keep such an app's
objects alive, so garbage collection would not stop it) leaves no thread behind for long. The
thread is a daemon either way.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from usher2.io.errors import InputError

__all__ = ["Batched", "MicroBatcher", "check_batching"]

_STOP = object()  # the worker's stop signal on the queue


def check_batching(max_batch: int, max_wait_ms: float) -> None:
    """Check a batcher's limits where they enter (the app's settings, a :class:`MicroBatcher`).

    Raises:
        InputError: ``max_batch`` not an integer >= 1, or ``max_wait_ms`` not a finite number >= 0.

    Example:
        >>> check_batching(16, 5.0)
        >>> check_batching(16, float("inf"))
        Traceback (most recent call last):
        ...
        usher2.io.errors.InputError: max_wait_ms: expected a finite number of milliseconds >= 0, got inf
    """
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise InputError("max_batch", "an integer >= 1", repr(max_batch))
    if not isinstance(max_wait_ms, int | float) or isinstance(max_wait_ms, bool) or not 0 <= max_wait_ms < math.inf:
        raise InputError("max_wait_ms", "a finite number of milliseconds >= 0", repr(max_wait_ms))


@dataclass(frozen=True)
class Batched:
    """What a submitted item's future resolves to.

    Attributes:
        value: The batch function's outcome for this item.
        size: Items in the batch it ran in.
        wait_s: Seconds from :meth:`MicroBatcher.submit` to the start of its batch (waiting
            behind the previous batch, then for the batch to fill).
        run_s: Seconds the batch function ran, shared by the ``size`` items (when the batch failed
            as a whole and its items ran alone: the whole call, retries included).
    """

    value: Any
    size: int
    wait_s: float
    run_s: float


@dataclass
class _Item:
    payload: Any
    future: Future[Batched]
    submitted: float


class _State:
    """What the batcher and its worker share (the worker holds this, never the batcher): the
    lock, the running worker thread and the count of unresolved items."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.outstanding = 0

    def resolved(self, _: Future[Batched]) -> None:
        with self.lock:
            self.outstanding -= 1


class MicroBatcher:
    """Runs ``fn`` on batches of submitted items in one worker thread (see the module docstring).

    Args:
        fn: ``fn(payloads)`` -> one outcome per payload, in order; an exception instance marks a
            payload that failed.
        max_batch: Most items in one call of ``fn``.
        max_wait_ms: Longest wait, from the oldest item's arrival, for more items to join its batch.
        name: The worker thread's name.
        idle_s: The worker stops after this many seconds without an item (the next item starts
            another), so a batcher that is never closed leaves no thread behind for long.

    Raises:
        InputError: ``max_batch`` or ``max_wait_ms`` out of range.

    Example:
        >>> batcher = MicroBatcher(lambda xs: [x * x for x in xs], max_batch=8, max_wait_ms=2)
        >>> got = batcher.submit(7).result(timeout=10)
        >>> got.value, got.size
        (49, 1)
        >>> batcher.close()
    """

    def __init__(
        self,
        fn: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        name: str = "usher2-batcher",
        idle_s: float = 30.0,
    ) -> None:
        check_batching(max_batch, max_wait_ms)
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_ms = float(max_wait_ms)
        self.name = name
        self.idle_s = float(idle_s)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._state = _State()
        self._closed = False

    @property
    def depth(self) -> int:
        """Items submitted and not yet resolved (queued, or in the batch that is running)."""
        return self._state.outstanding

    @property
    def thread(self) -> threading.Thread | None:
        """The running worker thread (None before the first item, after an idle stop and after :meth:`close`)."""
        return self._state.thread

    def submit(self, payload: Any) -> Future[Batched]:
        """Queue ``payload`` for the next batch; the future resolves to its :class:`Batched`.

        Raises:
            RuntimeError: The batcher is closed.
        """
        fut: Future[Batched] = Future()
        state = self._state
        with state.lock:  # the worker decides to stop under this lock, on an empty queue only
            if self._closed:
                raise RuntimeError(f"{self.name} is closed: the service is shutting down")
            state.outstanding += 1
            fut.add_done_callback(state.resolved)
            self._queue.put(_Item(payload, fut, time.perf_counter()))
            if state.thread is None:
                args = (self._queue, self.fn, state, self.max_batch, self.max_wait_ms / 1000.0, self.idle_s)
                state.thread = threading.Thread(target=_work, args=args, name=self.name, daemon=True)
                state.thread.start()
        return fut

    def close(self, timeout: float = 60.0) -> None:
        """Refuse new items, let the worker finish the ones already submitted, and join it (idempotent).

        Raises:
            TimeoutError: The worker did not finish within ``timeout`` seconds.
        """
        with self._state.lock:
            self._closed = True  # every item submitted before this is queued ahead of the stop signal
            thread = self._state.thread
            if thread is not None:
                self._queue.put(_STOP)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"{self.name} did not stop within {timeout:g} s: {self.depth} items unfinished")


def _collect(q: queue.SimpleQueue[Any], first: _Item, max_batch: int, max_wait_s: float) -> tuple[list[_Item], bool]:
    """``first`` and the items that join it within its window: ``(items, stop seen)``."""
    items, deadline = [first], first.submitted + max_wait_s
    while len(items) < max_batch:
        try:
            item = q.get(timeout=max(deadline - time.perf_counter(), 0.0))  # 0: take what is there
        except queue.Empty:
            break
        if item is _STOP:
            return items, True
        items.append(item)
    return items, False


def _outcomes(fn: Callable[[list[Any]], Sequence[Any]], live: list[_Item]) -> list[tuple[list[_Item], list[Any]]]:
    """``fn``'s outcomes as ``(items, outcomes)`` groups: one group, or one per item when the batch failed."""
    try:
        outcomes = list(fn([it.payload for it in live]))
        if len(outcomes) != len(live):
            raise RuntimeError(f"the batch function returned {len(outcomes)} outcomes for {len(live)} items")
        return [(live, outcomes)]
    except Exception:  # the batch as a whole failed: each item alone, so only its culprit fails
        groups: list[tuple[list[_Item], list[Any]]] = []
        for it in live:
            try:
                out = list(fn([it.payload]))
                if len(out) != 1:
                    raise RuntimeError(f"the batch function returned {len(out)} outcomes for 1 item") from None
                groups.append(([it], out))
            except Exception as exc:  # handed to this item's caller, not swallowed
                groups.append(([it], [exc]))
        return groups


def _run(fn: Callable[[list[Any]], Sequence[Any]], items: list[_Item]) -> None:
    """One batch: ``fn`` once on the live items, each future resolved with its own outcome."""
    live = [it for it in items if it.future.set_running_or_notify_cancel()]  # drops cancelled ones
    if not live:
        return
    start = time.perf_counter()
    groups = _outcomes(fn, live)
    run_s = time.perf_counter() - start
    for group, outs in groups:
        for it, out in zip(group, outs, strict=True):
            if isinstance(out, BaseException):
                it.future.set_exception(out)
            else:
                it.future.set_result(Batched(out, len(group), start - it.submitted, run_s))


def _batch(
    q: queue.SimpleQueue[Any],
    fn: Callable[[list[Any]], Sequence[Any]],
    state: _State,
    max_batch: int,
    wait_s: float,
    idle_s: float,
) -> bool:
    """Wait for an item and run its batch; False when the worker should stop (the stop signal, or
    ``idle_s`` without an item), having cleared ``state.thread`` so that the next item starts another."""
    try:
        first = q.get(timeout=idle_s)
    except queue.Empty:
        with state.lock:  # submit puts its item under this lock, so none can be left unserved
            if q.empty():
                state.thread = None
                return False
        return True
    if first is _STOP:
        with state.lock:
            state.thread = None
        return False
    items, stop = _collect(q, first, max_batch, wait_s)
    _run(fn, items)
    if stop:
        with state.lock:
            state.thread = None
    return not stop


def _work(*args: Any) -> None:
    """The worker thread: batches until :func:`_batch` says stop."""
    while _batch(*args):
        pass
