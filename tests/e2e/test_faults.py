"""Workers that die in different ways: each request in flight gets a 5xx naming model and cause."""

from __future__ import annotations

import pytest

from tests.conftest import make_probe_archive
from tests.support import DmsServer, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("faults")
    store = work / "store"
    make_probe_archive(store, "fragile", config="initial_workers: 1\n")
    make_probe_archive(store, "steady", config="initial_workers: 1\n")
    with running_server(
        work, ["--model-store", str(store), "--models", "fragile=fragile-1.0.mar", "steady=steady-1.0.mar"]
    ) as running:
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
