"""Continuous batching inside a worker: batches that arrive while it streams join its running generators.

With ``continuous_batching`` in a model's config, the server sends the model's queued requests to a worker that
is still busy (``Batcher``; ``WorkerPool.take_spare``), rather than holding them until its batch ends. Between
two turns of its generators the worker takes each batch that has arrived: it runs the handler on it
(``ModelService.begin_batch``), and the generators it returns take turns with those already running, one chunk
each. So a request that arrives while others stream gets its first chunk within a turn, not after the longest of
them has ended (iteration-level batching).

A streamed request's answer ends as its generator does (``StreamEnd``). Each batch's ``BatchResult`` is sent once
all of its requests are answered, in the order the batches came: the server reads them in that order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dms.context import RequestProcessor
from dms.messages import Batch, BatchResult, ResponseItem
from dms.worker.streaming import BatchStreams


@dataclass(slots=True)
class Running:
    """A batch whose handler returned generators that are still running."""

    batch: Batch
    streams: BatchStreams
    active: dict[int, tuple[Any, RequestProcessor]]
    """The generators still running, by their request's place in the batch."""
    finals: dict[int, ResponseItem]
    """The last words of those that ended."""
    conclude: Callable[[dict[int, ResponseItem]], BatchResult]
    """The batch's result, from the last words of its generators."""


Started = Running | BatchResult
"""A batch as the worker took it up: running, or answered already."""


def run_joined(
    first: Started,
    arrivals: Callable[[], list[Started]],
    wait: Callable[[], bool],
    send: Callable[[BatchResult], None],
) -> None:
    """Run ``first`` and every batch that ``arrivals`` brings meanwhile to their ends, sending each result in turn.

    ``wait`` blocks until the server says something (room for a client, a departure, a batch); False once it has
    closed the socket, and every generator is then closed."""
    line: deque[Started] = deque([first])
    try:
        while line:
            moved = False
            for entry in line:
                if isinstance(entry, Running) and entry.active:
                    moved = entry.streams.step(entry.active, entry.finals) or moved
            while line and not (isinstance(line[0], Running) and line[0].active):
                send(_result(line.popleft()))
            joining = arrivals()
            line.extend(joining)
            if line and not moved and not joining and not wait():
                for entry in line:
                    if isinstance(entry, Running):
                        entry.streams.abandon(entry.active, entry.finals)
    finally:
        for entry in line:
            if isinstance(entry, Running):
                entry.streams.close_loop()


def _result(entry: Started) -> BatchResult:
    if isinstance(entry, BatchResult):
        return entry
    entry.streams.close_loop()
    return entry.conclude(entry.finals)
