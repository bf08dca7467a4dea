"""The lock-free tallies expose exactly what prometheus_client's own Counter and Histogram would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dms.observability.metrics import BATCH_BUCKETS, LATENCY_BUCKETS
from dms.observability.tallies import CounterTally, HistogramTally, TallyCollector

# On bounds, between them, below the first, past the last, and zero.
LATENCIES = [0.0, 0.0001, 0.0005, 0.0007, 0.001, 0.003, 0.0025, 0.05, 1, 2.4999, 60, 120, 121, 1e6]
SIZES = [1, 1, 2, 3, 8, 9, 16, 1024, 1025]


def parsed(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_exposition_matches_prometheus_client():
    reference, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter("dms_requests", "doc", ["model", "code"], registry=reference)
    latency = Histogram("dms_latency_seconds", "doc", ["model"], buckets=LATENCY_BUCKETS, registry=reference)
    sizes = Histogram("dms_batch_size", "doc", ["model"], buckets=BATCH_BUCKETS, registry=reference)
    counter_tally = CounterTally("dms_requests", "doc", ["model", "code"])
    latency_tally = HistogramTally("dms_latency_seconds", "doc", ["model"], LATENCY_BUCKETS)
    sizes_tally = HistogramTally("dms_batch_size", "doc", ["model"], BATCH_BUCKETS)
    ours.register(TallyCollector([counter_tally, latency_tally, sizes_tally]))

    for model, code, times in (("a", "200", 5), ("a", "500", 2), ("b", "200", 1)):
        for _ in range(times):
            counter.labels(model, code).inc()
            counter_tally.labels(model, code).inc()
    for model in ("a", "b"):
        for seconds in LATENCIES:
            latency.labels(model).observe(seconds)
            latency_tally.labels(model).observe(seconds)
        for size in SIZES:
            sizes.labels(model).observe(size)
            sizes_tally.labels(model).observe(size)

    expected = parsed(reference)
    assert parsed(ours) == expected
    assert expected[("dms_latency_seconds_bucket", (("le", "0.0005"), ("model", "a")))] == 3  # a bound counts in
    assert expected[("dms_batch_size_bucket", (("le", "+Inf"), ("model", "b")))] == len(SIZES)


def test_samples_read_back_what_was_counted():
    counter = CounterTally("c", "doc", ["model"])
    histogram = HistogramTally("h", "doc", ["model"], (1, 2))
    counter.labels("m").inc()
    counter.labels("m").inc(2)
    for value in (0.5, 2, 3):
        histogram.labels("m").observe(value)
    assert [(labels, count.value) for labels, count in counter.samples()] == [({"model": "m"}, 3.0)]
    ((labels, buckets),) = histogram.samples()
    assert labels == {"model": "m"} and buckets.counts == [1, 1, 1] and buckets.sum == 5.5


def test_wrong_label_count_and_unsorted_bounds_are_refused():
    with pytest.raises(ValueError, match="takes 2 label values, got 1"):
        CounterTally("c", "doc", ["model", "code"]).labels("m")
    with pytest.raises(ValueError, match="takes 1 label values, got 2"):
        HistogramTally("h", "doc", ["model"], (1,)).labels("m", "x")
    with pytest.raises(ValueError, match="increasing"):
        HistogramTally("h", "doc", ["model"], (2, 1))
