"""DMS as KServe runs it: the ServingRuntime's own arguments and environment, on a folder laid out as KServe's
storage initializer leaves a TorchServe model (``model-store/mnist.mar``, ``config/config.properties``), and
the requests of KServe's TorchServe MNIST examples, v1 and v2, answered as TorchServe answers them.

The runtime's arguments are read from ``deploy/kserve/clusterservingruntime.yaml``; only ``/mnt/models`` is
replaced by the test's folder and the four addresses by free loopback ports.
"""

from __future__ import annotations

import base64
import io
import shutil
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from PIL import Image

from dms._generated import inference_pb2
from tests.e2e.test_peer_archives import archiver
from tests.support import FIXTURES, REPO, DmsServer, free_ports, running_server
from tests.unit.test_torchserve_config import KSERVE_EXAMPLE

torch = pytest.importorskip("torch", reason="the [torch] extra (torch==2.13.0) is not installed")

RUNTIME = REPO / "deploy" / "kserve" / "clusterservingruntime.yaml"
SAMPLES = REPO / "src" / "dms" / "default_model" / "samples"
ADDRESS_FLAGS = ("--inference-address", "--management-address", "--metrics-address", "--grpc-address")

# The config.properties of KServe's TorchServe MNIST example, with batches of 4 and a service envelope.
# Its gRPC management port is made a free one, so that runs side by side do not collide on 7071.
CONFIG = KSERVE_EXAMPLE.replace('"batchSize":1,"maxBatchDelay":10', '"batchSize":4,"maxBatchDelay":50').replace(
    "grpc_management_port=7071", f"grpc_management_port={free_ports(1)[0]}"
)


def runtime_container() -> dict[str, Any]:
    document = yaml.safe_load(RUNTIME.read_text())
    (container,) = document["spec"]["containers"]
    assert container["name"] == "kserve-container"
    return container


def runtime_arguments(models_root: Path, name: str = "mnist") -> list[str]:
    """The container's arguments for the InferenceService ``name`` whose /mnt/models is ``models_root``, the
    addresses left to DmsServer."""
    args = [arg.replace("/mnt/models", str(models_root)) for arg in runtime_container()["args"]]
    return [arg.replace("{{.Name}}", name) for arg in args if not arg.startswith(ADDRESS_FLAGS)]


def runtime_environment(labels: dict[str, str]) -> dict[str, str]:
    """The container's environment, with KServe's ``{{.Labels.x}}`` templates filled from ``labels`` (empty
    when the InferenceService has no such label, as KServe renders them)."""
    env = {}
    for entry in runtime_container().get("env", []):
        value = str(entry["value"])
        for name in ("serviceEnvelope",):
            value = value.replace(f"{{{{.Labels.{name}}}}}", labels.get(name, ""))
        env[entry["name"]] = value
    return env


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory):
    """A TorchServe MNIST-style archive in KServe's layout, and the network it holds."""
    sys.path.insert(0, str(FIXTURES))
    from torch_digit_net import DigitNet

    torch.manual_seed(3)
    net = DigitNet().eval()
    work = tmp_path_factory.mktemp("kserve")
    for name in ("torch_digit_net.py", "ts_mnist_handler.py"):
        shutil.copy(FIXTURES / name, work / name)
    torch.save(net.state_dict(), work / "mnist_cnn.pt")
    root = work / "mnt-models"
    (root / "model-store").mkdir(parents=True)
    (root / "config").mkdir()
    archiver(
        "torch-model-archiver",
        *("--model-name", "mnist", "--version", "1.0", "--model-file", "torch_digit_net.py"),
        *("--serialized-file", "mnist_cnn.pt", "--handler", "ts_mnist_handler.py"),
        *("--export-path", str(root / "model-store")),
        cwd=work,
    )
    return work, root, net


def digit_png(digit: int) -> bytes:
    image = Image.open(SAMPLES / f"digit_{digit}.png").convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32) / 255.0


def expected_digit(net: Any, png: bytes, already_scaled: bool = False) -> int:
    values = pixels(png)
    tensor = torch.from_numpy((values - 0.1307) / 0.3081)[None, None]
    if already_scaled:  # the v2 tensor form: the pixels as sent, straight into the network
        tensor = torch.from_numpy(values)[None, None]
    return int(net(tensor).argmax(1)[0])


def serve_kserve_layout(work: Path, root: Path, envelope_in_file: str, labels: dict[str, str]):
    (root / "config" / "config.properties").write_text(f"{CONFIG}service_envelope={envelope_in_file}\n")
    run = work / f"run-{envelope_in_file}-{labels.get('serviceEnvelope', '')}"
    run.mkdir()
    return running_server(run, runtime_arguments(root), runtime_environment(labels))


def test_kserve_v1_instances_reach_a_torchserve_handler_one_row_each(mnist):
    work, root, net = mnist
    with serve_kserve_layout(work, root, "kserve", {}) as server:
        pngs = [digit_png(d) for d in (0, 3, 7)]
        body = {"instances": [{"data": base64.b64encode(png).decode()} for png in pngs]}
        response = server.http.post(f"{server.inference_url}/v1/models/mnist:predict", json=body)
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": [expected_digit(net, png) for png in pngs]}
        # The model's settings came from model_snapshot: batchSize 4, minWorkers 1.
        (described,) = server.describe("mnist")
        assert described["batchSize"] == 4 and described["minWorkers"] == 1, described
        assert server.http.get(f"{server.inference_url}/v1/models/mnist").json() == {"name": "mnist", "ready": True}
        unused = [line for line in server.log_lines if "DMS does not use" in line]
        assert len(unused) == 1 and "number_of_netty_threads" in unused[0] and "grpc_management_port" not in unused[0]
        # /predictions is never enveloped: the PNG itself, as always.
        assert server.predict("mnist", pngs[1]).json() == expected_digit(net, pngs[1])


def test_kserve_v2_bytes_and_tensor_forms_as_torchserve_answers_them(mnist):
    work, root, net = mnist
    # The file says kserve; the InferenceService's serviceEnvelope label (TS_SERVICE_ENVELOPE) says kservev2.
    with serve_kserve_layout(work, root, "kserve", {"serviceEnvelope": "kservev2"}) as server:
        png = digit_png(5)
        as_bytes = {
            "id": "d3b15cad-50a2-4eaf-80ce-8b0a428bd298",
            "inputs": [
                {"name": "input-0", "shape": [-1], "datatype": "BYTES", "data": [base64.b64encode(png).decode()]}
            ],
        }
        response = server.http.post(f"{server.inference_url}/v2/models/mnist/infer", json=as_bytes)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "id": "d3b15cad-50a2-4eaf-80ce-8b0a428bd298",
            "model_name": "mnist",
            "model_version": "1.0",
            "outputs": [{"name": "predict", "shape": [1], "datatype": "INT64", "data": [expected_digit(net, png)]}],
        }
        tensor = pixels(png)[None].tolist()  # [1, 28, 28], as KServe's totensor.py makes it
        as_tensor = {"inputs": [{"name": "input-0", "shape": [1, 28, 28], "datatype": "FP32", "data": tensor}]}
        response = server.http.post(f"{server.inference_url}/v2/models/mnist/infer", json=as_tensor)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["outputs"] == [
            {"name": "predict", "shape": [1], "datatype": "INT64", "data": [expected_digit(net, png, True)]}
        ]
        assert answer["model_name"] == "mnist" and answer["id"]
        # grpc-v2: the same tensor over ModelInfer.
        request = inference_pb2.ModelInferRequest(model_name="mnist", id="g1")
        entry = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 28, 28])
        entry.contents.fp32_contents.extend(pixels(png).reshape(-1).tolist())
        with grpc.insecure_channel(server.grpc_address) as channel:
            infer = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=inference_pb2.ModelInferRequest.SerializeToString,
                response_deserializer=inference_pb2.ModelInferResponse.FromString,
            )
            reply = infer(request, timeout=60)
        assert reply.id == "g1" and [o.name for o in reply.outputs] == ["predict"]
        assert np.frombuffer(reply.raw_output_contents[0], "<i8").tolist() == [expected_digit(net, png, True)]
        # A bad row is that request's error, named, and the server serves on.
        broken = {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["bm90IGFuIGltYWdl"]}]}
        response = server.http.post(f"{server.inference_url}/v2/models/mnist/infer", json=broken)
        assert response.status_code == 500 and "handler raised" in response.json()["error"], response.text
        response = server.http.post(f"{server.inference_url}/v2/models/mnist/infer", json=as_bytes)
        assert response.status_code == 200


def test_the_runtime_declares_what_kserve_needs():
    container = runtime_container()
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    document = yaml.safe_load(RUNTIME.read_text())
    formats = {entry["name"]: entry for entry in document["spec"]["supportedModelFormats"]}
    assert formats["pytorch"]["autoSelect"] and formats["pytorch"]["priority"] > 2  # TorchServe's runtime: 2
    assert set(document["spec"]["protocolVersions"]) == {"v1", "v2", "grpc-v2"}


IRIS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
"""The rows of KServe's scikit-learn iris example request."""


def bare_store(tmp_path: Path, file: Path) -> Path:
    """/mnt/models as KServe leaves a bare model: the one file."""
    root = tmp_path / "mnt-models"
    root.mkdir()
    shutil.copy(file, root / file.name)
    return root


def test_a_bare_scikit_learn_joblib_as_kserve_leaves_it(tmp_path: Path):
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(features, labels)
    joblib.dump(model, tmp_path / "model.joblib")
    root = bare_store(tmp_path, tmp_path / "model.joblib")
    with running_server(tmp_path, runtime_arguments(root, "sklearn-iris"), runtime_environment({})) as server:
        expected = model.predict(np.array(IRIS)).tolist()
        v1 = server.http.post(f"{server.inference_url}/v1/models/sklearn-iris:predict", json={"instances": IRIS})
        assert v1.status_code == 200, v1.text
        assert v1.json() == {"predictions": expected}
        v2 = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": IRIS}]}
        answer = server.http.post(f"{server.inference_url}/v2/models/sklearn-iris/infer", json=v2)
        assert answer.status_code == 200, answer.text
        (output,) = answer.json()["outputs"]
        assert output["data"] == expected and output["shape"] == [2]
        assert server.http.get(f"{server.inference_url}/v2/models/sklearn-iris/ready").status_code == 200
        (described,) = server.describe("sklearn-iris")
        assert described["modelVersion"] == "1"


def test_a_bare_onnx_model_as_kserve_leaves_it(tmp_path: Path):
    from tests.e2e.test_tensor_handler import BIAS, WEIGHTS, linear_model

    root = bare_store(tmp_path, linear_model(tmp_path / "model.onnx"))
    rows = np.random.default_rng(2).random((3, 16), dtype=np.float32)
    with running_server(tmp_path, runtime_arguments(root, "linear"), runtime_environment({})) as server:
        v1 = server.http.post(f"{server.inference_url}/v1/models/linear:predict", json={"instances": rows.tolist()})
        assert v1.status_code == 200, v1.text
        np.testing.assert_allclose(np.array(v1.json()["predictions"]), rows @ WEIGHTS + BIAS, rtol=1e-5)
        metadata = server.http.get(f"{server.inference_url}/v2/models/linear").json()
        assert metadata["platform"] == "onnxruntime_onnx" and metadata["versions"] == ["1"]


def test_a_folder_of_several_model_files_is_refused_naming_them(tmp_path: Path):
    root = tmp_path / "mnt-models"
    root.mkdir()
    (root / "a.onnx").write_bytes(b"")
    (root / "b.joblib").write_bytes(b"")
    server = DmsServer(tmp_path, runtime_arguments(root, "two"), runtime_environment({}))
    with pytest.raises(AssertionError, match="server exited before it was ready"):
        server.start()
    assert "holds several model files (a.onnx, b.joblib)" in server.log()
