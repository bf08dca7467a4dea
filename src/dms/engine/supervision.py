"""What every pool of a model version's workers does alike, wherever they run (``WorkerPool``'s processes,
``RayWorkers``' actors): the pool's state and settings, failed starts counted up to FAILED, the doubling wait
before a worker is started again, a dead worker replaced, and the background tasks the pool keeps."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dms.messages import ModelLoaded, RequestItem

log = logging.getLogger("dms.pool")


class PoolState(StrEnum):
    STARTING = "STARTING"
    READY = "READY"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


@dataclass(frozen=True)
class Placement:
    """What each worker asks of a cluster that places workers by resources (Ray): ignored by local pools."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_bytes: int | None = None
    resources: tuple[tuple[str, float], ...] = ()
    """Custom resources a node must offer, as (name, amount) pairs."""
    strategy: str = "SPREAD"

    def demand(self) -> dict[str, float]:
        """Everything asked for, by Ray's resource names; zero amounts left out."""
        asked = {"CPU": self.num_cpus, "GPU": self.num_gpus, "memory": float(self.memory_bytes or 0)}
        return {name: amount for name, amount in (*asked.items(), *self.resources) if amount}


@dataclass(frozen=True)
class PoolSettings:
    response_timeout_s: float
    startup_timeout_s: float
    max_startup_failures: int
    restart_backoff_max_s: float
    memory_limit_bytes: int | None = None
    """A worker whose resident memory passes this is killed and replaced."""
    memory_check_interval_s: float = 1.0
    frontend_index: int = 0
    """Which of the server's frontends (``dms.frontends``) owns the pool: the ones after the first put
    ``f{index}-`` before each worker's number, so that worker ids stay unique across frontends."""
    frontends: int = 1
    """How many frontends the server runs: their workers take turns over the GPUs (``gpu_for_worker``)."""
    placement: Placement = Placement()

    @property
    def worker_id_prefix(self) -> str:
        return f"f{self.frontend_index}-" if self.frontend_index else ""


class Supervisor(ABC):
    """The state and the rules of a pool; a subclass starts, hands out and stops its own kind of worker."""

    def __init__(self, label: str, settings: PoolSettings) -> None:
        self.label = label
        self.settings = settings
        self.state = PoolState.STARTING
        self.target = 0
        """The workers asked for."""
        self.restarts = 0
        self.last_error: str | None = None
        self.signature: ModelLoaded | None = None
        """What a worker reported when it loaded: inputs, outputs, platform."""
        self._startup_failures = 0
        self._restart_delay_s = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    @abstractmethod
    async def _start(self, delay_s: float = 0.0) -> None:
        """Start one worker after ``delay_s``, if the pool still wants one then."""

    @abstractmethod
    def ready_count(self) -> int:
        """Workers able to take a batch (idle or busy), not retiring."""

    @abstractmethod
    def _wake(self) -> None:
        """Tell whoever waits on the pool (for a worker, or for it to settle) that its state changed."""

    # -- the rules ----------------------------------------------------------------------------
    def _revive(self) -> None:
        """Asked to scale after it gave up or stopped: start counting afresh."""
        if self.state in (PoolState.FAILED, PoolState.STOPPED):
            self.state, self._startup_failures, self.last_error = PoolState.STARTING, 0, None

    def _settle(self) -> None:
        """READY once as many workers are ready as asked for, STARTING before; FAILED and STOPPED stay."""
        if self.state not in (PoolState.FAILED, PoolState.STOPPED):
            self.state = PoolState.READY if self.ready_count() >= self.target else PoolState.STARTING
        self._wake()

    def _loaded(self, loaded: ModelLoaded | None) -> None:
        """A worker started: failed starts are counted afresh."""
        self._startup_failures = 0
        if loaded is not None:
            self.signature = loaded

    def _on_start_failure(self, reason: str) -> None:
        """The model (not the machine or the cluster) kept a worker from starting: ``max_startup_failures`` in a row
        and the pool is FAILED, visible until someone scales it again; before that, it tries again."""
        self._startup_failures += 1
        self.last_error = reason
        if self._startup_failures >= self.settings.max_startup_failures:
            log.error("%s failed to start %d times; marking it FAILED: %s", self.label, self._startup_failures, reason)
            self.state = PoolState.FAILED
            self._wake()
            return
        self._start_again(self._startup_failures, f"failed to start ({reason})")

    def _start_again(self, attempts: int, why: str, floor_s: float = 0.0) -> None:
        """Start a worker again after a doubling delay (1, 2, 4 s, ... at most ``restart_backoff_max_s``, and at
        least ``floor_s`` there: a start that fails for the machine's sake is not retried in a tight loop)."""
        delay = min(2.0 ** (attempts - 1), max(floor_s, self.settings.restart_backoff_max_s))
        log.warning("%s worker %s; retrying in %.1f s", self.label, why, delay)
        self._settle()
        self._track(self._start(delay))

    def _replace(self, reason: str) -> None:
        """A worker the pool still wanted died: start another, at once the first time, then after a delay that
        doubles (up to ``restart_backoff_max_s``) while deaths keep coming with no batch answered between."""
        self.last_error = reason
        log.warning("%s: %s; replacing it", self.label, reason)
        self.restarts += 1
        delay = self._restart_delay_s
        self._restart_delay_s = min(max(1.0, delay * 2), self.settings.restart_backoff_max_s)
        self._settle()
        self._track(self._start(delay))

    def _answered(self) -> None:
        """A batch was answered: the next death is replaced at once again."""
        self._restart_delay_s = 0.0

    def _unavailable_reason(self) -> str:
        """Why the pool takes no batch any more (it is FAILED or STOPPED)."""
        if self.state == PoolState.STOPPED:
            return "it is being unregistered or the server is stopping"
        return f"its workers failed to start ({self.last_error})"

    # -- the batcher's ``Executor``, for a pool that sends no batch ahead to a busy worker ----------------------
    def take_spare(self, most: int = 2) -> Any:
        """None: no worker takes a second batch (``WorkerPool`` overrides this)."""
        return None

    def withdraw(self, worker: Any, item: RequestItem) -> None:
        """Nothing to withdraw: no batch waits behind another."""
        return None

    def waiting(self) -> int:
        return 0

    @property
    def healthy(self) -> bool:
        """Not failed, and as many workers ready (idle or busy) as asked for."""
        return self.state != PoolState.FAILED and self.ready_count() >= self.target

    # -- background tasks ---------------------------------------------------------------------
    def _track(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: background task failed: %r", self.label, task.exception())

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
