"""The metrics port (8082): Prometheus text format, read from the data plane at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dms.dataplane import DataPlane
from dms.engine.pool import PoolState
from dms.rest.errors import EXCEPTION_HANDLERS


class DataPlaneCollector(Collector):
    """Queue depth, workers by state and worker restarts of every model version."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["model", "version"]
        queue = GaugeMetricFamily("dms_queue_depth", "Requests waiting for a worker", labels=labels)
        workers = GaugeMetricFamily("dms_workers", "Worker processes by state", labels=[*labels, "state"])
        restarts = CounterMetricFamily("dms_worker_restarts", "Workers replaced after dying", labels=labels)
        failed = GaugeMetricFamily(
            "dms_model_failed", "1 while the model version's workers failed to start (see describe)", labels=labels
        )
        for model in self.dataplane.registry:
            key = [model.name, model.version]
            queue.add_metric(key, model.batcher.pending)
            restarts.add_metric(key, model.pool.restarts)
            failed.add_metric(key, 1 if model.pool.state == PoolState.FAILED else 0)
            states: dict[str, int] = {}
            for worker in model.pool.workers.values():
                states[worker.state.value] = states.get(worker.state.value, 0) + 1
            for state, count in states.items():
                workers.add_metric([*key, state], count)
        yield from (queue, workers, restarts, failed)


def build_metrics_app(dataplane: DataPlane) -> Starlette:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(DataPlaneCollector(dataplane))

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(routes=[Route("/metrics", metrics, methods=["GET"])], exception_handlers=EXCEPTION_HANDLERS)
