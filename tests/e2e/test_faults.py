"""Workers that die in different ways: each request in flight gets a 5xx naming model and cause."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import make_probe_archive
from tests.support import DmsServer, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("faults")
    store = work / "store"
    make_probe_archive(store, "fragile", config="initial_workers: 1\n")
    make_probe_archive(store, "steady", config="initial_workers: 1\n")
    make_probe_archive(store, "greedy", config="initial_workers: 1\nworker_memory_limit_mb: 200\n")
    make_probe_archive(store, "slow", config="initial_workers: 1\nbatch_size: 1\njob_queue_size: 50\n")
    models = ["fragile=fragile-1.0.mar", "steady=steady-1.0.mar", "greedy=greedy-1.0.mar", "slow=slow-1.0.mar"]
    with running_server(work, ["--model-store", str(store), "--models", *models]) as running:
        yield running


@pytest.mark.parametrize(
    ("command", "cause"),
    [({"segfault": True}, "was killed by SIGSEGV"), ({"exit": True}, "exited with code 3")],
)
def test_a_dying_worker_fails_its_request_clearly_and_is_replaced(
    server: DmsServer, command: dict[str, bool], cause: str
):
    [before] = server.worker_pids("fragile")
    restarts = server.describe("fragile")[0]["restarts"]
    response = server.predict("fragile", command)
    assert response.status_code == 500
    body = response.json()
    assert body["type"] == "WorkerDiedError"
    assert "fragile" in body["message"] and cause in body["message"] and str(before) in body["message"]
    after = server.predict("fragile", {"echo": 1})
    assert after.status_code == 200 and after.json()["pid"] != before
    assert server.describe("fragile")[0]["restarts"] == restarts + 1
    assert server.predict("steady", {"echo": 2}).status_code == 200


@pytest.mark.parametrize("leaves", [{"orphan": 40}, {"fork": 40}], ids=["a program it started", "a fork"])
def test_a_worker_that_dies_leaving_a_process_behind_is_seen_dying_at_once(server: DmsServer, leaves: dict[str, int]):
    # What it leaves holds what it inherited; if that includes the worker's socket, the server sees no
    # end of file, and the request must not wait for response_timeout_s (120 s) all the same.
    response = server.predict("fragile", {**leaves, "exit": True}, timeout=30)
    assert response.status_code == 500
    assert "exited with code 3" in response.json()["message"]
    assert server.predict("fragile", {"echo": 1}).status_code == 200


def test_a_worker_over_its_memory_limit_is_replaced_with_the_cause_named(server: DmsServer):
    [before] = server.worker_pids("greedy")
    response = server.predict("greedy", {"hog_mb": 600, "hold": 20})
    assert response.status_code == 500
    message = response.json()["message"]
    assert "greedy" in message and "passed the model's limit (200 MiB)" in message
    after = server.predict("greedy", {"echo": 1})
    assert after.status_code == 200 and after.json()["pid"] != before
    assert server.predict("greedy", {"hog_mb": 20, "hold": 0.1}).status_code == 200


def test_a_saturated_slow_model_does_not_starve_another_model(server: DmsServer):
    with ThreadPoolExecutor(20) as pool:
        slow = [pool.submit(server.predict, "slow", {"sleep": 0.2}) for _ in range(15)]
        server.wait_busy("slow")
        assert server.describe("slow")[0]["jobQueueStatus"]["pendingRequests"] > 5
        quick = [server.predict("steady", {"echo": i}) for i in range(20)]
        still_queued = server.describe("slow")[0]["jobQueueStatus"]["pendingRequests"]
        assert [r.status_code for r in quick] == [200] * 20
        assert still_queued > 0  # the quick model was served while the slow one still had a backlog
        assert all(f.result().status_code == 200 for f in slow)
