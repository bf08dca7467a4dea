"""What a model version's workers must offer the rest of the server, wherever they run.

The batcher hands batches to them (``Executor``); the data plane sizes, watches and describes them
(``ModelWorkers``). ``WorkerPool`` (local worker processes) is one implementation; the data plane takes a
``WorkersFactory`` so that another (workers on a cluster) can take its place model by model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from dms.engine.batcher import Executor
from dms.engine.pool import WorkerPool
from dms.engine.supervision import PoolSettings, PoolState
from dms.engine.worker_process import WorkerState
from dms.messages import LoadModel, ModelLoaded


class WorkerView(Protocol):
    """One worker as metrics and describe see it."""

    @property
    def worker_id(self) -> str: ...

    @property
    def state(self) -> WorkerState: ...

    @property
    def pid(self) -> int | None: ...

    def resident_bytes(self) -> int | None:
        """Its resident memory, or None when not known (not started, or already gone)."""
        ...


class ModelWorkers(Executor[Any], Protocol):
    """A model version's workers: batches in (``Executor``), and their size, state and description."""

    @property
    def state(self) -> PoolState: ...

    @property
    def target(self) -> int:
        """The workers asked for."""
        ...

    @property
    def restarts(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def signature(self) -> ModelLoaded | None:
        """What the first worker to load reported: inputs, outputs, platform."""
        ...

    @property
    def workers(self) -> Mapping[str, WorkerView]: ...

    @property
    def healthy(self) -> bool:
        """Not failed, and as many workers ready (idle or busy) as asked for."""
        ...

    def ready_count(self) -> int: ...

    async def scale(self, target: int, wait: bool = True, gpu_workers: int | None = None) -> None:
        """Grow or shrink to ``target`` workers; with ``wait``, return once the started ones have loaded.
        ``gpu_workers``: how many of them may use GPUs (TorchServe's ``number_gpu``), where the workers choose."""
        ...

    async def stop(self) -> None: ...

    def describe_workers(self) -> list[dict[str, object]]: ...


WorkersFactory = Callable[[str, LoadModel, PoolSettings], ModelWorkers]
"""Makes the workers of one model version: (label, what each worker loads, the pool's settings)."""


def local_workers(label: str, template: LoadModel, settings: PoolSettings) -> ModelWorkers:
    """Worker processes on this machine (``WorkerPool``): the default."""
    return WorkerPool(label, template, settings)
