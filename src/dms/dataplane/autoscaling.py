"""Grow and shrink a model version's workers between ``min_worker`` and ``max_worker`` on its queue's depth.

The signal is the one the Kubernetes autoscaler is given (``dms_queue_depth_per_worker``): requests waiting
per ready worker. Sustained above the model's ``target_queue_per_worker`` for ``upscale_after_s``, the
workers grow in proportion (as many as would bring it back to the target, at most ``max_worker``); with
nothing waiting and a worker idle for ``downscale_after_s``, they shrink by one, down to ``min_worker``. On a
Ray cluster, workers that find no room stay pending, which is what makes Ray's autoscaler add a node.

``QueueDepthScaler`` decides from samples and knows no clock or server, so it is tested alone; the data plane
samples each version that may scale (``DataPlane``, with ``autoscale``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from dms.dataplane.registry import ModelRegistry, ModelVersion
from dms.engine.supervision import PoolState

log = logging.getLogger("dms.autoscale")

SAMPLE_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Sample:
    at_s: float
    """When it was taken (a monotonic clock)."""
    pending: int
    """Requests not yet taken up by a worker."""
    ready: int
    """Workers able to take a batch (idle or busy)."""
    busy: int
    """Workers running a batch."""
    target: int
    """Workers asked for now."""


class QueueDepthScaler:
    def __init__(self, minimum: int, maximum: int, target_queue: float, up_after_s: float, down_after_s: float):
        self.minimum, self.maximum = minimum, maximum
        self.target_queue = max(target_queue, 1e-9)
        self.up_after_s, self.down_after_s = up_after_s, down_after_s
        self._pressed_since: float | None = None
        self._calm_since: float | None = None

    def decide(self, sample: Sample) -> int | None:
        """The worker count to scale to now, or None to stay."""
        if sample.target < self.minimum or sample.target > self.maximum:
            return min(max(sample.target, self.minimum), self.maximum)
        per_worker = sample.pending / max(1, sample.ready)
        if per_worker > self.target_queue and sample.target < self.maximum and sample.ready >= sample.target:
            self._calm_since = None
            self._pressed_since = _since(self._pressed_since, sample.at_s)
            if sample.at_s - self._pressed_since < self.up_after_s:
                return None
            self._pressed_since = None
            wanted = math.ceil(sample.ready * per_worker / self.target_queue)
            return min(self.maximum, max(sample.target + 1, wanted))
        if sample.pending == 0 and sample.busy < sample.ready and sample.target > self.minimum:
            self._pressed_since = None
            self._calm_since = _since(self._calm_since, sample.at_s)
            if sample.at_s - self._calm_since < self.down_after_s:
                return None
            self._calm_since = None
            return sample.target - 1
        self._pressed_since = self._calm_since = None
        return None


def _since(started: float | None, now: float) -> float:
    return now if started is None else started


class Autoscaler:
    """Samples every registered version whose ``max_worker`` is above its ``min_worker`` and scales its workers
    as its ``QueueDepthScaler`` decides (``ray`` settings of its model config)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry
        self._scalers: dict[tuple[str, str], tuple[tuple[object, ...], QueueDepthScaler]] = {}
        self._scaling: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        seen = set()
        for model in self._registry:
            key = (model.name, model.version)
            seen.add(key)
            pool, batcher = model.pool, model.batcher
            minimum, maximum = model.min_workers, model.max_workers
            if maximum <= minimum or pool.state in (PoolState.FAILED, PoolState.STOPPED):
                self._scalers.pop(key, None)
                continue
            sample = Sample(now, batcher.pending, pool.ready_count(), batcher.in_flight_batches, pool.target)
            wanted = self._scaler(key, model, minimum, maximum).decide(sample)
            if wanted is not None and wanted != pool.target:
                log.info("%s:%s: %d waiting on %d workers: scaling to %d", *key, sample.pending, sample.ready, wanted)
                task = asyncio.ensure_future(pool.scale(wanted, wait=False))
                self._scaling.add(task)
                task.add_done_callback(self._scaling.discard)
        for key in set(self._scalers) - seen:
            del self._scalers[key]

    def _scaler(self, key: tuple[str, str], model: ModelVersion, minimum: int, maximum: int) -> QueueDepthScaler:
        ray = model.config.ray
        target_queue = ray.target_queue_per_worker or model.config.batch_size
        shape = (minimum, maximum, target_queue, ray.upscale_after_s, ray.downscale_after_s)
        known = self._scalers.get(key)
        if known is None or known[0] != shape:
            known = (shape, QueueDepthScaler(*shape))
            self._scalers[key] = known
        return known[1]
