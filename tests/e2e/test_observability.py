"""Metrics, access log and request ids, checked against a known sequence of requests on a real server."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dms.archive.writer import ArchiveSpec, write_archive
from tests.conftest import make_probe_archive
from tests.e2e.test_tensor_handler import linear_model
from tests.support import DmsServer, running_server, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("observability")
    store = work / "store"
    make_probe_archive(store, "probe", config="initial_workers: 1\nbatch_size: 1\n")
    write_archive(
        ArchiveSpec(
            model_name="linear", version="1.0", handler="tensor", serialized_file=linear_model(work / "linear.onnx")
        ),
        store,
    )
    args = [
        "--model-store",
        str(store),
        "--models",
        "probe=probe-1.0.mar",
        "linear=linear.mar",
        "--default-workers-per-model",
        "1",
        "--log-format",
        "json",
    ]
    with running_server(work, args) as running:
        yield running


def scrape(server: DmsServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{server.metrics_url}/metrics").text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_and_histograms_after_a_known_sequence(server: DmsServer):
    before = scrape(server)
    for i in range(3):
        assert server.predict("probe", {"echo": i}).status_code == 200
    assert server.predict("probe", {"bad": True}).status_code == 400
    assert server.predict("nope", {"echo": 1}).status_code == 404
    assert server.predict("probe", {"exit": True}).status_code == 500  # the worker dies mid-request
    assert server.predict("probe", {"echo": "after"}).status_code == 200
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    probe = {"model": "probe", "version": "1.0", "transport": "raw"}
    assert delta("dms_requests_total", **probe, code="200", outcome="success") == 4
    assert delta("dms_requests_total", **probe, code="400", outcome="client_error") == 1
    assert delta("dms_requests_total", **probe, code="500", outcome="server_error") == 1
    unregistered = {"model": "_unregistered", "version": "", "transport": "raw"}  # one series for every unknown name
    assert delta("dms_requests_total", **unregistered, code="404", outcome="client_error") == 1
    assert not any(labels and dict(labels).get("model") == "nope" for _, labels in after)
    assert delta("dms_worker_restarts_total", model="probe", version="1.0") == 1
    assert delta("dms_request_duration_seconds_count", **probe) == 6
    assert delta("dms_queue_wait_seconds_count", model="probe", version="1.0") == 6
    # The crashed batch never reported timings: five batches finished.
    assert delta("dms_batch_size_count", model="probe", version="1.0") == 5
    assert delta("dms_batch_size_sum", model="probe", version="1.0") == 5
    assert delta("dms_batch_stage_duration_seconds_count", model="probe", version="1.0", stage="inference") == 5
    assert delta("dms_batch_stage_duration_seconds_sum", model="probe", version="1.0", stage="inference") > 0
    assert value(after, "dms_workers", model="probe", version="1.0", state="READY") == 1
    assert value(after, "dms_queue_depth", model="probe", version="1.0") == 0
    assert any(name == "dms_worker_resident_memory_bytes" and value > 10_000_000 for (name, _), value in after.items())
    assert value(after, "process_resident_memory_bytes") > 0
    assert value(after, "dms_in_flight_requests", transport="raw") == 0


def test_the_queue_per_worker_the_autoscaler_reads(server: DmsServer):
    """Five slow requests for one worker with batches of one: one runs, four wait, four per worker."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(server.predict, "probe", {"sleep": 1.5, "echo": i}) for i in range(5)]
        wait_for(
            lambda: value(scrape(server), "dms_queue_depth_per_worker", model="probe", version="1.0") == 4,
            what="four requests queued for the one worker",
        )
        assert all(future.result().status_code == 200 for future in futures)
    assert value(scrape(server), "dms_queue_depth_per_worker", model="probe", version="1.0") == 0


def access_lines(server: DmsServer) -> list[dict[str, object]]:
    lines = []
    for line in server.log_lines:
        if line.startswith("{") and '"dms.access"' in line:
            lines.append(json.loads(line))
    return lines


def test_access_log_and_request_id_over_rest(server: DmsServer):
    response = server.predict("probe", {"echo": 1}, headers={"X-Request-ID": "trace-rest-42"})
    assert response.headers["x-request-id"] == "trace-rest-42"
    assert response.json()["request_id"] == "trace-rest-42"  # the handler saw it through context
    entry = wait_for(
        lambda: next((e for e in access_lines(server) if e.get("request_id") == "trace-rest-42"), None),
        what="the access-log line",
    )
    assert entry["logger"] == "dms.access" and entry["level"] == "info"
    assert (entry["transport"], entry["model"], entry["model_version"], entry["status"], entry["batch_size"]) == (
        "raw",
        "probe",
        "1.0",
        "200",
        1,
    )
    assert 0 < float(entry["latency_ms"]) < 60_000


def test_access_log_and_request_id_over_grpc_and_v2_rest(server: DmsServer):
    grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is a test dependency")
    client = grpcclient.InferenceServerClient(server.grpc_address)
    tensor = grpcclient.InferInput("x", [1, 16], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
    client.infer("linear", [tensor], request_id="trace-grpc-7")
    httpx.post(
        f"{server.inference_url}/v2/models/linear/infer",
        headers={"X-Request-ID": "trace-v2-8"},
        json={"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0] * 16}]},
    )
    for request_id, transport in (("trace-grpc-7", "v2-grpc"), ("trace-v2-8", "v2-rest")):
        entry = wait_for(
            lambda rid=request_id: next((e for e in access_lines(server) if e.get("request_id") == rid), None),
            what=f"{request_id} logged",
        )
        assert (entry["transport"], entry["model"], entry["status"]) == (
            transport,
            "linear",
            "OK" if transport == "v2-grpc" else "200",
        )


def test_worker_errors_name_the_request(server: DmsServer):
    server.predict("probe", {"boom": True}, headers={"X-Request-ID": "trace-boom-9"})
    wait_for(
        lambda: any(
            "trace-boom-9" in line and "probe exploded" not in line and "handler raised" in line
            for line in server.log_lines
        ),
        what="the worker's error line naming the request",
    )


def dms_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dms", *args], capture_output=True, text=True, timeout=60, check=False)


def test_status_and_models_tables(server: DmsServer, tmp_path):
    for _ in range(2):
        server.predict("probe", {"echo": 1})
    server.predict("probe", {"boom": True})  # a 500
    address = [
        "--management-address",
        server.management_url.removeprefix("http://"),
        "--metrics-address",
        server.metrics_url.removeprefix("http://"),
    ]
    status = dms_cli("status", *address, "--state-dir", str(server.state_dir))
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith("server: healthy")
    assert lines[1].split() == [
        "MODEL",
        "VERSION",
        "STATUS",
        "WORKERS",
        "QUEUE",
        "OK",
        "4XX",
        "5XX",
        "ERR/60s",
        "RESTARTS",
    ]
    probe = next(line.split() for line in lines if line.startswith("probe"))
    assert probe[:5] == ["probe", "1.0", "READY", "1/1", "0"]
    assert int(probe[5]) >= 2 and int(probe[7]) >= 1 and probe[8].endswith("%") and float(probe[8][:-1]) > 0
    models = dms_cli("models", *address, "--token", server.key())
    assert models.returncode == 0, models.stderr
    rows = [line.split() for line in models.stdout.splitlines()[1:]]
    assert [row[:3] for row in rows] == [["linear", "1.0", "yes"], ["probe", "1.0", "yes"]]
    refused = dms_cli("models", *address, "--token", "wrong")
    assert refused.returncode == 1 and "refused the key" in refused.stderr
