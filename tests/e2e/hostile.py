"""What every hostile-client test asserts around its attack (tests/e2e/test_hostile_*.py).

``Watched`` measures a real server before and after an attack: the resident memory of all its processes
(the server, its workers and anything else it started) must come back within ``RSS_SLACK`` of where it
was, no worker may have been replaced, and a bystander thread's requests to another model, sent all
through the attack, must all have been answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import psutil

from tests.support import DmsServer

RSS_SLACK = 64 * 1024 * 1024
"""How far the server's processes' resident memory may be above where it was before the attack."""


def server_rss(server: DmsServer) -> int:
    """Resident bytes of the server process and every process under it."""
    assert server.proc is not None
    root = psutil.Process(server.proc.pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def all_workers(server: DmsServer) -> dict[str, set[int]]:
    """Each registered model's worker pids."""
    models = server.manage("GET", "/models").json()["models"]
    return {m["modelName"]: server.worker_pids(m["modelName"]) for m in models}


@dataclass
class Bystander:
    """Sends ``request`` every ``interval_s`` from a thread of its own until stopped; keeps each status."""

    request: Callable[[httpx.Client], httpx.Response]
    interval_s: float = 0.02
    statuses: list[int | str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    self.statuses.append(self.request(client).status_code)
                except httpx.HTTPError as exc:
                    self.statuses.append(type(exc).__name__)
                self._stop.wait(self.interval_s)

    @contextmanager
    def running(self) -> Iterator[Bystander]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=60)


@contextmanager
def watched(server: DmsServer, bystander: Callable[[httpx.Client], httpx.Response]) -> Iterator[Bystander]:
    """Run the attack in the ``with`` block; then assert memory, workers and the bystander's answers."""
    workers = all_workers(server)
    before = server_rss(server)
    with Bystander(bystander).running() as watcher:
        yield watcher
        time.sleep(0.1)  # a request or two more after the attack
    after = settled_rss(server, before)
    assert after - before <= RSS_SLACK, f"resident memory grew by {(after - before) >> 20} MiB in the attack"
    assert all_workers(server) == workers, "a worker was replaced"
    assert watcher.statuses, "the bystander sent nothing"
    assert set(watcher.statuses) == {200}, f"the bystander's requests did not all succeed: {watcher.statuses}"


def settled_rss(server: DmsServer, before: int, timeout_s: float = 10.0) -> int:
    """The server's resident memory once it is back within the slack, or as it stands after ``timeout_s``
    (freed memory may go back to the system a moment after the answer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = server_rss(server)
        if now - before <= RSS_SLACK or time.monotonic() > deadline:
            return now
        time.sleep(0.2)
