"""A server with few file descriptors (256) and a client that opens more connections than that: the
connections past ``max_connections`` are refused with a clear 503, the server keeps descriptors for itself,
so a worker that dies meanwhile is replaced at once, and once the client lets go everything serves again
(hole 2 of the hostile-clients issue: 1,100 held connections once left a model FAILED for good).
"""

from __future__ import annotations

import os
import signal
import socket
import sys

import pytest

from tests.e2e.hostile import watched
from tests.e2e.test_tensor_handler import write_linear_archive
from tests.support import DmsServer, wait_for

DESCRIPTORS = 256
LINEAR_ROW = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}


@pytest.fixture(scope="module")
def starved(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("starved")
    store = work / "store"
    write_linear_archive(work, store, "initial_workers: 2\n")
    running = DmsServer(work, ["--model-store", str(store), "--models", "linear=linear.mar", "--no-snapshot"])
    running.command = ["prlimit", f"--nofile={DESCRIPTORS}:{DESCRIPTORS}", sys.executable, "-m", "dms", "serve"]
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_connections_past_the_descriptor_budget_are_refused_and_a_dying_worker_is_replaced(starved: DmsServer):
    url = f"{starved.inference_url}/v2/models/linear/infer"
    host, port = starved.inference_url.removeprefix("http://").split(":")
    held: list[socket.socket] = []
    refused = 0
    try:
        with watched(starved, lambda client: client.post(url, json=LINEAR_ROW)) as bystander:
            wait_for(lambda: bystander.statuses, what="the bystander connected")  # before the places run out
            for _ in range(DESCRIPTORS + 100):
                held.append(socket.create_connection((host, int(port)), timeout=10))
            for sock in held:
                sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            for sock in held:
                if sock.recv(4096).startswith(b"HTTP/1.1 503 "):
                    refused += 1
        # Every place is taken (the held connections are kept alive), and a worker dies: its replacement must
        # still get the descriptors it needs (the reserve kept out of max_connections).
        victim = min(starved.worker_pids("linear"))
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(starved.worker_pids("linear") - {victim}) == 2, what="a replacement worker")
        assert starved.describe("linear")[0]["status"] == "READY"
    finally:
        for sock in held:
            sock.close()
    places = DESCRIPTORS - 64  # max_connections by default: the limit less an eighth, at least 64
    assert refused >= DESCRIPTORS + 100 - places, f"{refused} of {DESCRIPTORS + 100} refused"
    wait_for(lambda: starved.http.get(f"{starved.inference_url}/ping").status_code == 200, what="serving again")
