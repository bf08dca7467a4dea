"""The repository's Dockerfile, built with podman and run as a user would: a read-only root filesystem, the
model store mounted read-only, the management key from a mounted secret; the kitten classified from outside the
container over REST and gRPC; SIGTERM under load with every request counted.

The image's size, build time and cold start (``podman run`` to the first answer) are written to
``test-output/container.json`` (docs/performance.md quotes them)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.grpc as grpcclient

from tests.conftest import make_squeezenet_archive
from tests.container.podman import (
    build_image,
    image_bytes,
    image_config,
    podman,
    private_network,
    require_podman,
)
from tests.e2e.test_open_inference_protocol import kitten_tensor
from tests.e2e.test_user_flow import SQUEEZENET_CONFIG
from tests.support import REPO, load_through_a_stop, shared_path

pytestmark = pytest.mark.timeout(1800)
TAG = "localhost/dms:test"
KEY = "a-management-key-from-a-kubernetes-secret"
REPORT = REPO / "test-output" / "container.json"


@pytest.fixture(scope="module")
def image() -> Iterator[dict[str, Any]]:
    require_podman()
    facts: dict[str, Any] = {"build_s": round(build_image(TAG), 1)}
    facts["image_mb"] = round(image_bytes(TAG) / 1e6, 1)
    yield facts
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(facts, indent=2) + "\n")


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = shared_path("models/squeezenet/squeezenet_v1.1.onnx")
    store = tmp_path_factory.mktemp("container") / "model_store"
    make_squeezenet_archive(model, store, SQUEEZENET_CONFIG)
    readable(store)
    return store


def readable(path: Path) -> None:
    """Readable by the container's user (uid 1000): pytest's folders are its owner's only."""
    path.chmod(0o755)
    for entry in path.iterdir():
        entry.chmod(0o755 if entry.is_dir() else 0o644)


@contextmanager
def container(name: str, store: Path, secret: Path, *args: str) -> Iterator[tuple[str, float]]:
    """A DMS container in a network namespace of its own; yields (its address, when ``podman run`` started)."""
    with private_network() as network:
        started = time.monotonic()
        podman(
            *("run", "-d", "--name", name, "--network", f"ns:/run/netns/{network.name}"),
            *("--read-only", "--tmpfs", "/tmp"),
            *("-v", f"{store}:/mnt/models/model-store:ro", "-v", f"{secret}:/var/run/secrets/dms/management-key:ro"),
            *("-e", "DMS_MANAGEMENT_KEY_FILE=/var/run/secrets/dms/management-key"),
            TAG,
            *args,
        )
        try:
            yield network.address, started
        finally:
            podman("rm", "-f", "-t", "0", name, check=False)


def first_answer(url: str, started: float, body: bytes, timeout_s: float = 120) -> tuple[httpx.Response, float]:
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        try:
            response = httpx.post(url, content=body, timeout=30)
            if response.status_code == 200:
                return response, time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no answer from {url} within {timeout_s} s")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "management-key"
    path.write_text(KEY + "\n")
    path.chmod(0o444)
    return path


def test_the_image_is_a_non_root_dms_serve(image):
    config = image_config(TAG)
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["dms", "serve"]
    assert config["StopSignal"] == "SIGTERM"
    assert set(config["ExposedPorts"]) == {"8080/tcp", "8081/tcp", "8082/tcp", "7070/tcp"}


def test_the_kitten_from_outside_over_rest_and_grpc(image, model_store, secret):
    kitten = shared_path("images/kitten.jpg").read_bytes()
    args = ("--models", "squeezenet=squeezenet.mar")
    with container("dms-test-kitten", model_store, secret, *args) as (address, started):
        response, cold_start = first_answer(f"http://{address}:8080/predictions/squeezenet", started, kitten)
        image["cold_start_to_kitten_s"] = round(cold_start, 2)
        assert next(iter(response.json())) == "Egyptian cat"
        client = grpcclient.InferenceServerClient(f"{address}:7070")
        tensor = grpcclient.InferInput("data_0", [1, 3, 224, 224], "FP32")
        tensor.set_data_from_numpy(kitten_tensor())
        scores = client.infer("squeezenet", [tensor]).as_numpy("softmaxout_1").reshape(-1)
        assert float(scores.max()) == pytest.approx(response.json()["Egyptian cat"], abs=1e-4)
        client.close()
        # The management API answers only to the key the secret holds; no key file was written for it.
        assert httpx.get(f"http://{address}:8081/models", timeout=30).status_code == 401
        listed = httpx.get(f"http://{address}:8081/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert listed.status_code == 200 and listed.json()["models"][0]["modelName"] == "squeezenet"
        assert podman("exec", "dms-test-kitten", "id", "-u").stdout.strip() == "1000"
        key_file = podman("exec", "dms-test-kitten", "cat", "/tmp/dms/key_file.json").stdout
        assert KEY not in key_file and set(json.loads(key_file)) == {"inference"}
        logs = podman("logs", "dms-test-kitten").stderr.splitlines()
        records = [json.loads(line) for line in logs if line.strip()]
        assert any("registered squeezenet:1.0" in record["message"] for record in records)


def test_the_bundled_model_on_a_bare_run(image, tmp_path, secret):
    empty = tmp_path / "empty-store"
    empty.mkdir()
    readable(empty)
    digit = (REPO / "src" / "dms" / "default_model" / "samples" / "digit_7.png").read_bytes()
    with container("dms-test-bare", empty, secret) as (address, started):
        response, cold_start = first_answer(f"http://{address}:8080/predictions/digits", started, digit)
        image["cold_start_bundled_model_s"] = round(cold_start, 2)
        assert next(iter(response.json())) == "7"


def test_sigterm_under_load_answers_every_accepted_request(image, model_store, secret):
    kitten = shared_path("images/kitten.jpg").read_bytes()
    with container("dms-test-sigterm", model_store, secret, "--models", "squeezenet=squeezenet.mar") as (address, t0):
        url = f"http://{address}:8080/predictions/squeezenet"
        first_answer(url, t0, kitten)
        with load_through_a_stop(url, 8, content=kitten) as outcomes:
            time.sleep(3)
            answered_before = sum(outcomes.values())
            podman("kill", "--signal", "TERM", "dms-test-sigterm")
            exit_code = podman("wait", "dms-test-sigterm", timeout_s=120).stdout.strip()
    assert answered_before > 0 and outcomes["200"] > answered_before, outcomes
    assert set(outcomes) == {"200", "refused"}, outcomes  # none lost: each answered, or refused at the door
    assert exit_code == "0"
    image["sigterm_outcomes"] = dict(outcomes)
