"""A full batch sent to a worker that is still busy: it waits in the worker's socket, behind the batch
the worker is working on, and the worker takes it up the moment it has answered that one.

Each model here has one worker and ``batch_size: 1``, so every request that arrives while the worker
is busy is a full batch and goes to it at once. These tests hold what that must not change: the
request is counted as pending until the worker takes it up, its response timeout counts from then,
a client that leaves before then costs no work, and a worker that dies first hands it on.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_probe_archive
from tests.support import DmsServer, running_server, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("queued")
    store = work / "store"
    one_at_a_time = "initial_workers: 1\nbatch_size: 1\n"
    make_probe_archive(store, "single", config=one_at_a_time)
    make_probe_archive(store, "doomed", config=one_at_a_time)
    make_probe_archive(store, "timed", config=one_at_a_time + "response_timeout_s: 1.5\n")
    models = ["single=single-1.0.mar", "doomed=doomed-1.0.mar", "timed=timed-1.0.mar"]
    with running_server(work, ["--model-store", str(store), "--models", *models]) as running:
        yield running


def pending(server: DmsServer, model: str) -> int:
    count: int = server.describe(model)[0]["jobQueueStatus"]["pendingRequests"]
    return count


def test_a_request_behind_a_busy_worker_counts_as_pending_and_runs_next_on_that_worker(server: DmsServer):
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(server.predict, "single", {"sleep": 1.0, "echo": "first"})
        server.wait_busy("single")
        second = pool.submit(server.predict, "single", {"echo": "second"})
        wait_for(lambda: pending(server, "single") == 1, what="the second request counted as pending")
        answers = [first.result(timeout=30), second.result(timeout=30)]
    assert [a.status_code for a in answers] == [200, 200]
    assert [a.json()["echo"] for a in answers] == ["first", "second"]
    assert answers[0].json()["pid"] == answers[1].json()["pid"]
    assert pending(server, "single") == 0


def test_its_response_timeout_counts_from_when_the_worker_takes_it_up(server: DmsServer):
    # Each request takes 1 s of the 1.5 s allowed; the second waits 1 s behind the first on top of that.
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(server.predict, "timed", {"sleep": 1.0, "echo": 1})
        server.wait_busy("timed")
        second = pool.submit(server.predict, "timed", {"sleep": 1.0, "echo": 2})
        answers = [first.result(timeout=30), second.result(timeout=30)]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert [a.json()["echo"] for a in answers] == [1, 2]


def test_a_client_that_leaves_while_its_request_waits_costs_no_work(server: DmsServer, tmp_path: Path):
    marker = tmp_path / "ran.txt"
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(server.predict, "single", {"sleep": 1.0})
        server.wait_busy("single")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.inference_url}/predictions/single", json={"touch": str(marker)}, timeout=0.4)
        assert busy.result(timeout=30).status_code == 200
    after = server.predict("single", {"echo": "after"})
    assert after.status_code == 200 and after.json()["echo"] == "after"
    assert not marker.exists()


def test_a_worker_that_dies_before_taking_it_up_hands_it_to_its_replacement(server: DmsServer):
    [doomed_pid] = server.worker_pids("doomed")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(server.predict, "doomed", {"sleep": 5, "echo": "first"})
        server.wait_busy("doomed")
        second = pool.submit(server.predict, "doomed", {"echo": "second"})
        wait_for(lambda: pending(server, "doomed") == 1, what="the second request waiting behind the first")
        os.kill(doomed_pid, signal.SIGKILL)
        failed, served = first.result(timeout=30), second.result(timeout=30)
    assert failed.status_code == 500 and failed.json()["type"] == "WorkerDiedError"
    assert "SIGKILL" in failed.json()["message"]
    assert served.status_code == 200, served.text
    assert served.json()["echo"] == "second" and served.json()["pid"] != doomed_pid
