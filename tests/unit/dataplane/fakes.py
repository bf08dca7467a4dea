"""Workers that run in the test's own event loop (no process): a ``ModelWorkers`` on the real ``Supervisor``, so that
the data plane, the registry, the autoscaler and the management routes are tested in-process, with the same rules
for starting, failing and replacing workers as the real pools."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from dms.engine.chunk_streams import ChunkReader
from dms.engine.supervision import PoolSettings, PoolState, Supervisor
from dms.engine.worker_process import WorkerState, unavailable
from dms.engine.workers import ModelWorkers, WorkersFactory
from dms.messages import BatchResult, LoadModel, ModelLoaded, RequestItem, ResponseItem

Answer = Callable[[RequestItem], ResponseItem]


def echo(item: RequestItem) -> ResponseItem:
    return ResponseItem(status=200, body=item.body, content_type=item.content_type)


@dataclass
class FakeWorker:
    worker_id: str
    state: WorkerState = WorkerState.STARTING
    batches: list[int] = field(default_factory=list)
    """The size of each batch it ran."""

    @property
    def pid(self) -> int | None:
        return None

    def resident_bytes(self) -> int | None:
        return None


class FakeWorkers(Supervisor):
    def __init__(self, label: str, template: LoadModel, settings: PoolSettings, plan: FakePlan) -> None:
        super().__init__(label, settings)
        self.template = template
        self.plan = plan
        self.workers: dict[str, FakeWorker] = {}
        self._idle: deque[FakeWorker] = deque()
        self._changed = asyncio.Event()
        self._ids = itertools.count()

    async def _start(self, delay_s: float = 0.0) -> None:
        await asyncio.sleep(delay_s)
        if self.state == PoolState.STOPPED or len(self.workers) >= self.target:
            return
        worker = FakeWorker(str(next(self._ids)))
        self.workers[worker.worker_id] = worker
        await asyncio.sleep(self.plan.start_s)
        if self.plan.load_error is not None:
            del self.workers[worker.worker_id]
            self._on_start_failure(self.plan.load_error)
            return
        worker.state = WorkerState.READY
        self._loaded(ModelLoaded(pid=0))
        self._idle.append(worker)
        self._settle()

    def ready_count(self) -> int:
        return sum(1 for w in self.workers.values() if w.state in (WorkerState.READY, WorkerState.BUSY))

    def _wake(self) -> None:
        self._changed.set()

    async def scale(self, target: int, wait: bool = True, gpu_workers: int | None = None) -> None:
        self.gpu_workers = gpu_workers
        self._revive()
        self.target = target
        while len(self.workers) > target and self._idle:
            del self.workers[self._idle.pop().worker_id]
        for _ in range(target - len(self.workers)):
            self._track(self._start())
        self._settle()
        while wait and self.state == PoolState.STARTING:
            self._changed.clear()
            await self._changed.wait()

    async def stop(self) -> None:
        self.state, self.target = PoolState.STOPPED, 0
        self._cancel_tasks()
        self.workers.clear()
        self._wake()

    async def acquire(self) -> FakeWorker:
        while True:
            if self.state in (PoolState.FAILED, PoolState.STOPPED):
                raise unavailable(self.label, self._unavailable_reason())
            if self._idle:
                worker = self._idle.pop()
                worker.state = WorkerState.BUSY
                return worker
            self._changed.clear()
            await self._changed.wait()

    async def execute(
        self, worker: FakeWorker, items: list[RequestItem], readers: list[ChunkReader | None] | None = None
    ) -> BatchResult:
        """Answer each request whole (a streamed request too, as a Ray worker answers it: ``readers`` get nothing)."""
        await self.plan.gate.wait()
        worker.batches.append(len(items))
        self._answered()
        self.release(worker)
        return BatchResult(batch_id=0, items=[self.plan.answer(item) for item in items])

    def release(self, worker: FakeWorker) -> None:
        worker.state = WorkerState.READY
        if worker.worker_id in self.workers:
            self._idle.append(worker)
        self._wake()

    def describe_workers(self) -> list[dict[str, object]]:
        return [{"id": w.worker_id, "status": w.state.value, "batches": len(w.batches)} for w in self.workers.values()]


@dataclass
class FakePlan:
    """How the fake workers of every model behave; tests change it as they go."""

    answer: Answer = echo
    start_s: float = 0.0
    load_error: str | None = None
    """Set: every start fails with this, as a handler that cannot load."""
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    """Cleared: batches wait (requests pile up in the queue)."""
    made: list[FakeWorkers] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.gate.set()

    def factory(self) -> WorkersFactory:
        def make(label: str, template: LoadModel, settings: PoolSettings) -> ModelWorkers:
            workers = FakeWorkers(label, template, settings, self)
            self.made.append(workers)
            return workers

        return make
