"""Worker interpreters started ahead of need: ``dms serve`` starts them before it imports the server.

A worker takes a prestarted interpreter while one is running and starts its own otherwise; the ones no
worker took are ended, leaving neither a process nor a descriptor behind. Real interpreters, on uvloop.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import uvloop

from dms.engine import interpreters
from dms.engine.worker_process import WorkerProcess
from dms.messages import Batch, LoadModel, RequestItem
from tests.support import open_descriptors, wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to list descriptors")


@pytest.fixture(autouse=True)
def none_left_over() -> Iterator[None]:
    yield
    uvloop.run(interpreters.discard_prestarted())


def prestarted_now(before: set[int], count: int) -> set[int]:
    """The ``count`` interpreters ``interpreters.prestart`` just started. Waited for: a CI run once found none
    right after ``Popen`` returned (the child's command line can lack its new program's arguments for a moment,
    until the kernel has set them up)."""
    found: set[int] = wait_for(
        lambda: len(started := worker_children() - before) == count and started, what="the prestarted interpreters"
    )
    return found


def worker_children() -> set[int]:
    found = set()
    for child in psutil.Process().children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "dms.worker" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.NoSuchProcess:  # it ended while being looked at
            pass
    return found


async def answering_pid(load: LoadModel) -> tuple[WorkerProcess, int]:
    """A worker started the way the pool starts one, and the pid its model answered from."""
    worker = WorkerProcess("1", load, "probe w1")
    await worker.start(60)
    result = await worker.run_batch(Batch(batch_id=1, items=[RequestItem("r1", b"{}", "application/json", [], [])]), 60)
    assert result.items[0].status == 200
    pid: int = json.loads(result.items[0].body)["pid"]
    return worker, pid


def test_workers_take_the_prestarted_interpreters_then_start_their_own(load: LoadModel) -> None:
    before = worker_children()
    interpreters.prestart(2)
    prestarted = prestarted_now(before, 2)

    async def three_workers() -> list[int]:
        started = [await answering_pid(load) for _ in range(3)]
        for worker, _ in started:
            await worker.stop()
        return [pid for _, pid in started]

    first, second, third = uvloop.run(three_workers())
    assert {first, second} == prestarted  # each model loaded into a prestarted interpreter
    assert third not in prestarted and third != os.getpid()


def test_a_prestarted_interpreter_that_died_is_passed_over(load: LoadModel) -> None:
    before = worker_children()
    interpreters.prestart(1)
    [dead] = prestarted_now(before, 1)
    os.kill(dead, signal.SIGKILL)
    wait_for(lambda: psutil.Process(dead).status() == psutil.STATUS_ZOMBIE, what="the killed interpreter to end")

    async def one_worker() -> int:
        worker, pid = await answering_pid(load)
        await worker.stop()
        return pid

    assert uvloop.run(one_worker()) != dead


def test_interpreters_no_worker_took_are_ended_leaving_nothing_open() -> None:
    descriptors = open_descriptors()
    before = worker_children()
    interpreters.prestart(2)
    prestarted = [psutil.Process(pid) for pid in prestarted_now(before, 2)]
    uvloop.run(interpreters.discard_prestarted())
    for process in prestarted:  # ended and reaped: not even a zombie is left
        assert not process.is_running()
    assert open_descriptors() == descriptors
