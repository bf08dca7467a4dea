"""Several frontends on one server (``--frontends 2``): shared ports, one registry, one set of metrics.

Each request below goes on a new connection, which the kernel gives to either frontend (``SO_REUSEPORT``
hashes the client's port), so a batch of them reaches both: a change made through management must hold
on every one of them, and ``/metrics`` must count what each of them served.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from dms.settings import load_settings
from tests.conftest import make_probe_archive
from tests.support import DmsServer, running_server, wait_for

FRESH_CONNECTIONS = 40
"""Requests sent, each on its own connection: all of them landing on one of two frontends has odds 2**-39."""


def on_fresh_connections(server: DmsServer, path: str, count: int = FRESH_CONNECTIONS) -> list[httpx.Response]:
    answers = []
    for number in range(count):
        with httpx.Client(timeout=60) as client:  # a new connection each time
            answers.append(client.post(f"{server.inference_url}{path}", json={"echo": number}))
    return answers


def replicas(server: DmsServer) -> list[psutil.Process]:
    assert server.proc is not None
    found = []
    for child in psutil.Process(server.proc.pid).children():
        try:
            if "dms.replica" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def counted(server: DmsServer, model: str, version: str) -> float:
    """Successful requests for (model, version) in the server's /metrics."""
    total = 0.0
    for line in httpx.get(f"{server.metrics_url}/metrics").text.splitlines():
        labels = (f'model="{model}"', f'version="{version}"', 'outcome="success"')
        if line.startswith("dms_requests_total{") and all(label in line for label in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


def versions(answers: list[httpx.Response]) -> set[Any]:
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers if a.status_code != 200]
    return {answer.json()["version"] for answer in answers}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    make_probe_archive(store, "probe", "1.0", config="initial_workers: 1\n")
    make_probe_archive(store, "probe", "2.0", config="initial_workers: 1\n")
    other = make_probe_archive(store, "other", "1.0", config="initial_workers: 1\n")
    other.rename(store / "other.mar")  # the repository API finds an archive by its file name
    return store


def test_two_frontends_share_the_ports_and_every_management_change(tmp_path: Path, store: Path):
    args = ["--model-store", str(store), "--no-default-model", "--frontends", "2", "--models", "probe=probe-1.0.mar"]
    with running_server(tmp_path, args, env={"CUDA_VISIBLE_DEVICES": "0,1"}) as server:
        [row] = server.describe("probe")
        assert row["minWorkers"] == 1 and len(row["workers"]) == 2  # one per frontend
        # Each frontend numbers its workers from 0, yet they take the two GPUs in turn, as one pool's would.
        assert sorted((worker["id"], worker["gpuId"]) for worker in row["workers"]) == [("0", 0), ("f1-0", 1)]
        assert row["jobQueueStatus"] == {"remainingCapacity": 200, "pendingRequests": 0}
        workers = server.worker_pids("probe")
        [replica] = replicas(server)

        answers = on_fresh_connections(server, "/predictions/probe")
        assert versions(answers) == {"1.0"}
        assert {answer.json()["pid"] for answer in answers} == workers  # both frontends served

        registered = server.manage("POST", "/models", params={"url": "probe-2.0.mar"})
        assert registered.status_code == 200, registered.text
        assert versions(on_fresh_connections(server, "/predictions/probe/2.0")) == {"2.0"}

        assert server.manage("PUT", "/models/probe/2.0/set-default").status_code == 200
        assert versions(on_fresh_connections(server, "/predictions/probe")) == {"2.0"}

        scaled = server.manage("PUT", "/models/probe/1.0", params={"min_worker": 2, "synchronous": "true"})
        assert scaled.status_code == 200, scaled.text
        assert len(server.worker_pids("probe", "1.0")) == 4

        assert server.manage("DELETE", "/models/probe/2.0").status_code == 200
        gone = on_fresh_connections(server, "/predictions/probe/2.0")
        assert {answer.status_code for answer in gone} == {404}
        assert versions(on_fresh_connections(server, "/predictions/probe")) == {"1.0"}

        # /metrics counts what both frontends served, with one series per label set.
        assert counted(server, "probe", "1.0") == 2 * FRESH_CONNECTIONS
        assert counted(server, "probe", "2.0") == 2 * FRESH_CONNECTIONS
        exposition = httpx.get(f"{server.metrics_url}/metrics").text
        assert exposition.count("# TYPE dms_requests_total counter") == 1
        assert 'dms_workers{model="probe",state="READY",version="1.0"} 4.0' in exposition
        # So does the console.
        [console_row] = server.manage("GET", "/console/api/summary").json()["models"]
        assert console_row["requestsOk"] == 2 * FRESH_CONNECTIONS
        assert (console_row["readyWorkers"], console_row["targetWorkers"]) == (4, 4)

    assert not replica.is_running() or replica.status() == psutil.STATUS_ZOMBIE
    assert all(not psutil.pid_exists(pid) for pid in workers)


@pytest.mark.parametrize("grpc_server", ["grpcio", "uvicorn"])
def test_grpc_repository_calls_change_every_frontend(tmp_path: Path, store: Path, grpc_server: str):
    args = ["--model-store", str(store), "--no-default-model", "--frontends", "2", "--models", "probe=probe-1.0.mar"]
    with running_server(tmp_path, [*args, "--grpc-server", grpc_server]) as server:
        headers = {"authorization": f"Bearer {server.key()}"}
        for _ in range(8):  # each client its own connection: some reach frontend 1, which asks frontend 0
            with grpcclient.InferenceServerClient(server.grpc_address) as client:
                client.load_model("other", headers=headers)
        assert len(server.worker_pids("other")) == 2
        assert versions(on_fresh_connections(server, "/predictions/other")) == {"1.0"}
        for _ in range(8):  # frontend 1 passes frontend 0's error on, the same
            with (
                pytest.raises(InferenceServerException, match=r"NOT_FOUND.*no archive for model 'nothing'"),
                grpcclient.InferenceServerClient(server.grpc_address) as client,
            ):
                client.load_model("nothing", headers=headers)
        with grpcclient.InferenceServerClient(server.grpc_address) as client:
            client.unload_model("other", headers=headers)
        assert {answer.status_code for answer in on_fresh_connections(server, "/predictions/other")} == {404}


def test_a_frontend_that_dies_is_started_again_with_the_registry(tmp_path: Path, store: Path):
    args = ["--model-store", str(store), "--no-default-model", "--frontends", "2", "--models", "probe=probe-1.0.mar"]
    with running_server(tmp_path, args) as server:
        [replica] = replicas(server)
        its_worker = {w["pid"] for w in server.describe("probe")[0]["workers"] if w["id"].startswith("f1-")}
        os.kill(replica.pid, signal.SIGKILL)
        replica.wait(10)
        wait_for(lambda: [p.pid for p in replicas(server)] not in ([], [replica.pid]), what="a new frontend 1")
        wait_for(lambda: len(server.worker_pids("probe")) == 2, what="frontend 1's worker again")
        assert server.worker_pids("probe").isdisjoint(its_worker)
        # The dead frontend's worker saw its frontend go, and went too.
        wait_for(lambda: not any(psutil.pid_exists(pid) for pid in its_worker), what="the orphaned worker to exit")
        answers = on_fresh_connections(server, "/predictions/probe")
        assert {answer.json()["pid"] for answer in answers} == server.worker_pids("probe")
        assert "frontend 1 exited with code -9; starting it again" in server.log()


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"kill_after_s": 5}, "kill_after_s"),
        ({"inference_address": "127.0.0.1:0"}, "inference_address's port"),
        ({"grpc_address": "127.0.0.1:0"}, "grpc_address's port"),
        ({"frontends": 0}, "greater than or equal to 1"),
    ],
)
def test_settings_that_cannot_work_with_several_frontends_are_refused(overrides: dict[str, Any], problem: str):
    with pytest.raises(ValueError, match=problem):
        load_settings(**{"frontends": 2, **overrides})


def test_a_rotated_inference_key_holds_on_every_frontend(tmp_path: Path, store: Path):
    args = ["--model-store", str(store), "--no-default-model", "--frontends", "2", "--models", "probe=probe-1.0.mar"]
    with running_server(tmp_path, [*args, "--enable-inference-token-auth"]) as server:
        old = server.key("inference")
        rotated = server.manage("POST", "/token", params={"type": "inference"})
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["key"]
        for key, status in ((old, 403), (new, 200)):
            for _ in range(16):
                with httpx.Client(timeout=60) as client:  # a new connection each time
                    answer = client.post(
                        f"{server.inference_url}/predictions/probe",
                        json={"echo": 1},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                assert answer.status_code == status, answer.text
