"""Counters and histograms updated without locks, exported through prometheus_client at scrape time.

prometheus_client's ``Counter`` and ``Histogram`` take a lock on every update and find a
histogram's bucket with a Python loop: about 3 µs per request here, on the hot path of every
inference. DMS updates its request metrics only on the event loop's thread, so plain numbers
are enough; the bucket is found with ``bisect`` (C). At scrape time (also on the event loop)
the tallies are turned into prometheus_client's metric families, so the exposition format is
prometheus_client's own. Unlike its ``Counter`` and ``Histogram``, they emit no ``_created`` series.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class Count:
    """One labelled counter's value."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Buckets:
    """One labelled histogram's observations: a count per bucket (the last is +Inf) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, so a value equal to a bound counts in that bucket (le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self, le: Sequence[str]) -> list[tuple[str, float]]:
        """(le, observations at or below it) for each bound's label, as the exposition format wants them."""
        return list(zip(le, itertools.accumulate(self.counts), strict=True))


Child = TypeVar("Child", Count, Buckets)


class _Family(Generic[Child]):
    """A labelled family: one child per set of label values, made on first use."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], new_child: Callable[[], Child]
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self._new_child: Callable[[], Child] = new_child
        self._children: dict[tuple[str, ...], Child] = {}

    def labels(self, *values: str) -> Child:
        """The child for these label values (look it up once, then update it directly)."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes {len(self.labelnames)} label values, got {len(values)}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._new_child()
        return child

    def samples(self) -> Iterator[tuple[dict[str, str], Child]]:
        """(labels, child) of every child."""
        for values, child in list(self._children.items()):
            yield dict(zip(self.labelnames, values, strict=True)), child


class CounterTally(_Family[Count]):
    """A labelled counter family."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, documentation, labelnames, Count)

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value)
        return family


class HistogramTally(_Family[Buckets]):
    """A labelled histogram family with fixed bucket bounds."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        bounds = tuple(float(b) for b in buckets if b != float("inf"))
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"{name}: bucket bounds must be increasing, got {list(buckets)}")
        super().__init__(name, documentation, labelnames, lambda: Buckets(bounds))
        self._le: list[str] = [*(floatToGoString(b) for b in bounds), "+Inf"]  # type: ignore[no-untyped-call]

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.cumulative(self._le), child.sum)
        return family


class TallyCollector(Collector):
    """Exposes tallies from a prometheus_client registry, in the order given."""

    def __init__(self, tallies: Sequence[CounterTally | HistogramTally]) -> None:
        self.tallies = list(tallies)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        for tally in self.tallies:
            yield tally.family()
