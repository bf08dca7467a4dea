"""Outcomes of the last minute per model version, in one-second buckets (for ``dms status``)."""

from __future__ import annotations

import time
from collections import deque

WINDOW_S = 60


class RecentOutcomes:
    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], deque[list[int]]] = {}

    def add(self, key: tuple[str, str], error: bool, now: float) -> None:
        """Count one outcome; ``now`` is ``time.monotonic()``, which the caller has just read."""
        second = int(now)
        buckets = self._buckets.get(key)
        if buckets is None:
            buckets = self._buckets[key] = deque()
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, 0, 0])
            while buckets[0][0] <= second - WINDOW_S:
                buckets.popleft()
        buckets[-1][2 if error else 1] += 1

    def error_ratio(self, key: tuple[str, str]) -> tuple[int, float]:
        """(requests, share that failed with a 5xx or an error code) over the last minute."""
        cutoff = int(time.monotonic()) - WINDOW_S
        buckets = [b for b in self._buckets.get(key, ()) if b[0] > cutoff]
        ok = sum(b[1] for b in buckets)
        errors = sum(b[2] for b in buckets)
        total = ok + errors
        return total, (errors / total if total else 0.0)

    def keys(self) -> list[tuple[str, str]]:
        return list(self._buckets)
