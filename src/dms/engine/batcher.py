"""Dynamic batching for one model version, testable without processes.

Requests wait in a bounded queue. Whenever a worker is idle, the batcher hands it everything
queued, up to ``batch_size``: batches form from what piles up while workers are busy, and a lone
request never waits for companions while a worker sits idle. So the wait that batching adds is
zero, within the ``max_batch_delay_ms`` upper bound that TorchServe users set. Requests whose
callers gave up (cancelled futures) are dropped before they reach a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any, Generic, Protocol, TypeVar

from dms.engine.messages import RequestItem, ResponseItem
from dms.errors import DMSError, InternalError, ModelUnavailableError, QueueFullError

log = logging.getLogger("dms.batcher")

W = TypeVar("W")


class Executor(Protocol[W]):
    async def acquire(self) -> W:
        """Wait for an idle worker (raise a DMSError when none will come)."""
        ...

    async def execute(self, worker: W, items: list[RequestItem]) -> list[ResponseItem]:
        """Run one batch on ``worker`` and make the worker available again."""
        ...

    def release(self, worker: W) -> None:
        """Give back a worker that got no batch."""
        ...


Pending = tuple[RequestItem, "asyncio.Future[ResponseItem]"]


class Batcher(Generic[W]):
    def __init__(self, label: str, executor: Executor[W], batch_size: int, queue_size: int) -> None:
        self.label = label
        self.executor = executor
        self.batch_size = batch_size
        self.queue_size = queue_size
        self._queue: deque[Pending] = deque()
        self._not_empty = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def in_flight_batches(self) -> int:
        return len(self._in_flight)

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._dispatch_loop())

    def submit(self, item: RequestItem) -> asyncio.Future[ResponseItem]:
        if self._closed:
            raise ModelUnavailableError(f"model {self.label} is no longer accepting requests")
        if len(self._queue) >= self.queue_size:
            raise QueueFullError(
                f"model {self.label} has {self.queue_size} requests queued (job_queue_size); retry later"
            )
        future: asyncio.Future[ResponseItem] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._not_empty.set()
        return future

    async def _dispatch_loop(self) -> None:
        while True:
            if not self._queue:
                self._not_empty.clear()
                await self._not_empty.wait()
            try:
                worker = await self.executor.acquire()
            except DMSError as exc:
                self._fail_queued(exc)
                continue
            batch = self._take()
            if not batch:
                self.executor.release(worker)  # everything queued had been cancelled
                continue
            self._spawn(self._run(worker, batch))

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        while self._queue and len(batch) < self.batch_size:
            item, future = self._queue.popleft()
            if not future.cancelled():
                batch.append((item, future))
        return batch

    async def _run(self, worker: W, batch: list[Pending]) -> None:
        try:
            results = await self.executor.execute(worker, [item for item, _ in batch])
            if len(results) != len(batch):
                raise InternalError(f"model {self.label}: worker answered {len(results)} of {len(batch)} requests")
        except DMSError as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception as exc:
            log.exception("%s: batch failed unexpectedly", self.label)
            error = InternalError(f"model {self.label}: {type(exc).__name__}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _fail_queued(self, exc: DMSError) -> None:
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(exc)

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
