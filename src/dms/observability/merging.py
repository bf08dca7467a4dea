"""One Prometheus exposition from the frontends' own: what ``/metrics`` answers with ``frontends > 1``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from dms.observability.torchserve_names import HOST_GAUGES

HIGHEST = frozenset({"dms_model_failed", "dms_recent_error_ratio", "dms_queue_depth_per_worker", *HOST_GAUGES})
"""Gauges whose meaning is a flag, a ratio or the host's: the frontends' highest value, not their sum (for the
queue per worker, the busiest frontend's: an autoscaler reading it errs towards more pods)."""
OWN_PROCESS = ("process_", "python_")
"""Families that describe one process: frontend 0's are kept, the others' dropped."""


def merge_expositions(first: bytes, others: Iterable[bytes]) -> bytes:
    """Frontend 0's exposition with the others' ``dms_*`` series added in: counters, histograms and most
    gauges summed by series (name and labels), the ``HIGHEST`` gauges maxed, ``_created`` times the earliest."""
    families = {family.name: family for family in text_string_to_metric_families(first.decode())}
    for text in others:
        for family in text_string_to_metric_families(text.decode()):
            if family.name.startswith(OWN_PROCESS):
                continue
            mine = families.get(family.name)
            if mine is None:
                families[family.name] = family
                continue
            mine.samples = _added(mine.samples, family.samples, family.name in HIGHEST)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    merged: bytes = generate_latest(registry)
    return merged


def _combined(name: str, a: float, b: float, highest: bool) -> float:
    if name.endswith("_created"):
        return min(a, b)
    return max(a, b) if highest else a + b


def _added(mine: list[Sample], theirs: list[Sample], highest: bool) -> list[Sample]:
    def key(sample: Sample) -> tuple[str, tuple[tuple[str, str], ...]]:
        return sample.name, tuple(sorted(sample.labels.items()))

    index = {key(sample): position for position, sample in enumerate(mine)}
    merged = list(mine)
    for sample in theirs:
        position = index.get(key(sample))
        if position is None:
            index[key(sample)] = len(merged)
            merged.append(sample)
        else:
            value = _combined(sample.name, merged[position].value, sample.value, highest)
            merged[position] = merged[position]._replace(value=value)
    return merged


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families
