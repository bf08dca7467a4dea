"""Server lifecycle with real processes: client disconnects, graceful stop, no orphaned workers."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import make_probe_archive
from tests.support import DmsServer, load_through_a_stop, wait_for


def start_probe_server(tmp_path: Path, config: str) -> DmsServer:
    store = tmp_path / "store"
    store.mkdir()
    make_probe_archive(store, "probe", config=config)
    return DmsServer(tmp_path, ["--model-store", str(store), "--models", "probe=probe-1.0.mar"]).start()


def gone(pids: set[int]) -> bool:
    return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


def test_a_request_whose_client_went_away_never_reaches_a_worker(tmp_path: Path):
    marker = tmp_path / "ran.txt"
    server = start_probe_server(tmp_path, "initial_workers: 1\nbatch_size: 1\n")
    try:
        busy = ThreadPoolExecutor(1).submit(server.predict, "probe", {"sleep": 1.0})
        server.wait_busy("probe")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.inference_url}/predictions/probe", json={"touch": str(marker)}, timeout=0.3)
        assert busy.result().status_code == 200
        assert server.predict("probe", {"echo": "next"}).status_code == 200  # the queue has moved past it
    finally:
        server.stop()
    assert not marker.exists()


def test_a_client_that_leaves_before_its_body_is_complete_sends_nothing_to_a_worker(tmp_path: Path):
    marker = tmp_path / "ran.txt"
    store = tmp_path / "store"
    store.mkdir()
    make_probe_archive(store, "probe", config="initial_workers: 1\n")
    args = ["--model-store", str(store), "--models", "probe=probe-1.0.mar"]
    server = DmsServer(tmp_path, args).start()
    try:
        body = json.dumps({"touch": str(marker)}).encode()  # whole and valid, but less than announced
        host, port = server.inference_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as client:
            client.sendall(
                b"POST /predictions/probe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body) + 100}\r\n\r\n".encode()
                + body
            )
            time.sleep(0.3)
        assert server.predict("probe", {"echo": "next"}).status_code == 200

        def in_flight() -> float:
            for line in httpx.get(f"{server.metrics_url}/metrics").text.splitlines():
                if line.startswith('dms_in_flight_requests{transport="raw"}'):
                    return float(line.rsplit(" ", 1)[1])
            return -1.0

        wait_for(lambda: in_flight() == 0.0, what="no request left in flight")
    finally:
        server.stop()
    assert not marker.exists()


def test_sigterm_finishes_accepted_requests_then_stops_workers(tmp_path: Path):
    server = start_probe_server(tmp_path, "initial_workers: 1\nbatch_size: 1\n")
    pids = server.worker_pids("probe")
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(server.predict, "probe", {"sleep": 0.5, "echo": i}) for i in range(4)]
        wait_for(lambda: server.describe("probe")[0]["jobQueueStatus"]["pendingRequests"] == 3, what="3 queued")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        responses = [future.result() for future in futures]
    assert [r.status_code for r in responses] == [200] * 4
    assert sorted(r.json()["echo"] for r in responses) == [0, 1, 2, 3]
    assert server.stop() == 0
    assert gone(pids)
    assert not server.pid_file.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.inference_url}/ping")


def test_workers_exit_when_the_server_is_killed(tmp_path: Path):
    server = start_probe_server(tmp_path, "initial_workers: 2\n")
    pids = server.worker_pids("probe")
    assert len(pids) == 2
    server.stop(sig=signal.SIGKILL)
    wait_for(lambda: gone(pids), timeout_s=20, what="orphaned workers to exit")


def test_sigterm_under_load_leaves_no_request_unanswered(tmp_path: Path):
    """Sixteen clients, a new connection per request, while SIGTERM arrives: each request gets its 200, or its
    connection is refused once the port is closed. None is reset unread, as a request whose bytes were in the
    socket when the stop began was (about four in five runs before ``Http1Protocol.shutdown`` lingered), and one
    whose connection waited in the port's backlog was (one in five runs before the stop served the backlog:
    ``dms.listeners._Server.shutdown``)."""
    outcomes: Counter[str] = Counter()
    for attempt in range(5):
        (tmp_path / str(attempt)).mkdir()
        server = start_probe_server(tmp_path / str(attempt), "initial_workers: 2\nbatch_size: 4\n")
        body = {"echo": 1, "sleep": 0.01}
        with load_through_a_stop(f"{server.inference_url}/predictions/probe", 16, json=body) as tally:
            time.sleep(0.5)
            assert server.stop() == 0
        outcomes.update(tally)
    assert set(outcomes) == {"200", "refused"}, outcomes
