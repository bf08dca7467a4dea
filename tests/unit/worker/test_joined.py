"""Continuous batching inside a worker (``dms.worker.joined``): batches that arrive while generators run join
them, and each batch's result goes out in the order the batches came."""

from __future__ import annotations

from collections.abc import Iterator

from dms.messages import Batch, BatchResult, BatchTimings, RequestItem, ResponseItem
from dms.worker.joined import Running, Started, run_joined
from dms.worker.streaming import BatchStreams
from tests.unit.worker.test_streaming import FakeOutlet, procs


def running(batch_id: int, texts: list[str], log: list[str]) -> tuple[Running, FakeOutlet]:
    """A batch of streaming requests, each a generator of ``text``'s characters (logged as they are made)."""
    items = [RequestItem(f"{batch_id}-{i}", b"", "", [], [], stream=True) for i in range(len(texts))]
    batch = Batch(batch_id=batch_id, items=items)
    outlet = FakeOutlet(list(range(len(texts))))
    streams = BatchStreams(batch, outlet, "m")

    def chars(text: str) -> Iterator[str]:
        for char in text:
            log.append(char)
            yield char

    def conclude(finals: dict[int, ResponseItem]) -> BatchResult:
        return BatchResult(batch_id, [finals[i] for i in range(len(texts))], BatchTimings())

    active = {i: (chars(text), proc) for (i, text), proc in zip(enumerate(texts), procs(len(texts)), strict=True)}
    return Running(batch, streams, active, {}, conclude), outlet


def test_a_batch_that_arrives_joins_the_running_generators_and_results_go_in_order() -> None:
    log: list[str] = []
    first, first_outlet = running(1, ["abcdef"], log)
    second, second_outlet = running(2, ["XY"], log)
    answered = BatchResult(3, [ResponseItem(200, b"whole", "text/plain")], BatchTimings())
    arriving: list[list[Started]] = [[], [second, answered]]  # both arrive after the first's second turn
    sent: list[int] = []

    def arrivals() -> list[Started]:
        return arriving.pop(0) if arriving else []

    run_joined(first, arrivals, lambda: True, lambda result: sent.append(result.batch_id))
    assert log == ["a", "b", "c", "X", "d", "Y", "e", "f"]  # the second batch's generator takes turns at once
    assert [c.body for c in second_outlet.sent] == [b"X", b"Y"]
    assert [index for index, _ in second_outlet.ended] == [0]  # its client's answer ended with its generator
    assert second_outlet.ended_after == [2] and len(first_outlet.sent) == 6
    assert sent == [1, 2, 3]  # results in the order the batches came, each once all its requests are done


def test_the_server_gone_closes_every_running_generator() -> None:
    log: list[str] = []
    first, outlet = running(1, ["abcdefgh"], log)
    outlet.room[0] = 2  # its client takes two chunks, then nothing
    sent: list[BatchResult] = []
    run_joined(first, list, lambda: False, sent.append)
    assert log == ["a", "b"] and len(sent) == 1 and sent[0].items[0].error is not None
