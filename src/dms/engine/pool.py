"""A supervised pool of worker processes for one model version.

The pool starts workers, hands idle ones to the batcher, replaces any that die (at once the
first time, then with doubling backoff), and gives up after ``max_startup_failures``
consecutive failed starts, leaving a visible FAILED state until someone scales it again.

When every worker is busy and a full batch is waiting, the batcher may hand that batch to a busy
worker (``take_spare``): it waits in the worker's socket and is read the moment the batch before it
is answered, so a worker under load never sits idle while the server turns its answer around
(reads it, answers the clients, picks the next batch, sends it: about a millisecond per batch of
JPEGs here, in which a worker of a model that takes a few milliseconds per batch did nothing). A
worker holds at most one such batch, only a full one goes (waiting longer would not have made it
bigger), and one that dies before taking it up hands it back to be queued again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import time
from collections import deque

import msgspec

from dms.engine.chunk_streams import ChunkReader
from dms.engine.devices import device_for_new_worker, visible_gpus
from dms.engine.supervision import PoolSettings, PoolState, Supervisor
from dms.engine.worker_process import (
    WorkerProcess,
    WorkerStartError,
    WorkerState,
    unavailable,
)
from dms.errors import DMSError, RequestTimeoutError, WorkerDiedError
from dms.messages import Batch, BatchResult, LoadModel, RequestItem

log = logging.getLogger("dms.pool")


_SHORTAGES = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.ENOSPC}
_SHORTAGE_TEXTS = ("Too many open files", "Cannot allocate memory", "Resource temporarily unavailable")


def short_of_resources(exc: BaseException) -> bool:
    """A worker's start failed for lack of descriptors, processes or memory: in the server (an ``OSError``) or in
    the worker, which reports it as text."""
    if isinstance(exc, OSError) and exc.errno in _SHORTAGES:
        return True
    return any(text in str(exc) for text in _SHORTAGE_TEXTS)


class WorkerPool(Supervisor):
    def __init__(self, label: str, load_template: LoadModel, settings: PoolSettings) -> None:
        super().__init__(label, settings)
        self._template = load_template
        self.workers: dict[str, WorkerProcess] = {}
        self._idle: deque[WorkerProcess] = deque()
        self._idle_event = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._ids = itertools.count()
        self._batch_ids = itertools.count()
        self._spares_out = 0
        """Workers holding a second batch behind the one they work on (``take_spare``)."""
        self._shortages = 0
        """Starts in a row that failed for lack of descriptors, processes or memory (``short_of_resources``)."""
        self._memory_task: asyncio.Task[None] | None = None
        self._gpus = visible_gpus()
        self.gpu_workers: int | None = None
        """At most this many workers on GPUs, the rest on the CPU (``scale``'s ``gpu_workers``); None: all of them."""

    # -- sizing -----------------------------------------------------------------------------
    async def scale(self, target: int, wait: bool = True, gpu_workers: int | None = None) -> None:
        """Grow or shrink to ``target`` workers; with ``wait``, return once started ones load. ``gpu_workers``: at
        most that many of the workers started from now on GPUs (kept for later starts; None leaves it as it is)."""
        if gpu_workers is not None:
            self.gpu_workers = gpu_workers
        self._revive()
        self.target = target
        if self.settings.memory_limit_bytes and self._memory_task is None:
            self._memory_task = self._track(self._watch_memory())
        live = [w for w in self.workers.values() if not w.retiring]
        starts = [self._start() for _ in range(target - len(live))]
        for worker in live[target:] if target < len(live) else []:
            self._retire(worker)
        if target == 0 or not starts:
            self._settle()
        for start in starts:
            self._track(start)
        if wait and starts:
            await self.wait_settled()

    async def wait_settled(self) -> None:
        """Wait until every wanted worker is up, or the pool has given up (FAILED/STOPPED)."""
        while self.state == PoolState.STARTING or (self.state == PoolState.READY and self.ready_count() < self.target):
            self._state_changed.clear()
            await self._state_changed.wait()

    def _retire(self, worker: WorkerProcess) -> None:
        worker.retiring = True
        if worker in self._idle:
            self._idle.remove(worker)
            self._track(self._stop(worker))

    async def stop(self) -> None:
        self.state, self.target = PoolState.STOPPED, 0
        self._wake()
        self._cancel_tasks()
        await asyncio.gather(*(self._stop(w) for w in list(self.workers.values())), return_exceptions=True)

    async def _stop(self, worker: WorkerProcess) -> None:
        self.workers.pop(worker.worker_id, None)
        await worker.stop()

    # -- starting and replacing ----------------------------------------------------------------
    async def _start(self, delay_s: float = 0.0) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)
        if self.state == PoolState.STOPPED or self._live_count() >= self.target:
            return
        number = next(self._ids)
        worker_id = f"{self.settings.worker_id_prefix}{number}"
        load = msgspec.structs.replace(
            self._template,
            worker_id=worker_id,
            cpu_threads=self._cpu_threads(),
            gpu_id=device_for_new_worker(
                number,
                self._gpus,
                sum(1 for w in self.workers.values() if w.load.gpu_id is not None and not w.retiring),
                self.gpu_workers,
                self.settings.frontend_index,
                self.settings.frontends,
            ),
        )
        worker = WorkerProcess(worker_id, load, f"{self.label} w{worker_id}")
        self.workers[worker_id] = worker
        try:
            await worker.start(self.settings.startup_timeout_s)
        except (WorkerStartError, OSError) as exc:
            self.workers.pop(worker_id, None)
            if short_of_resources(exc):
                self._on_resource_shortage(str(exc))
            else:
                self._on_start_failure(str(exc))
            return
        self._shortages = 0
        self._loaded(worker.loaded)
        self._track(self._watch(worker))
        self._make_idle(worker)
        self._settle()

    def _on_resource_shortage(self, reason: str) -> None:
        """The machine, not the model, stopped the start (no descriptors, processes or memory to spare): retried
        with backoff for as long as it takes, never counted towards FAILED, so the model recovers by itself."""
        self._shortages += 1
        self.last_error = reason
        self._start_again(self._shortages, f"could not start for lack of resources ({reason})", floor_s=1.0)

    async def _watch(self, worker: WorkerProcess) -> None:
        code = await worker.wait_dead()
        known = self.workers.pop(worker.worker_id, None) is not None
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        if not known or worker.retiring or self.state == PoolState.STOPPED:
            return
        self._replace(f"worker pid {worker.pid} {worker.exit_cause(code)}")

    async def _watch_memory(self) -> None:
        limit = self.settings.memory_limit_bytes
        assert limit is not None
        while self.state != PoolState.STOPPED:
            await asyncio.sleep(self.settings.memory_check_interval_s)
            for worker in list(self.workers.values()):
                rss = worker.resident_bytes()
                if rss is not None and rss > limit:
                    reason = f"its memory ({rss // 2**20} MiB) passed the model's limit ({limit // 2**20} MiB)"
                    log.warning("%s: worker pid %s %s", self.label, worker.pid, reason)
                    worker.kill(reason)

    # -- the batcher's side -------------------------------------------------------------------
    async def acquire(self) -> WorkerProcess:
        """Wait for an idle worker; raise when the pool can no longer serve."""
        while True:
            if self.state in (PoolState.FAILED, PoolState.STOPPED):
                raise unavailable(self.label, self._unavailable_reason())
            while self._idle:
                # The worker most recently back first: its caches are warm. Under load every worker is
                # busy anyway; at low load one worker serving the stream answers a lone request sooner.
                worker = self._idle.pop()
                if worker.state == WorkerState.READY and not worker.retiring:
                    worker.assigned += 1
                    return worker
            self._idle_event.clear()
            await self._idle_event.wait()

    def take_spare(self, most: int = 2) -> WorkerProcess | None:
        """A busy worker that can take one more batch now (to hold at most ``most``), the one busy longest; None
        while one is idle."""
        if any(w.state == WorkerState.READY and not w.retiring for w in self._idle):
            return None
        candidates = [
            w
            for w in self.workers.values()
            if 1 <= w.assigned < most and w.state == WorkerState.BUSY and not w.retiring
        ]
        if not candidates:
            return None
        spare = min(candidates, key=lambda w: w.busy_since)
        spare.assigned += 1
        self._spares_out += 1
        return spare

    async def execute(
        self, worker: WorkerProcess, items: list[RequestItem], readers: list[ChunkReader | None] | None = None
    ) -> BatchResult:
        batch = Batch(batch_id=next(self._batch_ids), items=items)
        try:
            result = await worker.run_batch(batch, self.settings.response_timeout_s, readers)
        except (WorkerDiedError, RequestTimeoutError):
            raise  # the watcher replaces the worker
        except BaseException:
            worker.kill()
            raise
        finally:
            self._unassign(worker)
        self._answered()
        self._hand_back(worker)
        return result

    def waiting(self) -> int:
        if not self._spares_out:
            return 0
        return sum(worker.queued_requests for worker in self.workers.values())

    def withdraw(self, worker: WorkerProcess, item: RequestItem) -> None:
        worker.withdraw(item)

    def release(self, worker: WorkerProcess) -> None:
        self._unassign(worker)
        self._hand_back(worker)

    def _unassign(self, worker: WorkerProcess) -> None:
        """One batch given to ``worker`` is over (answered, failed, or never sent)."""
        if worker.assigned >= 2:
            self._spares_out -= 1
        worker.assigned -= 1

    def _hand_back(self, worker: WorkerProcess) -> None:
        if worker.assigned:
            return  # still busy with the batch it was given while it worked on this one
        if worker.retiring:
            self._track(self._stop(worker))
        else:
            self._make_idle(worker)

    def _make_idle(self, worker: WorkerProcess) -> None:
        self._idle.append(worker)
        self._idle_event.set()

    # -- state --------------------------------------------------------------------------------
    def _live_count(self) -> int:
        return sum(1 for w in self.workers.values() if not w.retiring)

    def ready_count(self) -> int:
        return sum(
            1 for w in self.workers.values() if w.state in (WorkerState.READY, WorkerState.BUSY) and not w.retiring
        )

    def _wake(self) -> None:
        self._idle_event.set()
        self._state_changed.set()

    def _cpu_threads(self) -> int:
        return max(1, (os.cpu_count() or 1) // max(1, self.target))

    def describe_workers(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for worker in self.workers.values():
            rows.append(
                {
                    "id": worker.worker_id,
                    "pid": worker.pid,
                    "startTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(worker.started_at)),
                    "status": worker.state.value,
                    "memoryUsage": worker.resident_bytes() or 0,
                    "gpu": worker.load.gpu_id is not None,
                    "gpuId": worker.load.gpu_id,
                }
            )
        return rows


__all__ = ["DMSError", "WorkerPool"]
