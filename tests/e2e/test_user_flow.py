"""The README's flow, as a user runs it: archive with the CLI, serve, curl, describe, stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dms.server import default_model_archive
from tests.support import DmsServer, free_ports, running_server, shared_path

SQUEEZENET_CONFIG = """\
batch_size: 4
max_batch_delay_ms: 5
handler:
  channel_order: BGR
  resize: 256
  input_size: 224
  scale: 1.0
  mean: [103.939, 116.779, 123.68]
  std: [1.0, 1.0, 1.0]
  apply_softmax: false
"""

# ../shared/models/README.md, recipe verified against the model zoo's reference vector.
KITTEN_TOP5 = {"Egyptian cat": 0.373, "tiger cat": 0.316, "tabby": 0.304, "lynx": 0.003, "tiger": 0.002}
DOG_TOP5 = {
    "Great Pyrenees": 0.617,
    "golden retriever": 0.231,
    "Labrador retriever": 0.117,
    "tennis ball": 0.015,
    "kuvasz": 0.010,
}


def dms(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dms", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def squeezenet_server(tmp_path_factory: pytest.TempPathFactory):
    model = shared_path("models/squeezenet/squeezenet_v1.1.onnx")
    synset = shared_path("models/squeezenet/synset.txt")
    work = tmp_path_factory.mktemp("squeezenet")
    (work / "model-config.yaml").write_text(SQUEEZENET_CONFIG)
    done = dms(
        "archive",
        "--model-name",
        "squeezenet",
        "--version",
        "1.0",
        "--serialized-file",
        str(model),
        "--handler",
        "image_classifier",
        "--extra-files",
        str(synset),
        "--config-file",
        "model-config.yaml",
        "--export-path",
        "model_store",
        cwd=work,
    )
    assert done.returncode == 0, done.stderr
    assert (work / "model_store" / "squeezenet.mar").is_file()
    with running_server(work, ["--model-store", "model_store", "--models", "squeezenet=squeezenet.mar"]) as server:
        yield server


@pytest.mark.parametrize(("image", "expected"), [("kitten.jpg", KITTEN_TOP5), ("dog.jpg", DOG_TOP5)])
def test_squeezenet_answers_the_reference_top5(squeezenet_server: DmsServer, image: str, expected: dict[str, float]):
    body = shared_path(f"images/{image}").read_bytes()
    response = httpx.put(f"{squeezenet_server.inference_url}/predictions/squeezenet", content=body, timeout=60)
    assert response.status_code == 200, response.text
    top5 = response.json()
    assert list(top5) == list(expected)
    for label, probability in expected.items():
        assert top5[label] == pytest.approx(probability, abs=0.01)


def test_squeezenet_also_takes_multipart_and_versioned_paths(squeezenet_server: DmsServer):
    body = shared_path("images/kitten.jpg").read_bytes()
    url = f"{squeezenet_server.inference_url}/predictions/squeezenet/1.0"
    response = httpx.post(url, files={"data": ("kitten.jpg", body, "image/jpeg")}, timeout=60)
    assert response.status_code == 200, response.text
    assert next(iter(response.json())) == "Egyptian cat"


def test_describe_reports_versions_workers_and_batching(squeezenet_server: DmsServer):
    [described] = squeezenet_server.describe("squeezenet")
    assert described["modelName"] == "squeezenet"
    assert described["modelVersion"] == "1.0"
    assert described["batchSize"] == 4
    assert described["maxBatchDelay"] == 5
    assert described["status"] == "READY"
    assert len(described["workers"]) == described["minWorkers"] >= 1
    assert all(w["pid"] > 0 and w["memoryUsage"] > 0 for w in described["workers"])


def test_default_model_serves_digits_with_nothing_named(tmp_path: Path):
    samples = default_model_archive().parent / "samples"
    with running_server(tmp_path, []) as server:
        for digit in range(10):
            response = server.predict("digits", (samples / f"digit_{digit}.png").read_bytes())
            assert response.status_code == 200, response.text
            assert next(iter(response.json())) == str(digit)
        assert httpx.get(f"{server.inference_url}/ping").json() == {"status": "Healthy"}


def test_start_runs_in_the_background_and_stop_ends_it(tmp_path: Path):
    inference, management, metrics, grpc_port = free_ports(4)
    state_dir = tmp_path / "state"
    pid_file = state_dir / "dms.pid"
    common = ["--state-dir", str(state_dir)]
    started = dms(
        "start",
        "--inference-address",
        f"127.0.0.1:{inference}",
        "--management-address",
        f"127.0.0.1:{management}",
        "--metrics-address",
        f"127.0.0.1:{metrics}",
        "--grpc-address",
        f"127.0.0.1:{grpc_port}",
        *common,
        cwd=tmp_path,
    )
    try:
        assert started.returncode == 0, started.stderr
        pid = int(pid_file.read_text())
        sample = default_model_archive().parent / "samples" / "digit_4.png"
        response = httpx.put(f"http://127.0.0.1:{inference}/predictions/digits", content=sample.read_bytes())
        assert next(iter(response.json())) == "4"
        again = dms("start", *common, cwd=tmp_path)
        assert again.returncode != 0 and "already running" in again.stderr
    finally:
        stopped = dms("stop", *common, cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert f"pid {pid}" in stopped.stdout
    assert not pid_file.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{inference}/ping")
