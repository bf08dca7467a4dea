"""``dms serve`` starts its workers' interpreters before it imports the server, guessing how many.

Whether the guess is over or under, the server comes up with exactly its models' workers as children,
each answering: interpreters no worker took are ended before the ready line, and workers beyond the guess
start their own.
"""

from __future__ import annotations

from pathlib import Path

import psutil

from tests.conftest import make_probe_archive
from tests.support import DmsServer, running_server


def worker_children(server: DmsServer) -> set[int]:
    assert server.proc is not None
    found = set()
    for child in psutil.Process(server.proc.pid).children():
        try:
            if "dms.worker" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


def answering_pids(server: DmsServer, model: str, requests: int = 24) -> set[int]:
    pids = set()
    for _ in range(requests):
        response = server.predict(model, {})
        assert response.status_code == 200, response.text
        pids.add(response.json()["pid"])
    return pids


def test_fewer_workers_than_guessed_leave_no_interpreter_behind(tmp_path: Path):
    store = tmp_path / "store"
    make_probe_archive(store, "probe", config="initial_workers: 1\n")
    # The guess is two (the default count for one model, on a machine of two cores or more); one is used.
    args = ["--model-store", str(store), "--no-default-model", "--default-workers-per-model", "2"]
    with running_server(tmp_path, [*args, "--models", "probe=probe-1.0.mar"]) as server:
        workers = server.worker_pids("probe")
        assert len(workers) == 1
        assert worker_children(server) == workers
        assert answering_pids(server, "probe") == workers


def test_more_workers_than_guessed_each_start_and_answer(tmp_path: Path):
    store = tmp_path / "store"
    make_probe_archive(store, "one", config="initial_workers: 1\n")
    make_probe_archive(store, "three", config="initial_workers: 3\n")
    args = ["--model-store", str(store), "--no-default-model", "--default-workers-per-model", "1"]
    with running_server(tmp_path, [*args, "--models", "one=one-1.0.mar", "--models", "three=three-1.0.mar"]) as server:
        one, three = server.worker_pids("one"), server.worker_pids("three")
        assert (len(one), len(three)) == (1, 3)
        assert worker_children(server) == one | three
        assert answering_pids(server, "one") == one
        assert answering_pids(server, "three") <= three
