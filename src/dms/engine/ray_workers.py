"""A model version's workers as Ray actors, placed by a Ray cluster: the ``ModelWorkers`` of ``--ray-address``.

Each worker is a ``WorkerActor`` (``dms.worker.ray_actor``) running the same ``ModelService`` as a local worker,
with the resources the model's ``ray`` settings ask for, supervised as ``WorkerPool`` supervises processes: one
actor call per batch; a worker that dies (its process or its node) fails only its batch and is replaced where
the cluster has room; ``max_startup_failures`` failed loads in a row make the model FAILED. A worker waits to be
placed as long as it takes, but once no node could take it (or none has had room for ``ROOM_WAIT_S``), requests
get 503 naming why instead of waiting. An actor that died before it ran (its node had just died) does not count
towards FAILED. No batch is sent ahead to a busy worker: a call queued in Ray cannot be withdrawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from typing import Any

import msgspec
import ray.exceptions

from dms.engine.chunk_streams import ChunkReader
from dms.engine.ray_cluster import RayCluster, demand_text
from dms.engine.supervision import PoolSettings, PoolState, Supervisor
from dms.engine.worker_process import WorkerState, unavailable
from dms.engine.workers import ModelWorkers, WorkersFactory
from dms.errors import InternalError, RequestTimeoutError, WorkerDiedError, error_from_wire
from dms.messages import Batch, BatchResult, LoadFailed, LoadModel, ModelLoaded, RequestItem
from dms.worker.ray_actor import CONTROL_GROUP, PlacedOn

log = logging.getLogger("dms.ray")

ROOM_WAIT_S = 10.0
"""A worker that a node could take but none has placed this long counts as waiting for room."""
MEMORY_POLL_S = 5.0

_encoder = msgspec.msgpack.Encoder()
_loaded_decoder = msgspec.msgpack.Decoder(ModelLoaded | LoadFailed)
_result_decoder = msgspec.msgpack.Decoder(BatchResult)
_placed_decoder = msgspec.msgpack.Decoder(PlacedOn)


class RayWorker:
    """One worker actor as the pool, metrics and describe see it."""

    def __init__(self, worker_id: str, actor: Any) -> None:
        self.worker_id = worker_id
        self.actor = actor
        self.state = WorkerState.STARTING
        self.started_at = time.time()
        self.placed: PlacedOn | None = None
        self.waiting_for_room: str | None = None
        """Why Ray has not placed it yet, once that says something (``ROOM_WAIT_S``, or no node could)."""
        self.error_before: str | None = None
        """The pool's ``last_error`` before this worker's wait replaced it."""
        self.retiring = False
        self.memory = 0

    @property
    def pid(self) -> int | None:
        """None: its process is on a node of the cluster, not necessarily this machine's (describe has it)."""
        return None

    def resident_bytes(self) -> int | None:
        """Its memory as last polled from the actor (``MEMORY_POLL_S``); None before the first poll."""
        return self.memory or None


class RayWorkers(Supervisor):
    def __init__(self, label: str, template: LoadModel, settings: PoolSettings, cluster: RayCluster, max_pack: int):
        super().__init__(label, settings)
        self._template = template
        self._cluster = cluster
        self._max_pack = max_pack
        self.workers: dict[str, RayWorker] = {}
        self._idle: deque[RayWorker] = deque()
        self._changed = asyncio.Event()
        self._ids = itertools.count()
        self._batch_ids = itertools.count()
        self._pack: tuple[str, Any] | None = None
        self._pack_lock = asyncio.Lock()
        self._poll: asyncio.Task[None] | None = None

    # -- sizing -----------------------------------------------------------------------------
    async def scale(self, target: int, wait: bool = True, gpu_workers: int | None = None) -> None:
        """``gpu_workers`` is not used: Ray places each actor with the GPUs its model's ``ray.num_gpus`` asks for."""
        self._revive()
        self.target = target
        if self._poll is None:
            self._poll = self._track(self._poll_memory())
        live = self._live()
        for worker in live[target:]:
            self._retire(worker)
        for _ in range(target - len(live)):
            self._track(self._start())
        self._settle()
        if wait:
            await self.wait_settled()

    async def wait_settled(self) -> None:
        """Wait until every wanted worker is up, or the pool gave up, or the rest wait for room on the cluster."""
        while self.state == PoolState.STARTING and not self._all_waiting_for_room():
            self._changed.clear()
            await self._changed.wait()

    def _retire(self, worker: RayWorker) -> None:
        worker.retiring = True
        if worker.state != WorkerState.BUSY:
            self._end(worker)

    def _end(self, worker: RayWorker) -> None:
        self.workers.pop(worker.worker_id, None)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        worker.state = WorkerState.DEAD
        with contextlib.suppress(Exception):
            self._cluster.kill(worker.actor)

    async def stop(self) -> None:
        self.state, self.target = PoolState.STOPPED, 0
        self._wake()
        self._cancel_tasks()
        for worker in list(self.workers.values()):
            self._end(worker)

    # -- starting and replacing ----------------------------------------------------------------
    async def _start(self, delay_s: float = 0.0) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)
        if self.state == PoolState.STOPPED or len(self._live()) >= self.target:
            return
        worker_id = f"{self.settings.worker_id_prefix}{next(self._ids)}"
        placement = self.settings.placement
        try:
            digest, ref = await self._packed()
        except Exception as exc:  # an unreadable model folder, an object store that refuses it
            self._on_start_failure(f"its files could not be shipped to the Ray cluster: {exc}")
            return
        worker = RayWorker(worker_id, self._cluster.new_actor(placement))
        self.workers[worker_id] = worker
        room = self._track(self._explain_wait(worker))
        try:
            worker.placed = _placed_decoder.decode(await worker.actor.placed_on.remote())
        except ray.exceptions.RayError as exc:  # its node died before it ran: the cluster's doing, not the model's
            if self.workers.get(worker_id) is not worker:
                return  # let go while it waited (scaled down, stopped)
            self._end(worker)
            self._start_again(1, f"worker {worker_id} could not start on the cluster ({_first_line(exc)})", 1.0)
            return
        finally:
            room.cancel()
            if worker.waiting_for_room is not None and self.last_error == worker.waiting_for_room:
                self.last_error = worker.error_before  # placed after all: the error before the wait stands again
            worker.waiting_for_room = None
        load = msgspec.structs.replace(
            self._template, worker_id=worker_id, cpu_threads=max(1, round(placement.num_cpus))
        )
        reply: ModelLoaded | LoadFailed | str
        try:
            async with asyncio.timeout(self.settings.startup_timeout_s):
                reply = _loaded_decoder.decode(
                    await worker.actor.load.remote(_encoder.encode(load), [digest, ref], self._max_pack)
                )
        except TimeoutError:
            reply = f"{self.label} w{worker_id} did not load within {self.settings.startup_timeout_s:g} s"
        except ray.exceptions.RayError as exc:
            reply = f"{self.label} w{worker_id} died while loading the model: {_first_line(exc)}"
        if self.workers.get(worker_id) is not worker:
            return  # let go while it loaded
        if not isinstance(reply, ModelLoaded):
            self._end(worker)
            if isinstance(reply, LoadFailed):
                reply = error_from_wire(reply.error.type_name, reply.error.message).message
            self._on_start_failure(reply)
            return
        self._loaded(reply)
        worker.state = WorkerState.READY
        self._track(self._watch(worker))
        self._make_idle(worker)
        self._settle()
        log.info("%s: worker %s ready on node %s (pid %s)", self.label, worker_id, worker.placed.node_ip, reply.pid)

    async def _packed(self) -> tuple[str, Any]:
        """The model's files in the object store, put there once for all of this version's workers."""
        async with self._pack_lock:
            if self._pack is None:
                self._pack = await self._cluster.ship(self._template)
            return self._pack

    async def _explain_wait(self, worker: RayWorker) -> None:
        """Say why a worker is not placed: at once when no node could take it, else after ``ROOM_WAIT_S``."""
        reason = await self._cluster.unplaceable(self.settings.placement)
        if reason is None:
            await asyncio.sleep(ROOM_WAIT_S)
            asked = demand_text(self.settings.placement.demand())
            reason = f"waiting for room on the Ray cluster for {ROOM_WAIT_S:g} s (each worker asks {asked})"
        worker.error_before = self.last_error
        worker.waiting_for_room = self.last_error = reason
        log.warning("%s: worker %s cannot be placed: %s", self.label, worker.worker_id, reason)
        self._wake()

    async def _watch(self, worker: RayWorker) -> None:
        """Wait for the worker's death (its ``watch`` call fails then); replace it unless it was let go."""
        cause = "its watch call ended"
        try:
            await worker.actor.watch.options(concurrency_group=CONTROL_GROUP).remote()
        except ray.exceptions.RayError as exc:
            cause = _first_line(exc)
        known = self.workers.get(worker.worker_id) is worker
        self._end(worker)
        if not known or worker.retiring or self.state == PoolState.STOPPED:
            return
        where = worker.placed.node_ip if worker.placed else "?"
        self._replace(f"worker {worker.worker_id} on node {where} died: {cause}")

    async def _poll_memory(self) -> None:
        """Each worker's resident memory, for describe; a worker over the model's limit is replaced."""
        limit = self.settings.memory_limit_bytes
        interval = self.settings.memory_check_interval_s if limit else MEMORY_POLL_S
        while self.state != PoolState.STOPPED:
            for worker in [w for w in self.workers.values() if w.state in (WorkerState.READY, WorkerState.BUSY)]:
                with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
                    async with asyncio.timeout(MEMORY_POLL_S):
                        worker.memory = await worker.actor.memory.options(concurrency_group=CONTROL_GROUP).remote()
                if limit and worker.memory > limit:
                    log.warning("%s: worker %s passed the memory limit; replacing it", self.label, worker.worker_id)
                    self._cluster.kill(worker.actor)  # its watch sees the death and replaces it
            await asyncio.sleep(interval)

    # -- the batcher's side -------------------------------------------------------------------
    async def acquire(self) -> RayWorker:
        while True:
            if self.state in (PoolState.FAILED, PoolState.STOPPED):
                raise unavailable(self.label, self._unavailable_reason())
            while self._idle:
                worker = self._idle.pop()
                if worker.state == WorkerState.READY and not worker.retiring:
                    worker.state = WorkerState.BUSY
                    return worker
            if self.ready_count() == 0 and self._all_waiting_for_room():
                raise unavailable(self.label, f"its workers cannot be placed: {self.last_error}")
            self._changed.clear()
            await self._changed.wait()

    async def execute(
        self, worker: RayWorker, items: list[RequestItem], readers: list[ChunkReader | None] | None = None
    ) -> BatchResult:
        """Run a batch in the actor. A streamed answer is not streamed through Ray yet: its chunks are joined into
        the one answer the actor returns (``readers`` get nothing)."""
        frame = _encoder.encode(Batch(batch_id=next(self._batch_ids), items=items))
        timeout = self.settings.response_timeout_s
        try:
            async with asyncio.timeout(timeout):
                reply = await worker.actor.run_batch.remote(frame)
        except TimeoutError:
            self._cluster.kill(worker.actor)
            raise RequestTimeoutError(
                f"model {self._template.model_name} did not answer within {timeout:g} s "
                f"(response_timeout_s); its worker was restarted"
            ) from None
        except ray.exceptions.RayActorError as exc:
            worker.state = WorkerState.DEAD
            where = worker.placed.node_ip if worker.placed else "?"
            raise WorkerDiedError(
                f"the worker of model {self._template.model_name} on node {where} died while handling this "
                f"request ({_first_line(exc)}); it is being replaced"
            ) from None
        except ray.exceptions.RayError as exc:
            self._cluster.kill(worker.actor)
            raise InternalError(f"model {self._template.model_name}: the batch failed: {_first_line(exc)}") from None
        except BaseException:
            self._cluster.kill(worker.actor)
            raise
        self._answered()
        self.release(worker)
        return _result_decoder.decode(reply)

    def release(self, worker: RayWorker) -> None:
        if worker.state == WorkerState.BUSY:
            worker.state = WorkerState.READY
        if worker.retiring:
            self._end(worker)
        elif worker.state == WorkerState.READY:
            self._make_idle(worker)

    def _make_idle(self, worker: RayWorker) -> None:
        self._idle.append(worker)
        self._wake()

    # -- state --------------------------------------------------------------------------------
    def _live(self) -> list[RayWorker]:
        return [w for w in self.workers.values() if not w.retiring]

    def ready_count(self) -> int:
        return sum(1 for w in self._live() if w.state in (WorkerState.READY, WorkerState.BUSY))

    def _all_waiting_for_room(self) -> bool:
        starting = [w for w in self._live() if w.state == WorkerState.STARTING]
        return bool(starting) and all(w.waiting_for_room for w in starting)

    def _wake(self) -> None:
        self._changed.set()

    def describe_workers(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for worker in self.workers.values():
            placed = worker.placed
            rows.append(
                {
                    "id": worker.worker_id,
                    "pid": placed.pid if placed else None,
                    "startTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(worker.started_at)),
                    "status": worker.state.value,
                    "memoryUsage": worker.memory,
                    "gpu": bool(placed and placed.gpu_ids),
                    "gpuId": int(placed.gpu_ids[0]) if placed and placed.gpu_ids else None,
                    "node": placed.node_ip if placed else None,
                    "nodeId": placed.node_id if placed else None,
                    "waitingForRoom": worker.waiting_for_room,
                }
            )
        return rows


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def ray_workers(cluster: RayCluster, max_pack_bytes: int) -> WorkersFactory:
    """A ``WorkersFactory`` whose workers are actors on ``cluster``."""

    def make(label: str, template: LoadModel, settings: PoolSettings) -> ModelWorkers:
        return RayWorkers(label, template, settings, cluster, max_pack_bytes)

    return make
