"""The batcher alone, against a fake executor: no processes, no HTTP."""

from __future__ import annotations

import asyncio

import pytest

from dms.engine.batcher import Batcher
from dms.engine.messages import BatchResult, BatchTimings, RequestItem, ResponseItem
from dms.errors import InternalError, ModelUnavailableError, QueueFullError, WorkerDiedError


def item(name: str) -> RequestItem:
    return RequestItem(request_id=name, body=name.encode(), content_type="", headers=[], query=[])


class FakeExecutor:
    """``workers`` idle slots; each batch waits for ``gate`` (when set) before answering."""

    def __init__(self, workers: int = 1) -> None:
        self.idle: asyncio.Queue[int] = asyncio.Queue()
        for worker in range(workers):
            self.idle.put_nowait(worker)
        self.batches: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.fail_with: Exception | None = None
        self.drop_one = False
        self.unavailable = False

    async def acquire(self) -> int:
        if self.unavailable:
            raise ModelUnavailableError("gone")
        return await self.idle.get()

    async def execute(self, worker: int, items: list[RequestItem]) -> BatchResult:
        self.batches.append([i.request_id for i in items])
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_with is not None:
                raise self.fail_with
            answers = [ResponseItem(200, i.body.upper(), "text/plain") for i in items]
            return BatchResult(0, answers[:-1] if self.drop_one else answers, BatchTimings(1, 2, 3))
        finally:
            self.idle.put_nowait(worker)

    def release(self, worker: int) -> None:
        self.idle.put_nowait(worker)


def run(scenario, executor: FakeExecutor | None = None, batch_size: int = 4, queue_size: int = 10):
    """Run ``scenario(batcher, executor)`` against a started batcher, closing it afterwards."""

    async def main():
        fake = executor or FakeExecutor()
        batcher = Batcher("m", fake, batch_size=batch_size, queue_size=queue_size)
        batcher.start()
        try:
            return await scenario(batcher, fake)
        finally:
            await batcher.close()

    return asyncio.run(main())


def gated(workers: int = 1) -> FakeExecutor:
    executor = FakeExecutor(workers)
    executor.gate = asyncio.Event()
    return executor


def test_a_lone_request_is_dispatched_at_once_as_a_batch_of_one():
    async def scenario(batcher, executor):
        result = await asyncio.wait_for(batcher.submit(item("a")), 1.0)
        return executor.batches, result

    batches, result = run(scenario, batch_size=8)
    assert batches == [["a"]]
    assert result.body == b"A"


def test_requests_queued_while_workers_are_busy_leave_together_up_to_batch_size():
    async def scenario(batcher, executor):
        first = batcher.submit(item("a"))
        await asyncio.sleep(0.01)  # "a" is now running; the rest queue behind it
        rest = [batcher.submit(item(name)) for name in "bcdef"]
        executor.gate.set()
        await asyncio.gather(first, *rest)
        return executor.batches

    assert run(scenario, gated(), batch_size=3) == [["a"], ["b", "c", "d"], ["e", "f"]]


def test_idle_workers_share_the_queue():
    async def scenario(batcher, executor):
        futures = [batcher.submit(item("a")), batcher.submit(item("b"))]
        await asyncio.sleep(0.01)
        executor.gate.set()
        await asyncio.gather(*futures)
        return executor.batches

    assert run(scenario, gated(workers=2)) in ([["a", "b"]], [["a"], ["b"]])


def test_a_full_queue_refuses_with_queue_full_error():
    async def scenario(batcher, executor):
        running = batcher.submit(item("a"))
        await asyncio.sleep(0.01)
        queued = [batcher.submit(item("b")), batcher.submit(item("c"))]
        with pytest.raises(QueueFullError) as refused:
            batcher.submit(item("d"))
        executor.gate.set()
        await asyncio.gather(running, *queued)
        return refused.value

    error = run(scenario, gated(), batch_size=1, queue_size=2)
    assert "job_queue_size" in error.message and error.retry_after_s >= 1


def test_cancelled_requests_never_reach_a_worker():
    async def scenario(batcher, executor):
        running = batcher.submit(item("a"))
        await asyncio.sleep(0.01)
        gone = batcher.submit(item("gone"))
        kept = batcher.submit(item("kept"))
        gone.cancel()
        executor.gate.set()
        await asyncio.gather(running, kept)
        return executor.batches

    assert run(scenario, gated(), batch_size=8) == [["a"], ["kept"]]


def first_outcome(executor: FakeExecutor) -> BaseException | ResponseItem:
    async def scenario(batcher, executor):
        [outcome] = await asyncio.wait_for(asyncio.gather(batcher.submit(item("a")), return_exceptions=True), 1.0)
        return outcome

    return run(scenario, executor)


def test_a_failed_batch_fails_its_requests_with_the_error():
    executor = FakeExecutor()
    executor.fail_with = WorkerDiedError("worker died")
    assert isinstance(first_outcome(executor), WorkerDiedError)


def test_a_short_answer_is_an_internal_error_not_a_hang():
    executor = FakeExecutor()
    executor.drop_one = True
    error = first_outcome(executor)
    assert isinstance(error, InternalError) and "answered 0 of 1" in error.message


def test_when_no_worker_will_come_queued_requests_fail_unavailable():
    executor = FakeExecutor()
    executor.unavailable = True
    assert isinstance(first_outcome(executor), ModelUnavailableError)


def test_close_fails_what_is_still_queued_and_refuses_new_requests():
    async def scenario():
        executor = gated()
        batcher = Batcher("m", executor, batch_size=1, queue_size=10)
        batcher.start()
        batcher.submit(item("a"))
        await asyncio.sleep(0.01)
        queued = batcher.submit(item("b"))
        await batcher.close()
        with pytest.raises(ModelUnavailableError):
            batcher.submit(item("c"))
        executor.gate.set()
        return await asyncio.gather(queued, return_exceptions=True)

    [error] = asyncio.run(scenario())
    assert isinstance(error, ModelUnavailableError)


def test_statistics_count_queue_compute_and_outcomes():
    async def scenario(batcher, executor):
        first = batcher.submit(item("a"))
        await asyncio.sleep(0.01)
        rest = [batcher.submit(item(name)) for name in "bc"]
        executor.gate.set()
        await asyncio.gather(first, *rest)
        return batcher.stats.as_dict()

    stats = run(scenario, gated(), batch_size=4)
    assert (stats["inference_count"], stats["execution_count"]) == (3, 2)
    inference = stats["inference_stats"]
    assert inference["success"]["count"] == 3 and inference["fail"]["count"] == 0
    assert inference["queue"]["count"] == 3 and inference["queue"]["ns"] > 0
    assert inference["compute_infer"] == {"count": 3, "ns": 2 * 2}  # each batch reported 2 ns
    assert [b["batch_size"] for b in stats["batch_stats"]] == [1, 2]
