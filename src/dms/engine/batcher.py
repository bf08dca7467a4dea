"""Dynamic batching for one model version, testable without processes.

Requests wait in a bounded queue. Batches form from what piles up while workers are busy, and
from what the frontend is still reading: when a request arrives to an empty queue, the batcher
lets the event loop run until the loop goes quiet (a few turns in a row that bring no new request
and do little else), the batch is full, or a short cap passes (``GATHER_CAP_MS``, never more than
the model's ``max_batch_delay_ms``). A lone request on an idle server (c=1) therefore waits a few
idle turns of the loop, some microseconds, never the delay; under load, requests that the frontend
is parsing in the same instant - which grpcio hands over one loop turn at a time - share one
batch instead of each paying a worker round trip. Requests whose callers gave up (cancelled
futures) are dropped before they reach a worker.

While every worker is busy, a batch that fills up goes at once to a busy worker that has room for
one more (``Executor.take_spare``), to be taken up the moment that worker answers, if the model's
batches take long enough for that to pay (``SEND_AHEAD_MIN_BATCH_NS``). A request given up on while
its batch waits there is withdrawn, and a batch whose worker died before taking it up
(``BatchNotStartedError``) goes back to the head of the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from dms.engine.chunk_streams import ChunkReader, StreamedRequest
from dms.engine.stats import BatchObserver, ModelStats
from dms.errors import BatchNotStartedError, DMSError, InternalError, ModelUnavailableError, QueueFullError
from dms.messages import BatchResult, RequestItem, ResponseItem

log = logging.getLogger("dms.batcher")

W = TypeVar("W")

GATHER_CAP_MS = 2.0
"""The longest a batch that is not full waits for the frontend to go quiet (capped by max_batch_delay_ms)."""
QUIET_TURN_NS = 20_000
"""A turn of the event loop shorter than this did nothing else of note."""
QUIET_TURNS = 3
"""Turns in a row without a new request, each of them quiet, after which the frontend counts as idle."""
CONTINUOUS_BATCHES = 32
"""Batches a worker of a model with continuous batching holds at most: the one it began with, and those that
joined its running generators (a request arriving alone is a batch of one)."""
SEND_AHEAD_MIN_BATCH_NS = 2_000_000
"""Full batches go ahead to busy workers only for a model whose batches keep a worker busy this long on
average. What sending ahead saves is the server's turnaround between two batches (~0.2-1 ms here); a
model quicker than this is held back by the server, not by its workers, and sending ahead would only
split its batches smaller (the tiny model at c=64: mean batch 15 -> 14, CPU per request +5 %)."""


class Executor(Protocol[W]):
    async def acquire(self) -> W:
        """Wait for an idle worker (raise a DMSError when none will come)."""
        ...

    async def execute(
        self, worker: W, items: list[RequestItem], readers: list[ChunkReader | None] | None = None
    ) -> BatchResult:
        """Run one batch on ``worker`` and make the worker available again. ``readers`` (given only when a request
        of the batch streams its answer) take each streamed request's chunks as they come."""
        ...

    def release(self, worker: W) -> None:
        """Give back a worker that got no batch."""
        ...

    def take_spare(self, most: int = 2) -> W | None:
        """A busy worker that can take one more batch right now, to hold at most ``most`` (None if there is none,
        or a worker is idle)."""
        ...

    def withdraw(self, worker: W, item: RequestItem) -> None:
        """``item``'s client went away: if its batch still waits behind another on ``worker``, skip it there."""
        ...

    def waiting(self) -> int:
        """Requests sent to a busy worker that it has not taken up yet."""
        ...


class Pending:
    __slots__ = ("enqueued_ns", "future", "item", "reader")

    def __init__(
        self, item: RequestItem, future: asyncio.Future[ResponseItem], reader: ChunkReader | None = None
    ) -> None:
        self.item = item
        self.future = future
        self.reader = reader
        self.enqueued_ns = time.perf_counter_ns()


class Batcher(Generic[W]):
    def __init__(
        self,
        label: str,
        executor: Executor[W],
        batch_size: int,
        queue_size: int,
        observer: BatchObserver | None = None,
        max_delay_ms: float = 0.0,
        continuous: bool = False,
    ) -> None:
        self.label = label
        self.continuous = continuous
        """Continuous batching: whatever is queued goes at once to a busy worker with room, whose running
        generators it joins (``CONTINUOUS_BATCHES`` batches a worker at most)."""
        self._ahead_at = 1 if continuous else batch_size
        """Queued requests that make a batch worth sending to a busy worker."""
        self._most_batches = CONTINUOUS_BATCHES if continuous else 2
        """Batches a busy worker may hold when one more is sent to it."""
        self.gather_cap_ns = int(min(max_delay_ms, GATHER_CAP_MS) * 1e6)
        self.executor = executor
        self.batch_size = batch_size
        self.queue_size = queue_size
        self._queue: deque[Pending] = deque()
        self._not_empty = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """The event loop it was started in (``asyncio.get_running_loop`` makes a getpid system call)."""
        self._closed = False
        self._send_ahead = False
        """Full batches go to busy workers with room (the dispatch loop is waiting for an idle worker, and the
        model's batches are long enough for that to pay)."""
        self._handed_ahead = 0
        """Requests handed to a busy worker whose batch has not gone out yet (its task has not started): from
        then on the executor counts them (``waiting``), and until then they must still count as pending."""
        self._batch_ns = SEND_AHEAD_MIN_BATCH_NS
        """A running mean of how long a batch keeps a worker busy (until measured: long enough to send ahead)."""
        self.stats = ModelStats()
        self.observer = observer

    @property
    def pending(self) -> int:
        """Requests not yet taken up by a worker: those queued here, and those waiting in a busy worker's socket."""
        return len(self._queue) + self._handed_ahead + self.executor.waiting()

    @property
    def in_flight_batches(self) -> int:
        return len(self._in_flight)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_task = self._loop.create_task(self._dispatch_loop())

    def submit(self, item: RequestItem, reader: ChunkReader | None = None) -> asyncio.Future[ResponseItem]:
        """Queue ``item``; the future resolves to its answer. With a ``reader`` (and ``item.stream``), the chunks of a
        streamed answer reach it as they come, before the future resolves."""
        if self._closed:
            raise ModelUnavailableError(f"model {self.label} is no longer accepting requests")
        if self.pending >= self.queue_size:  # a batch waiting in a busy worker's socket still counts
            raise QueueFullError(
                f"model {self.label} has {self.queue_size} requests queued (job_queue_size); retry later"
            )
        future: asyncio.Future[ResponseItem] = (self._loop or asyncio.get_running_loop()).create_future()
        self._queue.append(Pending(item, future, reader))
        self._not_empty.set()
        if self._send_ahead and len(self._queue) >= self._ahead_at:  # checked here too: it is the hot path
            self._hand_to_spares()
        return future

    async def _dispatch_loop(self) -> None:
        while True:
            if not self._queue:
                self._not_empty.clear()
                await self._not_empty.wait()
                await self._gather()
            self._send_ahead = self.continuous or self._batch_ns >= SEND_AHEAD_MIN_BATCH_NS
            self._hand_to_spares()
            try:
                worker = await self.executor.acquire()
            except DMSError as exc:
                self._fail_queued(exc)
                continue
            finally:
                self._send_ahead = False
            batch = self._take()
            if not batch:
                self.executor.release(worker)  # everything queued had been cancelled
                continue
            self._spawn(self._run(worker, batch))

    async def _gather(self) -> None:
        """Let the event loop run while it is still busy bringing requests (see the module's docstring)."""
        await asyncio.sleep(0)  # requests that arrived in the same instant
        started = last = time.perf_counter_ns()
        queued, quiet = len(self._queue), 0
        while quiet < QUIET_TURNS and queued < self.batch_size and last - started < self.gather_cap_ns:
            await asyncio.sleep(0)
            now = time.perf_counter_ns()
            quiet = 0 if len(self._queue) > queued or now - last >= QUIET_TURN_NS else quiet + 1
            queued, last = len(self._queue), now

    def _hand_to_spares(self) -> None:
        """While sending ahead is on, send each full batch queued to a busy worker with room for it."""
        while (
            self._send_ahead
            and len(self._queue) >= self._ahead_at
            and (worker := self.executor.take_spare(self._most_batches)) is not None
        ):
            batch = self._take()
            if not batch:
                self.executor.release(worker)
                continue
            for pending in batch:  # a request that is given up on while it waits must still not run
                pending.future.add_done_callback(partial(self._withdraw_if_cancelled, worker, pending.item))
            self._handed_ahead += len(batch)
            self._spawn(self._run(worker, batch, sent_ahead=True))

    def _withdraw_if_cancelled(self, worker: W, item: RequestItem, future: asyncio.Future[ResponseItem]) -> None:
        if future.cancelled():
            self.executor.withdraw(worker, item)

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        now = time.perf_counter_ns()
        while self._queue and len(batch) < self.batch_size:
            pending = self._queue.popleft()
            if not pending.future.cancelled():
                self.stats.queue.add(now - pending.enqueued_ns)
                if self.observer is not None:
                    self.observer.queued(now - pending.enqueued_ns)
                batch.append(pending)
        return batch

    async def _run(self, worker: W, batch: list[Pending], sent_ahead: bool = False) -> None:
        if sent_ahead:
            self._handed_ahead -= len(batch)  # the executor counts them from here, in this same step
        try:
            items = [pending.item for pending in batch]
            streamed: list[ChunkReader | None] = [
                None if p.reader is None else StreamedRequest(p.reader, p.future) for p in batch
            ]
            if streamed.count(None) < len(streamed):  # some request streams its answer: it may end before the batch
                outcome = await self.executor.execute(worker, items, streamed)
            else:
                outcome = await self.executor.execute(worker, items)
            results = outcome.items
            if len(results) != len(batch):
                raise InternalError(f"model {self.label}: worker answered {len(results)} of {len(batch)} requests")
        except BatchNotStartedError as exc:
            self._requeue(batch, exc)
            return
        except DMSError as exc:
            self._fail(batch, exc)
            return
        except Exception as exc:
            log.exception("%s: batch failed unexpectedly", self.label)
            self._fail(batch, InternalError(f"model {self.label}: {type(exc).__name__}"))
            return
        timings = outcome.timings
        self._batch_ns += (timings.input_ns + timings.infer_ns + timings.output_ns - self._batch_ns) // 8
        self.stats.record_batch(len(batch), timings.input_ns, timings.infer_ns, timings.output_ns)
        if self.observer is not None:
            self.observer.batch(len(batch), timings.input_ns, timings.infer_ns, timings.output_ns)
        now = time.perf_counter_ns()
        for pending, result in zip(batch, results, strict=True):
            (self.stats.fail if result.error is not None else self.stats.success).add(now - pending.enqueued_ns)
            result.batch_size = len(batch)
            if not pending.future.done():
                pending.future.set_result(result)
        self._hand_to_spares()  # the worker that answered may have room again

    def _requeue(self, batch: list[Pending], error: DMSError) -> None:
        """Put a batch that no worker took up back at the head of the queue (or fail it, once closed)."""
        if self._loop_task is None or self._loop_task.done():
            self._fail(batch, error)
            return
        self._queue.extendleft(reversed(batch))
        self._not_empty.set()
        self._hand_to_spares()

    def _fail(self, batch: list[Pending], error: DMSError) -> None:
        now = time.perf_counter_ns()
        for pending in batch:
            self.stats.fail.add(now - pending.enqueued_ns)
            if not pending.future.done():
                pending.future.set_exception(error)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _fail_queued(self, exc: DMSError) -> None:
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(exc)

    async def drain(self, timeout_s: float) -> None:
        """Stop taking new requests and wait (up to ``timeout_s``) for queued ones to finish."""
        self._closed = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._queue or self._in_flight:
                    await asyncio.sleep(0.01)

    async def close(self) -> None:
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        self._fail_queued(ModelUnavailableError(f"model {self.label} was stopped"))
