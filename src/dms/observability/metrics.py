"""Prometheus metrics of one server, in a registry of its own (no global state).

Request outcomes and total latency come from the transports (``finished``); queue waits and
per-batch timings come from each model version's batcher (``observer_for``); queue depth,
workers, restarts and worker memory are read from the data plane at scrape time. Workers do
not write metrics themselves: their timings travel back in the batch result, so the
multi-process mode of prometheus_client is not needed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dms.dataplane import DataPlane
from dms.engine.supervision import PoolState
from dms.naming import LOGGED_LENGTH, loggable
from dms.observability.recent import WINDOW_S, RecentOutcomes
from dms.observability.tallies import Buckets, Count, CounterTally, HistogramTally, TallyCollector

access_log = logging.getLogger("dms.access")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
MODEL = ("model", "version")
UNREGISTERED = "_unregistered"
"""The model label of requests for a name (or version) nothing registered: one series for all of them."""


class _DataPlaneCollector(Collector):
    def __init__(self, dataplane: DataPlane, recent: RecentOutcomes) -> None:
        self.dataplane = dataplane
        self.recent = recent

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        queue = GaugeMetricFamily("dms_queue_depth", "Requests waiting for a worker", labels=MODEL)
        per_worker = GaugeMetricFamily(
            "dms_queue_depth_per_worker",
            "Requests waiting for a worker, per worker able to take them: the load signal to autoscale pods on",
            labels=MODEL,
        )
        workers = GaugeMetricFamily("dms_workers", "Worker processes by state", labels=[*MODEL, "state"])
        restarts = CounterMetricFamily("dms_worker_restarts", "Workers replaced after dying", labels=MODEL)
        failed = GaugeMetricFamily("dms_model_failed", "1 while the version's workers failed to start", labels=MODEL)
        memory = GaugeMetricFamily(
            "dms_worker_resident_memory_bytes", "Resident memory of each worker", labels=[*MODEL, "worker"]
        )
        recent = GaugeMetricFamily(
            "dms_recent_error_ratio",
            f"Share of the last {WINDOW_S} s of requests that failed on the server side",
            labels=MODEL,
        )
        for model in self.dataplane.registry:
            key = [model.name, model.version]
            pending = model.batcher.pending
            queue.add_metric(key, pending)
            per_worker.add_metric(key, pending / max(1, model.pool.ready_count()))
            restarts.add_metric(key, model.pool.restarts)
            failed.add_metric(key, 1 if model.pool.state == PoolState.FAILED else 0)
            states: dict[str, int] = {}
            for worker in model.pool.workers.values():
                states[worker.state.value] = states.get(worker.state.value, 0) + 1
                rss = worker.resident_bytes()
                if rss is not None:
                    memory.add_metric([*key, worker.worker_id], rss)
            for state, count in states.items():
                workers.add_metric([*key, state], count)
            recent.add_metric(key, self.recent.error_ratio((model.name, model.version))[1])
        yield from (queue, per_worker, workers, restarts, failed, memory, recent)


class _VersionObserver:
    """What one model version's batcher reports to."""

    def __init__(self, metrics: ServerMetrics, name: str, version: str) -> None:
        self.queue_wait = metrics.queue_wait.labels(name, version)
        self.batch_size = metrics.batch_size.labels(name, version)
        self.stages = [
            metrics.stage_seconds.labels(name, version, stage) for stage in ("preprocess", "inference", "postprocess")
        ]

    def queued(self, wait_ns: int) -> None:
        self.queue_wait.observe(wait_ns / 1e9)

    def batch(self, size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        self.batch_size.observe(size)
        for histogram, ns in zip(self.stages, (input_ns, infer_ns, output_ns), strict=True):
            histogram.observe(ns / 1e9)


@dataclass(frozen=True, slots=True)
class _Series:
    """The metric children of one (model, version, transport, status code)."""

    model: tuple[str, str]
    server_error: bool
    count: Count
    latency: Buckets


class ServerMetrics:
    def __init__(self, dataplane: DataPlane | None = None) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        registry = self.registry
        # Updated per request, so lock-free tallies rather than prometheus_client's own metrics (tallies.py).
        self.requests = CounterTally(
            "dms_requests", "Finished requests by outcome and status code", [*MODEL, "transport", "code", "outcome"]
        )
        self.request_seconds = HistogramTally(
            "dms_request_duration_seconds",
            "Time from a request's arrival to its answer",
            [*MODEL, "transport"],
            LATENCY_BUCKETS,
        )
        self.queue_wait = HistogramTally(
            "dms_queue_wait_seconds", "Time a request waited for a worker", MODEL, LATENCY_BUCKETS
        )
        self.stage_seconds = HistogramTally(
            "dms_batch_stage_duration_seconds",
            "Time a worker spent on one batch, by stage",
            [*MODEL, "stage"],
            LATENCY_BUCKETS,
        )
        self.batch_size = HistogramTally(
            "dms_batch_size", "Requests per batch handed to a worker", MODEL, BATCH_BUCKETS
        )
        self.first_chunk_seconds = HistogramTally(
            "dms_time_to_first_chunk_seconds",
            "Time from a streamed request's arrival to its answer's first chunk (time to first token)",
            [*MODEL, "transport"],
            LATENCY_BUCKETS,
        )
        self.stream_chunks = CounterTally(
            "dms_stream_chunks", "Chunks of streamed answers sent (their rate: chunks, or tokens, a second)", MODEL
        )
        registry.register(
            TallyCollector(
                [
                    self.requests,
                    self.request_seconds,
                    self.queue_wait,
                    self.stage_seconds,
                    self.batch_size,
                    self.first_chunk_seconds,
                    self.stream_chunks,
                ]
            )
        )
        self.in_flight = Gauge(
            "dms_in_flight_requests", "Requests being answered, by transport", ["transport"], registry=registry
        )
        self.recent = RecentOutcomes()
        self._last_activity = time.monotonic()
        # Requests in flight are plain counts read at scrape time: a gauge's inc/dec takes a lock each.
        self._in_flight: dict[str, int] = {}
        # Labelled children looked up once per label set, not per request (labels() is a hot-path cost).
        self._series: dict[tuple[str, str, str, str], _Series] = {}
        self._dataplane: DataPlane | None = None
        if dataplane is not None:
            self.attach(dataplane)

    def attach(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane
        registry = self.registry
        registry.register(_DataPlaneCollector(dataplane, self.recent))
        if dataplane.settings.torchserve_metrics:
            from dms.observability.torchserve_names import TorchServeNames

            registry.register(TorchServeNames(self))

    def observer_for(self, name: str, version: str) -> _VersionObserver:
        return _VersionObserver(self, name, version)

    def started(self, transport: str) -> int:
        in_flight = self._in_flight
        if transport not in in_flight:
            self._count_in_flight(transport)
        in_flight[transport] += 1
        self._last_activity = time.monotonic()
        return time.perf_counter_ns()

    def first_chunk(self, transport: str, model: str, version: str, started_ns: int) -> None:
        """A streamed answer's first chunk went out (``started_ns``: what ``started`` returned)."""
        seconds = (time.perf_counter_ns() - started_ns) / 1e9
        self.first_chunk_seconds.labels(model, version, transport).observe(seconds)

    def chunk_count(self, model: str, version: str) -> Count:
        """The count of a model version's streamed chunks, to ``inc`` as each goes out."""
        return self.stream_chunks.labels(model, version)

    def idle_seconds(self) -> float:
        """Seconds since a request last arrived or finished (0 while one is in flight)."""
        if any(self._in_flight.values()):
            return 0.0
        return time.monotonic() - self._last_activity

    def finished(
        self,
        *,
        transport: str,
        model: str,
        version: str,
        code: str,
        started_ns: int,
        request_id: str,
        batch_size: int = 0,
    ) -> None:
        """Count the request, observe its latency, and write its access-log line."""
        seconds = (time.perf_counter_ns() - started_ns) / 1e9
        self._in_flight[transport] -= 1
        self._last_activity = now = time.monotonic()
        key = (model, version, transport, code)
        series = self._series.get(key)
        if series is None:
            series = self._series_of(model, version, transport, code)
        series.count.inc()
        series.latency.observe(seconds)
        self.recent.add(series.model, series.server_error, now)
        if not access_log.isEnabledFor(logging.INFO):
            return
        if not (request_id.isprintable() and model.isprintable()) or len(request_id) + len(model) > LOGGED_LENGTH:
            request_id, model, version = loggable(request_id), loggable(model), loggable(version)
        access_log.info(
            "%s %s %s %s %s %.2fms batch=%d",
            request_id,
            transport,
            model,
            version,
            code,
            seconds * 1000,
            batch_size,
            extra={
                "request_id": request_id,
                "transport": transport,
                "model": model,
                "model_version": version,
                "status": code,
                "latency_ms": round(seconds * 1000, 3),
                "batch_size": batch_size,
            },
        )

    def _count_in_flight(self, transport: str) -> None:
        self._in_flight[transport] = 0
        self.in_flight.labels(transport).set_function(lambda: self._in_flight[transport])

    def _series_of(self, model: str, version: str, transport: str, code: str) -> _Series:
        """The series of a label set seen for the first time: a registered model version's own, or, for a name or
        version nothing registered, the one series of ``UNREGISTERED`` (so clients cannot add series at will)."""
        dataplane = self._dataplane
        if dataplane is not None and not dataplane.registry.has(model, version):
            model, version = UNREGISTERED, ""
        key = (model, version, transport, code)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._new_series(model, version, transport, code)
        return series

    def _new_series(self, model: str, version: str, transport: str, code: str) -> _Series:
        outcome = _outcome(code)
        return _Series(
            model=(model, version),
            server_error=outcome == "server_error",
            count=self.requests.labels(model, version, transport, code, outcome),
            latency=self.request_seconds.labels(model, version, transport),
        )

    def totals(self, model: str, version: str) -> dict[str, float]:
        """Requests answered (ok / error) and their summed latency, for the console's sparklines."""
        totals = {"requestsOk": 0.0, "requestsFailed": 0.0, "latencySum": 0.0, "latencyCount": 0.0}
        for labels, count in self.requests.samples():
            if labels["model"] == model and labels["version"] == version:
                totals["requestsOk" if labels["outcome"] == "success" else "requestsFailed"] += count.value
        for labels, buckets in self.request_seconds.samples():
            if labels["model"] == model and labels["version"] == version:
                totals["latencySum"] += buckets.sum
                totals["latencyCount"] += sum(buckets.counts)
        return totals

    def exposition(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data


def _outcome(code: str) -> str:
    if code.isdigit():
        status = int(code)
        return "success" if status < 400 else "client_error" if status < 500 else "server_error"
    return "success" if code == "OK" else "client_error" if code in _GRPC_CLIENT_ERRORS else "server_error"


_GRPC_CLIENT_ERRORS = {
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "OUT_OF_RANGE",
    "CANCELLED",
}
