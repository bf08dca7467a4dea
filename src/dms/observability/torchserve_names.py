"""TorchServe's metric names beside DMS's (``metrics_names = "torchserve"`` or ``"both"``), so that dashboards and
alerts built on a TorchServe ``/metrics`` keep working.

Everything is read at scrape time from what DMS already counts (``ServerMetrics``' request, latency and queue
tallies) and from the host, so serving a request costs nothing more. The names, labels and units are TorchServe's
defaults (its ``metrics.yaml``, Prometheus mode):

- ``Requests2XX``, ``Requests4XX``, ``Requests5XX`` ``{Level="Host",Hostname}``: inference requests by outcome.
- ``ts_inference_requests_total``, ``ts_inference_latency_microseconds`` (summed, µs) and
  ``ts_queue_latency_microseconds`` (summed, µs) ``{model_name,model_version,hostname}``.
- ``QueueTime`` and ``WorkerThreadTime`` ``{Level="Host",Hostname}``: the mean queue wait and the mean time a
  worker spent per batch, in ms (TorchServe's gauges hold the last request's; a mean is steadier to scrape).
- ``CPUUtilization``, ``MemoryUsed``, ``MemoryAvailable``, ``MemoryUtilization``, ``DiskUsage``,
  ``DiskAvailable``, ``DiskUtilization`` ``{Level="Host",Hostname}``: the host, in TorchServe's units.

The counters are exposed untyped: prometheus_client writes a counter's family as ``NAME_total``, and TorchServe's
names must stay as they are; ``rate()`` and ``sum()`` read them the same.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psutil
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dms.observability.tallies import Buckets

if TYPE_CHECKING:
    from dms.observability.metrics import ServerMetrics

HOST_GAUGES = frozenset(
    {
        "QueueTime",
        "WorkerThreadTime",
        "CPUUtilization",
        "MemoryUsed",
        "MemoryAvailable",
        "MemoryUtilization",
        "DiskUsage",
        "DiskAvailable",
        "DiskUtilization",
    }
)
"""Gauges that describe the whole host: with several frontends, the highest frontend's, not their sum."""
_OUTCOME_CLASS = {"success": "Requests2XX", "client_error": "Requests4XX", "server_error": "Requests5XX"}
_MB, _GB = 1024**2, 1024**3


def _untyped(name: str, documentation: str) -> Metric:
    return Metric(name, documentation, "unknown")


class TorchServeNames(Collector):
    def __init__(self, metrics: ServerMetrics, disk_path: str = "/") -> None:
        self.metrics = metrics
        self.hostname = socket.gethostname()
        self.disk_path = disk_path
        psutil.cpu_percent()  # the first reading starts the interval the next ones measure

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._times()
        yield from self._host()

    def _host_labels(self) -> dict[str, str]:
        return {"Level": "Host", "Hostname": self.hostname}

    def _requests(self) -> Iterator[Metric]:
        by_class = dict.fromkeys(_OUTCOME_CLASS.values(), 0.0)
        per_model: dict[tuple[str, str], float] = {}
        for labels, count in self.metrics.requests.samples():
            by_class[_OUTCOME_CLASS[labels["outcome"]]] += count.value
            key = (labels["model"], labels["version"])
            per_model[key] = per_model.get(key, 0.0) + count.value
        for name, total in by_class.items():
            family = _untyped(name, f"Inference requests answered {name[8:]} (TorchServe's name)")
            family.add_sample(name, self._host_labels(), total)
            yield family
        requests = _untyped("ts_inference_requests_total", "Inference requests by model (TorchServe's name)")
        for (model, version), total in per_model.items():
            requests.add_sample(requests.name, self._model_labels(model, version), total)
        yield requests
        latency = _untyped("ts_inference_latency_microseconds", "Summed request latency, µs (TorchServe's name)")
        for labels, buckets in self.metrics.request_seconds.samples():
            latency_labels = self._model_labels(labels["model"], labels["version"])
            latency.add_sample(latency.name, latency_labels, buckets.sum * 1e6)
        yield _summed(latency)
        queue = _untyped("ts_queue_latency_microseconds", "Summed queue wait, µs (TorchServe's name)")
        for labels, buckets in self.metrics.queue_wait.samples():
            queue.add_sample(queue.name, self._model_labels(labels["model"], labels["version"]), buckets.sum * 1e6)
        yield queue

    def _model_labels(self, model: str, version: str) -> dict[str, str]:
        return {"model_name": model, "model_version": version, "hostname": self.hostname}

    def _times(self) -> Iterator[Metric]:
        waited = [buckets for _, buckets in self.metrics.queue_wait.samples()]
        worked = [buckets for _, buckets in self.metrics.stage_seconds.samples()]
        queue_time = GaugeMetricFamily(
            "QueueTime", "Mean queue wait, ms (TorchServe's name)", labels=["Level", "Hostname"]
        )
        queue_time.add_metric(["Host", self.hostname], _mean_ms(waited))
        yield queue_time
        batches = sum(sum(b.counts) for _, b in self.metrics.batch_size.samples())
        thread = GaugeMetricFamily(
            "WorkerThreadTime", "Mean worker time per batch, ms (TorchServe's name)", labels=["Level", "Hostname"]
        )
        thread.add_metric(["Host", self.hostname], sum(b.sum for b in worked) * 1000 / batches if batches else 0.0)
        yield thread

    def _host(self) -> Iterator[Metric]:
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(self.disk_path)
        readings = [
            ("CPUUtilization", "Percent", psutil.cpu_percent()),
            ("MemoryUsed", "Megabytes", memory.used / _MB),
            ("MemoryAvailable", "Megabytes", memory.available / _MB),
            ("MemoryUtilization", "Percent", memory.percent),
            ("DiskUsage", "Gigabytes", disk.used / _GB),
            ("DiskAvailable", "Gigabytes", disk.free / _GB),
            ("DiskUtilization", "Percent", disk.percent),
        ]
        for name, unit, value in readings:
            documentation = f"The host's {name}, {unit} (TorchServe's name)"
            family = GaugeMetricFamily(name, documentation, labels=["Level", "Hostname"])
            family.add_metric(["Host", self.hostname], value)
            yield family


def _mean_ms(histograms: list[Buckets]) -> float:
    count = sum(sum(h.counts) for h in histograms)
    return sum(h.sum for h in histograms) * 1000 / count if count else 0.0


def _summed(family: Metric) -> Metric:
    """One sample per label set (the latency tally has one per transport)."""
    totals: dict[tuple[tuple[str, str], ...], float] = {}
    for sample in family.samples:
        key = tuple(sorted(sample.labels.items()))
        totals[key] = totals.get(key, 0.0) + sample.value
    summed = _untyped(family.name, family.documentation)
    for key, value in totals.items():
        summed.add_sample(family.name, dict(key), value)
    return summed
