"""Adaptive batching: concurrent requests to one model version become one kernel call.

Why: the compiled kernels cost a few microseconds per call plus nanoseconds per row, so under load
one call over 50 coalesced rows is far cheaper than 50 calls (Clipper, Triton's dynamic batcher).
At low load nothing should wait for company that is not coming.

Algorithm (AIMD on the queue delay, after Clipper's AIMD on the batch size)
--------------------------------------------------------------------------
One bounded queue and one batcher task per model version.  The task takes the oldest request,
then everything already queued (up to ``max_batch_rows`` rows).  If the current delay window ``d``
is open it waits up to ``d`` after the oldest request's arrival for more, then runs ONE kernel call
over the concatenated rows and hands every request its own rows back.  After each batch, with
``L`` = queue wait + compute time of its oldest request:

* ``L > latency_objective_s``          -> ``d *= decrease``   (multiplicative decrease: too slow)
* the window was open but caught no one -> ``d *= decrease``   (waiting did not pay: low load)
* the batch held > 1 request            -> ``d += step_s``     (additive increase, capped at ``max_delay_s``)

``d`` starts at 0 and a window below 1 µs is closed (0).  At low load ``d`` therefore stays 0 and a
request only pays the hand-off to the batcher task (tens of µs); under concurrency requests pile up
while a batch computes, the window opens and grows while the objective holds.

Defaults: ``max_batch_rows=1024``, ``max_delay_s=2 ms``, ``latency_objective_s=5 ms``,
``step_s=50 µs``, ``decrease=0.5``, ``queue_size=1024`` requests (a full queue refuses at once:
the server answers 503 rather than building an unbounded backlog), ``inline_rows=4096`` (batches up
to that many rows run on the event loop: a thread hop costs more than the kernel; larger ones run
in a worker thread so the loop keeps accepting requests).
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from sparkscore.errors import SparkscoreError


class OverloadedError(SparkscoreError, RuntimeError):
    """The model version's queue is full (or it is shutting down): retry later."""


@dataclass(frozen=True)
class BatchPolicy:
    """Batching limits and the AIMD constants (see the module docstring)."""

    max_batch_rows: int = 1024
    max_delay_s: float = 0.002
    latency_objective_s: float = 0.005
    step_s: float = 50e-6
    decrease: float = 0.5
    queue_size: int = 1024
    inline_rows: int = 4096


@dataclass
class _Item:
    X: np.ndarray
    future: asyncio.Future
    t: float


@dataclass(frozen=True)
class BatchStats:
    """What one kernel call did (for metrics and tests)."""

    rows: int
    requests: int
    latency_s: float
    delay_s: float


class Batcher:
    """One queue + one task scoring ``fn(X) -> (n, k)`` over coalesced rows."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], policy: BatchPolicy = BatchPolicy(),
                 name: str = "model", on_batch: Callable[[BatchStats], None] | None = None) -> None:
        self.fn = fn
        self.policy = policy
        self.name = name
        self.on_batch = on_batch
        self.delay_s = 0.0
        self.calls = 0
        self.rows = 0
        self._queue: collections.deque[_Item] = collections.deque()
        self._wake = asyncio.Event()
        self._busy = False
        self._closing = False
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------------ client side
    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        return not self._queue and not self._busy

    async def submit(self, X: np.ndarray) -> np.ndarray:
        """The scores of ``X``'s rows, computed in some batch with other requests' rows."""
        if self._closing:
            raise OverloadedError(f"{self.name}: this version is unloading; retry")
        if len(self._queue) >= self.policy.queue_size:
            raise OverloadedError(f"{self.name}: {len(self._queue)} requests queued (queue_size); retry later")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher {self.name}")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(X, future, time.perf_counter()))
        self._wake.set()
        return await future

    async def close(self, timeout_s: float = 10.0) -> None:
        """Refuse new requests, let the queued ones finish (up to ``timeout_s``), stop the task."""
        self._closing = True
        deadline = time.perf_counter() + timeout_s
        while not self.idle and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(OverloadedError(f"{self.name}: unloaded before it answered; retry"))
        self._queue.clear()

    # ------------------------------------------------------------------ batcher task
    async def _next(self, timeout: float | None) -> _Item | None:
        while not self._queue:
            self._wake.clear()
            if timeout is None:
                await self._wake.wait()
                continue
            if timeout <= 0:
                return None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                return None
        return self._queue.popleft()

    def _take_queued(self, batch: list[_Item], rows: int) -> int:
        limit = self.policy.max_batch_rows
        while self._queue and rows + len(self._queue[0].X) <= limit:
            item = self._queue.popleft()
            batch.append(item)
            rows += len(item.X)
        return rows

    async def _run(self) -> None:
        policy = self.policy
        while True:
            first = await self._next(None)
            self._busy = True
            try:
                batch = [first]
                rows = self._take_queued(batch, len(first.X))
                before_wait = len(batch)
                window = self.delay_s
                if window > 0:
                    deadline = first.t + window
                    while rows < policy.max_batch_rows:
                        item = await self._next(deadline - time.perf_counter())
                        if item is None:
                            break
                        if rows + len(item.X) > policy.max_batch_rows:
                            self._queue.appendleft(item)  # the next batch starts with it
                            break
                        batch.append(item)
                        rows = self._take_queued(batch, rows + len(item.X))
                await self._score(batch, rows)
                latency = time.perf_counter() - first.t
                self._adapt(latency, opened=window > 0, caught=len(batch) - before_wait, requests=len(batch))
                if self.on_batch is not None:
                    self.on_batch(BatchStats(rows, len(batch), latency, self.delay_s))
            finally:
                self._busy = False

    async def _score(self, batch: list[_Item], rows: int) -> None:
        X = batch[0].X if len(batch) == 1 else np.concatenate([item.X for item in batch])
        try:
            S = self.fn(X) if rows <= self.policy.inline_rows else await asyncio.to_thread(self.fn, X)
        except Exception as exc:  # one bad batch fails its own requests, never the task
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.calls += 1
        self.rows += rows
        start = 0
        for item in batch:
            n = len(item.X)
            if not item.future.done():  # a client that went away cancelled its future
                item.future.set_result(S[start:start + n])
            start += n

    def _adapt(self, latency: float, opened: bool, caught: int, requests: int) -> None:
        p = self.policy
        if latency > p.latency_objective_s or (opened and caught == 0):
            self.delay_s *= p.decrease
            if self.delay_s < 1e-6:
                self.delay_s = 0.0
        elif requests > 1:
            self.delay_s = min(p.max_delay_s, self.delay_s + p.step_s)
