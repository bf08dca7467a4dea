"""The management API as a TorchServe client uses it, against a real server started from a TorchServe
``config.properties`` (#37's table): registration and scaling defaults, the parameters TorchServe takes, and the
status codes where DMS now answers as TorchServe does. The deliberate differences are in docs/torchserve.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_probe_archive
from tests.support import DmsServer, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DmsServer]:
    work = tmp_path_factory.mktemp("ts-management")
    store = work / "model_store"
    make_probe_archive(store, "probe")
    make_probe_archive(store, "broken")
    make_probe_archive(store, "started")
    make_probe_archive(store, "counted")
    make_probe_archive(store, "placed")
    config = work / "config.properties"
    config.write_text(f"model_store={store}\ndisable_token_authorization=true\ndefault_workers_per_model=2\n")
    # Two GPUs as CUDA sees them (the probe handler never touches one): where number_gpu places workers shows.
    with running_server(work, ["--ts-config", str(config)], env={"CUDA_VISIBLE_DEVICES": "0,1"}) as running:
        yield running


def test_a_model_registered_without_initial_workers_starts_none_as_on_torchserve(server: DmsServer):
    # TorchServe's own test: an archive whose handler cannot load, registered with no initial_workers.
    registered = server.manage("POST", "/models", params={"url": "broken-1.0.mar", "handler": "invalidHandler"})
    assert registered.status_code == 200, registered.text
    assert "registered with 0 initial workers" in registered.json()["status"]
    [described] = server.describe("broken")
    assert described["minWorkers"] == 0 and described["workers"] == []

    # Its workers, asked for and awaited, fail: 500 naming why, and describe shows it (TorchServe: 500).
    scaled = server.manage("PUT", "/models/broken", params={"min_worker": 1, "synchronous": "true"})
    assert scaled.status_code == 500, scaled.text
    assert scaled.json()["type"] == "WorkersFailedError" and "failed to start" in scaled.json()["message"]
    [described] = server.describe("broken")
    assert described["status"] == "FAILED" and described["minWorkers"] == 1


def test_scaling_takes_torchserves_defaults_and_parameters(server: DmsServer):
    registered = server.manage("POST", "/models", params={"url": "probe-1.0.mar", "initial_workers": 1})
    assert registered.status_code == 200, registered.text
    # No min_worker: TorchServe's default, 1 (not synchronous by default: 202).
    assert server.manage("PUT", "/models/probe").status_code == 202
    # number_gpu and timeout are TorchServe's: taken, with the other parameters.
    scaled = server.manage(
        "PUT", "/models/probe", params={"min_worker": 2, "number_gpu": 0, "timeout": -1, "synchronous": "true"}
    )
    assert scaled.status_code == 200, scaled.text
    assert scaled.json() == {"status": "Workers scaled to 2 for model: probe"}
    assert len(server.describe("probe")[0]["workers"]) == 2
    only_timeout = server.manage("PUT", "/models/probe", params={"timeout": 5, "synchronous": "true"})
    assert only_timeout.status_code == 200, only_timeout.text  # back to the default min_worker, 1
    assert len(server.describe("probe")[0]["workers"]) == 1


def test_number_gpu_puts_that_many_workers_on_gpus_and_the_rest_on_the_cpu(server: DmsServer):
    registered = server.manage("POST", "/models", params={"url": "placed-1.0.mar", "initial_workers": 0})
    assert registered.status_code == 200, registered.text
    scaled = server.manage("PUT", "/models/placed", params={"min_worker": 3, "number_gpu": 1, "synchronous": "true"})
    assert scaled.status_code == 200, scaled.text
    workers = server.describe("placed")[0]["workers"]
    assert sorted(worker["gpu"] for worker in workers) == [False, False, True]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"min_worker": -1}, "min_worker must be >= 0"),
        ({"min_worker": "nan"}, "must be an integer"),
        ({"timeout": "junk"}, "timeout must be a number"),
        ({"number_gpu": "x"}, "number_gpu must be an integer"),
    ],
)
def test_a_scaling_parameter_that_is_not_a_number_is_refused_naming_it(server: DmsServer, params, says):
    answer = server.manage("PUT", "/models/probe", params=params)
    assert answer.status_code == 400 and says in answer.json()["message"], answer.text


def test_registration_takes_startup_timeout_and_runtime(server: DmsServer, tmp_path: Path):
    wrong_runtime = server.manage("POST", "/models", params={"url": "started-1.0.mar", "runtime": "python4"})
    assert wrong_runtime.status_code == 400 and "python4" in wrong_runtime.json()["message"]
    no_time = server.manage("POST", "/models", params={"url": "started-1.0.mar", "startup_timeout": 0})
    assert no_time.status_code == 400 and "startup_timeout" in no_time.json()["message"]
    registered = server.manage(
        "POST",
        "/models",
        params={"url": "started-1.0.mar", "runtime": "python3", "startup_timeout": 120, "initial_workers": 1},
    )
    assert registered.status_code == 200, registered.text
    assert len(server.describe("started")[0]["workers"]) == 1


def test_the_metrics_port_answers_options_with_its_api_description(server: DmsServer):
    described = server.http.options(f"{server.metrics_url}/")
    assert described.status_code == 200 and "/metrics" in described.json()["paths"]
    assert server.http.get(f"{server.metrics_url}/api-description").json() == described.json()


def test_metrics_carry_torchserves_names_for_its_dashboards(server: DmsServer):
    from prometheus_client.parser import text_string_to_metric_families

    registered = server.manage("POST", "/models", params={"url": "counted-1.0.mar", "initial_workers": 1})
    assert registered.status_code == 200, registered.text
    for _ in range(3):
        assert server.predict("counted", {"echo": 1}).status_code == 200
    assert server.predict("counted", {"bad": True}).status_code == 400
    exposition = server.http.get(f"{server.metrics_url}/metrics").text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    hostname = next(labels for name, labels in samples if name == "Requests2XX")[0][1]
    host = (("Hostname", hostname), ("Level", "Host"))
    model = (("hostname", hostname), ("model_name", "counted"), ("model_version", "1.0"))
    assert samples[("Requests2XX", host)] >= 3 and samples[("Requests4XX", host)] >= 1
    assert samples[("ts_inference_requests_total", model)] == 4
    assert samples[("ts_inference_latency_microseconds", model)] > 0
    assert samples[("ts_queue_latency_microseconds", model)] >= 0
    for gauge in ("QueueTime", "WorkerThreadTime", "CPUUtilization", "MemoryUsed", "DiskAvailable"):
        assert samples[(gauge, host)] >= 0
    assert samples[("MemoryUtilization", host)] > 0
    assert "dms_requests_total" in exposition  # DMS's own names stay
