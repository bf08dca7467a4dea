"""A worker's end of its socket pair is closed as soon as the worker is done, on every path.

Left to the garbage collector, the descriptor was closed twice under uvloop: once by the socket
object and once by the transport holding it. When a new client connection had taken that number in
between, the second close cut it off without an answer ("Server disconnected without sending a
response"). The tests run the real worker process on uvloop, with the collector off, and check that
the server has no descriptor left open once the worker has ended.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from dms.engine.worker_process import WorkerProcess, WorkerStartError
from dms.errors import RequestTimeoutError, WorkerDiedError
from dms.messages import Batch, LoadModel, RequestItem
from tests.support import open_descriptors


@pytest.fixture
def no_garbage_collection() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def batch(body: bytes) -> Batch:
    return Batch(batch_id=1, items=[RequestItem("r1", body, "application/json", [], [])])


async def started(load: LoadModel) -> WorkerProcess:
    worker = WorkerProcess("1", load, "probe w1")
    await worker.start(60)
    return worker


async def first_stream() -> None:
    """Open and close a stream on the running loop: libuv keeps a /dev/null open from its first one on."""
    ours, theirs = socket.socketpair()
    transport, _ = await asyncio.get_running_loop().create_unix_connection(asyncio.Protocol, sock=ours)
    transport.close()
    theirs.close()
    await asyncio.sleep(0)


def leaves_nothing_open(scenario: Callable[[], Awaitable[WorkerProcess]]) -> set[str]:
    """Run ``scenario`` on uvloop: the descriptors it opened and left open, with what they point to.

    They are listed while the worker object is still referenced, as the pool may keep it for a while.
    """

    async def measured() -> set[str]:
        await first_stream()
        before = open_descriptors()
        worker = await scenario()
        await asyncio.sleep(0.05)  # the log pipe's transport closes on the turn after its EOF
        left = open_descriptors() - before
        del worker
        return left

    return uvloop.run(measured())


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd to list open descriptors")
@pytest.mark.usefixtures("no_garbage_collection")
class TestDescriptorsAfterTheWorkerEnds:
    @pytest.mark.parametrize(
        ("body", "timeout_s", "error"),
        [(b'{"exit": true}', 60, WorkerDiedError), (b'{"sleep": 30}', 0.2, RequestTimeoutError)],
        ids=["it dies", "it is killed for taking too long"],
    )
    def test_a_worker_that_ends_during_a_batch(
        self, load: LoadModel, body: bytes, timeout_s: float, error: type[Exception]
    ) -> None:
        async def scenario() -> WorkerProcess:
            worker = await started(load)
            with pytest.raises(error):
                await worker.run_batch(batch(body), timeout_s)
            await worker.wait_dead()
            return worker

        assert leaves_nothing_open(scenario) == set()

    def test_a_batch_cancelled_while_the_worker_runs_it(self, load: LoadModel) -> None:
        async def scenario() -> WorkerProcess:
            worker = await started(load)
            running = asyncio.ensure_future(worker.run_batch(batch(b'{"sleep": 30}'), 60))
            await asyncio.sleep(0.2)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            try:
                async with asyncio.timeout(10):  # its answer would arrive out of step: it is killed, not reused
                    assert await worker.wait_dead() == -9
            finally:
                worker.kill()
            return worker

        assert leaves_nothing_open(scenario) == set()

    def test_a_worker_killed_from_outside_while_idle(self, load: LoadModel) -> None:
        async def scenario() -> WorkerProcess:
            worker = await started(load)
            worker.kill("a test killed it")
            await worker.wait_dead()
            return worker

        assert leaves_nothing_open(scenario) == set()

    def test_a_worker_that_does_not_load_in_time(self, load: LoadModel) -> None:
        async def scenario() -> WorkerProcess:
            worker = WorkerProcess("1", load, "probe w1")
            with pytest.raises(WorkerStartError, match="did not load within"):
                await worker.start(0.001)
            await worker.wait_dead()
            return worker

        assert leaves_nothing_open(scenario) == set()

    def test_a_worker_stopped_on_purpose(self, load: LoadModel) -> None:
        async def scenario() -> WorkerProcess:
            worker = await started(load)
            result = await worker.run_batch(batch(b'{"echo": 1}'), 60)
            assert result.items[0].status == 200
            await worker.stop()
            return worker

        assert leaves_nothing_open(scenario) == set()
