"""Real worker processes: spreading, batching, crash recovery and isolation between models."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import make_probe_archive
from tests.support import DmsServer, running_server, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("workers")
    store = work / "model_store"
    store.mkdir()
    make_probe_archive(store, "spread", config="initial_workers: 2\nbatch_size: 1\n")
    make_probe_archive(store, "batched", config="initial_workers: 1\nbatch_size: 8\nmax_batch_delay_ms: 50\n")
    make_probe_archive(store, "victim", config="initial_workers: 1\nbatch_size: 1\n")
    make_probe_archive(store, "bystander", config="initial_workers: 1\nbatch_size: 1\n")
    models = [
        "spread=spread-1.0.mar",
        "batched=batched-1.0.mar",
        "victim=victim-1.0.mar",
        "bystander=bystander-1.0.mar",
    ]
    with running_server(work, ["--model-store", str(store), "--models", *models]) as running:
        yield running


def test_a_burst_spreads_over_both_workers(server: DmsServer):
    workers = server.worker_pids("spread")
    assert len(workers) == 2
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: server.predict("spread", {"sleep": 0.05}), range(32)))
    assert all(r.status_code == 200 for r in responses)
    assert {r.json()["pid"] for r in responses} == workers


def test_requests_one_at_a_time_keep_to_the_worker_that_finished_last(server: DmsServer):
    # The idle worker handed out is the one most recently back: its caches are still warm, so a lone
    # request costs less than on a worker that sat idle (bench.ab: 1.2-1.5x the requests per second at c=1).
    workers = server.worker_pids("spread")
    first = server.predict("spread", {"echo": 0})
    assert first.status_code == 200
    served = [server.predict("spread", {"echo": i}).json()["pid"] for i in range(1, 9)]
    assert set(served) == {first.json()["pid"]}, served
    assert first.json()["pid"] in workers


def test_a_lone_request_runs_alone(server: DmsServer):
    for _ in range(5):
        response = server.predict("batched", {"echo": "alone"})
        assert response.status_code == 200
        assert response.json()["batch"] == 1
        assert response.json()["echo"] == "alone"


def test_concurrent_requests_are_batched(server: DmsServer):
    # Occupy the only worker, then queue requests: they must leave together as one batch.
    blocker = ThreadPoolExecutor(1).submit(server.predict, "batched", {"sleep": 1.0})
    server.wait_busy("batched")
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda i: server.predict("batched", {"echo": i}), range(6)))
    assert blocker.result().json()["batch"] == 1
    batches = [r.json()["batch"] for r in responses]
    assert max(batches) > 1, batches
    assert sorted(r.json()["echo"] for r in responses) == list(range(6))


def test_sigkill_mid_request_fails_only_that_request_and_the_worker_comes_back(server: DmsServer):
    [victim_pid] = server.worker_pids("victim")
    stop_bystander = threading.Event()
    bystander_codes: list[int] = []

    def keep_bystander_busy() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop_bystander.is_set():
                url = f"{server.inference_url}/predictions/bystander"
                bystander_codes.append(client.post(url, json={"echo": 1}).status_code)

    bystander = threading.Thread(target=keep_bystander_busy)
    bystander.start()
    try:
        in_flight = ThreadPoolExecutor(1).submit(server.predict, "victim", {"sleep": 5})
        server.wait_busy("victim")
        os.kill(victim_pid, signal.SIGKILL)
        failed = in_flight.result(timeout=30)
        assert failed.status_code == 500
        error = failed.json()
        assert error["type"] == "WorkerDiedError"
        assert "victim" in error["message"] and "SIGKILL" in error["message"]
        recovered = server.predict("victim", {"echo": "after"})
        assert recovered.status_code == 200, recovered.text
        assert recovered.json()["pid"] != victim_pid
    finally:
        stop_bystander.set()
        bystander.join()
    assert bystander_codes and set(bystander_codes) == {200}
    described = server.describe("victim")[0]
    assert described["restarts"] == 1
    assert described["status"] == "READY"
    metrics = httpx.get(f"{server.metrics_url}/metrics").text
    assert 'dms_worker_restarts_total{model="victim",version="1.0"} 1.0' in metrics
    assert 'dms_worker_restarts_total{model="bystander",version="1.0"} 0.0' in metrics


def test_a_handler_exception_is_a_500_naming_model_and_type(server: DmsServer):
    response = server.predict("spread", {"boom": True})
    assert response.status_code == 500
    body = response.json()
    assert body["type"] == "HandlerError"
    assert "spread" in body["message"] and "RuntimeError" in body["message"]
    assert "Traceback" not in body["message"]
    assert server.predict("spread", {"echo": 1}).status_code == 200


def test_a_handler_input_error_is_a_400_with_its_message(server: DmsServer):
    response = server.predict("spread", {"bad": True})
    assert response.status_code == 400
    assert response.json() == {"code": 400, "type": "InputError", "message": "probe: this input was marked bad"}


def test_a_wrong_result_count_is_a_clear_500(server: DmsServer):
    response = server.predict("spread", {"wrong_count": True})
    assert response.status_code == 500
    assert "2 results for a batch of 1" in response.json()["message"]


def test_one_bad_request_does_not_fail_its_batch_neighbours(server: DmsServer):
    blocker = ThreadPoolExecutor(1).submit(server.predict, "batched", {"sleep": 1.0})
    server.wait_busy("batched")
    bodies = [{"echo": 1}, {"bad": True}, {"echo": 2}, {"echo": 3}]
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda body: server.predict("batched", body), bodies))
    blocker.result()
    assert [r.status_code for r in responses] == [200, 400, 200, 200]


def test_request_ids_are_returned_and_reach_the_handler(server: DmsServer):
    response = server.predict("spread", {"echo": 1}, headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["request_id"] == "abc-123"
    generated = server.predict("spread", {"echo": 1})
    assert generated.headers["x-request-id"] == generated.json()["request_id"]


def test_worker_output_reaches_the_server_log_with_a_prefix(server: DmsServer):
    assert server.predict("spread", {"boom": True}).status_code == 500
    wait_for(
        lambda: any("[spread:1.0 w" in line and "probe exploded" in line for line in server.log_lines),
        what="worker traceback in the server log",
    )
