"""Workers as Ray actors on a real cluster of three nodes (``--ray-address``): placed on both worker nodes,
serving REST and gRPC, scaled, replaced when a node dies, refused clearly when they cannot be placed."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient

from tests.conftest import make_probe_archive, make_squeezenet_archive
from tests.e2e.test_open_inference_protocol import kitten_tensor
from tests.e2e.test_user_flow import KITTEN_TOP5, SQUEEZENET_CONFIG
from tests.ray.conftest import LocalRayCluster
from tests.support import DmsServer, running_server, shared_path, wait_for

pytestmark = pytest.mark.timeout(600)

RAY_CONFIG = SQUEEZENET_CONFIG + "initial_workers: 2\n"
GPU_CONFIG = SQUEEZENET_CONFIG + "initial_workers: 1\nray:\n  num_gpus: 1\n"
ELASTIC_CONFIG = (
    SQUEEZENET_CONFIG.replace("batch_size: 4", "batch_size: 1")
    + "initial_workers: 1\nmax_workers: 3\nray:\n  target_queue_per_worker: 1\n  upscale_after_s: 0.5\n"
    + "  downscale_after_s: 2\n"
)


def _archive(store: Path, name: str, config: str) -> None:
    """The shared SqueezeNet archived with ``config`` as ``store/{name}.mar``."""
    model = shared_path("models/squeezenet/squeezenet_v1.1.onnx")
    built = make_squeezenet_archive(model, store.parent / f".build-{name}", config)
    built.replace(store / f"{name}.mar")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("ray-store") / "model_store"
    store.mkdir()
    make_probe_archive(store, "probe", config="batch_size: 1\ninitial_workers: 1\n")
    _archive(store, "squeezenet", RAY_CONFIG)
    _archive(store, "squeezenet_gpu", GPU_CONFIG)
    _archive(store, "elastic", ELASTIC_CONFIG)
    return store


@pytest.fixture(scope="module")
def front(ray_cluster: LocalRayCluster, store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DmsServer]:
    args = ["--ray-address", ray_cluster.address, "--model-store", str(store), "--models", "squeezenet=squeezenet.mar"]
    with running_server(tmp_path_factory.mktemp("ray-front"), args) as server:
        yield server


def _ready_workers(server: DmsServer, model: str) -> list[dict]:
    return [w for w in server.describe(model)[0]["workers"] if w["status"] in ("READY", "BUSY")]


def _kitten(server: DmsServer, model: str = "squeezenet") -> httpx.Response:
    return server.predict(model, shared_path("images/kitten.jpg").read_bytes())


def test_workers_spread_over_both_worker_nodes_and_answer_rest_and_grpc(front: DmsServer, ray_cluster: LocalRayCluster):
    workers = wait_for(lambda: len(_ready_workers(front, "squeezenet")) == 2 and _ready_workers(front, "squeezenet"))
    assert {w["nodeId"] for w in workers} == ray_cluster.node_ids()  # one on each worker node, none on the head
    assert all(w["pid"] > 0 and w["node"] for w in workers)
    wait_for(lambda: all(w["memoryUsage"] > 0 for w in _ready_workers(front, "squeezenet")), what="memory polled")
    exposition = httpx.get(f"{front.metrics_url}/metrics", timeout=30).text
    for worker in workers:  # the memory polled from each actor is a metric too
        series = f'dms_worker_resident_memory_bytes{{model="squeezenet",version="1.0",worker="{worker["id"]}"}}'
        assert series in exposition, exposition

    response = _kitten(front)
    assert response.status_code == 200, response.text
    top5 = response.json()
    assert list(top5) == list(KITTEN_TOP5)
    for label, probability in KITTEN_TOP5.items():
        assert top5[label] == pytest.approx(probability, abs=0.01)

    tensor = grpcclient.InferInput("data_0", [1, 3, 224, 224], "FP32")
    tensor.set_data_from_numpy(kitten_tensor())
    client = grpcclient.InferenceServerClient(front.grpc_address)
    probabilities = client.infer("squeezenet", [tensor]).as_numpy("softmaxout_1").reshape(-1)
    assert probabilities[int(np.argmax(probabilities))] == pytest.approx(top5["Egyptian cat"], abs=1e-3)

    # The model's files reached the nodes through Ray's object store and were unpacked once on this machine
    # (all three nodes share its disk), not read from the front's archive cache.
    unpacked = [p for p in ray_cluster.node_cache.iterdir() if p.is_dir()]
    assert len(unpacked) == 1 and (unpacked[0] / "squeezenet_v1.1.onnx").is_file()
    assert (unpacked[0] / "MAR-INF" / "MANIFEST.json").is_file()


def test_workers_scale_up_and_down_across_the_nodes(front: DmsServer, ray_cluster: LocalRayCluster):
    up = front.manage("PUT", "/models/squeezenet?min_worker=4&synchronous=true")
    assert up.status_code == 200, up.text
    workers = _ready_workers(front, "squeezenet")
    assert len(workers) == 4
    assert Counter(w["nodeId"] for w in workers) == dict.fromkeys(ray_cluster.node_ids(), 2)
    assert _kitten(front).status_code == 200

    down = front.manage("PUT", "/models/squeezenet?min_worker=2&synchronous=true")
    assert down.status_code == 200, down.text
    wait_for(lambda: len(front.describe("squeezenet")[0]["workers"]) == 2, what="two workers left")
    assert front.describe("squeezenet")[0]["minWorkers"] == 2


def test_a_model_asking_for_a_gpu_no_node_has_is_refused_with_the_reason(front: DmsServer):
    started = time.monotonic()
    registered = front.manage("POST", "/models?url=squeezenet_gpu.mar&model_name=gpu&synchronous=true")
    assert registered.status_code == 200, registered.text
    try:
        answer = _kitten(front, "gpu")
        assert answer.status_code == 503, answer.text
        assert "GPU 1" in answer.json()["message"] and "cannot be placed" in answer.json()["message"]
        assert time.monotonic() - started < 30  # neither the registration nor the request hung
        [described] = front.describe("gpu")
        assert described["status"] == "STARTING"
        assert "no node of the Ray cluster offers" in described["lastError"]
        assert [w["waitingForRoom"] is not None for w in described["workers"]] == [True]
        assert _kitten(front).status_code == 200  # the other model is untouched
    finally:
        assert front.manage("DELETE", "/models/gpu").status_code == 200


def test_a_worker_that_dies_times_out_or_raises_is_answered_as_a_local_one_would_be(front: DmsServer):
    registered = front.manage("POST", "/models?url=probe-1.0.mar&response_timeout=2&synchronous=true")
    assert registered.status_code == 200, registered.text
    try:
        first = front.predict("probe", {"echo": 1})
        assert first.status_code == 200, first.text
        pid = first.json()["pid"]

        raised = front.predict("probe", {"boom": True})
        assert raised.status_code == 500 and "probe exploded" in raised.json()["message"]
        assert front.predict("probe", {"echo": 2}).json()["pid"] == pid  # a handler's error costs no worker

        died = front.predict("probe", {"exit": True})
        assert died.status_code == 500 and "died while handling this request" in died.json()["message"]
        after_death = wait_for(lambda: (r := front.predict("probe", {"echo": 3})).status_code == 200 and r.json())
        assert after_death["pid"] != pid

        late = front.predict("probe", {"sleep": 10})
        assert late.status_code == 504 and "response_timeout_s" in late.json()["message"]
        after_timeout = wait_for(lambda: (r := front.predict("probe", {"echo": 4})).status_code == 200 and r.json())
        assert after_timeout["pid"] != after_death["pid"]
        assert front.describe("probe")[0]["restarts"] == 2
    finally:
        assert front.manage("DELETE", "/models/probe").status_code == 200


def test_a_handler_that_cannot_load_fails_the_registration_with_its_reason(front: DmsServer):
    answer = front.manage("POST", "/models?url=probe-1.0.mar&handler=no_such_module&synchronous=true")
    assert answer.status_code == 503, answer.text
    assert "no_such_module" in answer.json()["message"]
    assert front.manage("GET", "/models/probe").status_code == 404


def _load(server: DmsServer, model: str, clients: int, stop: threading.Event, tally: Counter[str]) -> list:
    body = shared_path("images/kitten.jpg").read_bytes()
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                try:
                    outcome = str(http.post(f"{server.inference_url}/predictions/{model}", content=body).status_code)
                except httpx.TransportError as exc:
                    outcome = f"lost: {type(exc).__name__}"
                with lock:
                    tally[outcome] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def test_workers_grow_under_load_and_shrink_back_when_it_ends(front: DmsServer):
    registered = front.manage("POST", "/models?url=elastic.mar&model_name=elastic&synchronous=true")
    assert registered.status_code == 200, registered.text
    stop, tally = threading.Event(), Counter[str]()
    threads = _load(front, "elastic", 12, stop, tally)
    try:
        wait_for(lambda: len(_ready_workers(front, "elastic")) >= 2, timeout_s=60, what="a second worker")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert set(tally) == {"200"}, tally
    [described] = front.describe("elastic")
    assert (described["minWorkers"], described["maxWorkers"]) == (1, 3)
    wait_for(lambda: front.describe("elastic")[0]["currentWorkers"] == 1, timeout_s=60, what="back to one worker")
    wait_for(lambda: len(front.describe("elastic")[0]["workers"]) == 1, what="the extra workers gone")
    assert front.manage("DELETE", "/models/elastic").status_code == 200


def test_a_second_front_shares_the_cluster(front: DmsServer, ray_cluster: LocalRayCluster, store: Path, tmp_path: Path):
    args = ["--ray-address", ray_cluster.address, "--model-store", str(store), "--models", "squeezenet=squeezenet.mar"]
    with running_server(tmp_path, args) as second:
        assert _kitten(second).status_code == 200
        assert _kitten(front).status_code == 200
        mine = {w["pid"] for w in _ready_workers(second, "squeezenet")}
        theirs = {w["pid"] for w in _ready_workers(front, "squeezenet")}
        assert len(mine) == 2 and not mine & theirs  # each front runs its own workers on the shared nodes


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_worker_node_killed_under_load_fails_only_its_batch(front: DmsServer, ray_cluster: LocalRayCluster):
    """Runs last: it takes a node away (and adds one back for whatever runs after)."""
    before = wait_for(lambda: len(_ready_workers(front, "squeezenet")) == 2 and _ready_workers(front, "squeezenet"))
    victim = before[0]
    stop, tally = threading.Event(), Counter[str]()
    threads = _load(front, "squeezenet", 8, stop, tally)
    try:
        wait_for(lambda: tally["200"] >= 20, timeout_s=60, what="load flowing")
        ray_cluster.kill_node(victim["nodeId"])
        wait_for(lambda: not _alive(victim["pid"]), timeout_s=60, what="the dead node's worker process gone")
        replaced = wait_for(
            lambda: (
                (ready := _ready_workers(front, "squeezenet"))
                and len(ready) == 2
                and victim["id"] not in {w["id"] for w in ready}
                and ready
            ),
            timeout_s=120,
            what="the lost worker replaced",
        )
        served = tally["200"]
        wait_for(lambda: tally["200"] >= served + 20, timeout_s=60, what="serving on after the replacement")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert {w["nodeId"] for w in replaced} == ray_cluster.node_ids()  # both on the surviving node
    print(f"answers while the node died: {dict(tally)}")
    failed = {outcome: count for outcome, count in tally.items() if outcome != "200"}
    assert set(failed) <= {"500", "503"} and sum(failed.values()) <= 4, tally  # at most its batch (batch_size 4)
    [described] = front.describe("squeezenet")
    assert described["restarts"] == 1 and victim["node"] in described["lastError"]
    ray_cluster.add_node()
