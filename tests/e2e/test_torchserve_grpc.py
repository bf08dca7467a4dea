"""TorchServe's gRPC APIs as a TorchServe user drives them (#37): client stubs generated from TorchServe's own
protos (``.tools/torchserve-protos``, taken from its 0.12.0 wheel by scripts/test.sh) by grpc_tools, in a client
process of their own, against a real server started from a TorchServe ``config.properties`` with
``grpc_management_port``: inference (``Ping``, ``Predictions``, ``StreamPredictions``, ``StreamPredictions2``) beside
the Open Inference Protocol on the gRPC port, and management (``RegisterModel``, ``ScaleWorker``,
``DescribeModel``, ``ListModels``, ``SetDefault``, ``UnregisterModel``) on its own port; on DMS's HTTP/2 and grpcio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dms.archive.writer import ArchiveSpec, write_archive
from tests.conftest import make_squeezenet_archive
from tests.e2e.conftest import char_model_store
from tests.e2e.test_user_flow import KITTEN_TOP5, SQUEEZENET_CONFIG
from tests.support import FIXTURES, DmsServer, free_ports, running_server

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / ".tools" / "torchserve-protos"
SHARED = ROOT.parent / "shared"
SQUEEZENET = "models/squeezenet/squeezenet_v1.1.onnx"

FIELDS_HANDLER = '''
def handle(data, context):
    """TorchServe-style: each request's fields, as the handler gets them."""
    if data is None:
        return None
    return [
        {name: (value.decode() if isinstance(value, (bytes, bytearray)) else value) for name, value in row.items()}
        for row in data
    ]
'''

CLIENT = """
import json, sys
import grpc
from google.protobuf import empty_pb2
import inference_pb2, inference_pb2_grpc, management_pb2, management_pb2_grpc

inference_address, management_address, image = sys.argv[1:4]
inference = inference_pb2_grpc.InferenceAPIsServiceStub(grpc.insecure_channel(inference_address))
management = management_pb2_grpc.ManagementAPIsServiceStub(grpc.insecure_channel(management_address))
results = {}


def call(name, method, request):
    try:
        answer = method(request, timeout=60)
        if isinstance(answer, management_pb2.ManagementResponse):
            results[name] = {"ok": True, "msg": answer.msg}
        elif isinstance(answer, inference_pb2.TorchServeHealthResponse):
            results[name] = {"ok": True, "health": answer.health}
        elif isinstance(answer, inference_pb2.PredictionResponse):
            results[name] = {"ok": True, "prediction": answer.prediction.decode()}
        else:  # a stream of PredictionResponse
            results[name] = {"ok": True, "answers": [
                {"prediction": a.prediction.decode(), "sequence_id": a.sequence_id,
                 "status": [a.status.code, a.status.message] if a.HasField("status") else None}
                for a in answer
            ]}
    except grpc.RpcError as error:
        results[name] = {"ok": False, "code": error.code().name, "details": error.details()}


P = inference_pb2.PredictionsRequest
call("ping", inference.Ping, empty_pb2.Empty())
call("list_empty", management.ListModels, management_pb2.ListModelsRequest())
call("register", management.RegisterModel, management_pb2.RegisterModelRequest(
    url="fields-1.0.mar", model_name="fields", initial_workers=1, synchronous=True))
call("register_again", management.RegisterModel, management_pb2.RegisterModelRequest(
    url="fields-1.0.mar", model_name="fields", initial_workers=1, synchronous=True))
call("register_bad_runtime", management.RegisterModel, management_pb2.RegisterModelRequest(
    url="fields-1.0.mar", model_name="other", runtime="python4"))
call("register_2", management.RegisterModel, management_pb2.RegisterModelRequest(
    url="fields-2.0.mar", model_name="fields", initial_workers=1, synchronous=True))
call("predict", inference.Predictions, P(model_name="fields", input={"data": b"hello", "extra": b"x"}))
call("predict_v2", inference.Predictions, P(model_name="fields", model_version="2.0", input={"data": b"v2"}))
call("predict_missing", inference.Predictions, P(model_name="nope", input={"data": b"x"}))
call("predict_unnamed", inference.Predictions, P(input={"data": b"x"}))
call("stream", inference.StreamPredictions, P(model_name="fields", input={"data": b"streamed"}))
generate = json.dumps({"prompt": "Alice was", "max_tokens": 12}).encode()
call("stream_pieces", inference.StreamPredictions, P(model_name="ts_chars", input={"data": generate}))
call("stream2", inference.StreamPredictions2, iter([
    P(model_name="fields", input={"data": b"one"}, sequence_id="seq-1"),
    P(model_name="nope", input={"data": b"two"}, sequence_id="seq-1"),
    P(model_name="fields", input={"data": b"three"}, sequence_id="seq-1"),
    P(model_name="fields", input={"data": b"four"}),
]))
call("scale", management.ScaleWorker, management_pb2.ScaleWorkerRequest(
    model_name="fields", min_worker=2, synchronous=True))
call("describe", management.DescribeModel, management_pb2.DescribeModelRequest(model_name="fields"))
call("describe_missing", management.DescribeModel, management_pb2.DescribeModelRequest(model_name="nope"))
call("set_default", management.SetDefault, management_pb2.SetDefaultRequest(model_name="fields", model_version="2.0"))
call("predict_default", inference.Predictions, P(model_name="fields", input={"data": b"default"}))
call("list", management.ListModels, management_pb2.ListModelsRequest(limit=1))
call("unregister_1", management.UnregisterModel, management_pb2.UnregisterModelRequest(
    model_name="fields", model_version="1.0"))
call("unregister_missing", management.UnregisterModel, management_pb2.UnregisterModelRequest(model_name="nope"))
if image != "-":
    with open(image, "rb") as photo:
        call("squeezenet", inference.Predictions, P(model_name="squeezenet", input={"data": photo.read()}))
print(json.dumps(results))
"""


def _fields_archive(store: Path, work: Path, version: str) -> None:
    handler = work / "fields_handler.py"
    handler.write_text(FIELDS_HANDLER)
    spec = ArchiveSpec(model_name="fields", version=version, handler=str(handler))
    write_archive(spec, work, force=True).replace(store / f"fields-{version}.mar")


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (PROTOS / "inference.proto").exists():
        pytest.skip(f"needs {PROTOS} (TorchServe's protos; scripts/test.sh fetches them), which is missing")
    out = tmp_path_factory.mktemp("ts-stubs")
    protos = ["inference.proto", "management.proto", "google/rpc/status.proto"]
    generate = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"--python_out={out}"]
    subprocess.run([*generate, f"--grpc_python_out={out}", *protos], check=True, capture_output=True)
    (out / "client.py").write_text(CLIENT)
    return out


@pytest.fixture(scope="module", params=["dms", "grpcio"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DmsServer, str]]:
    work = tmp_path_factory.mktemp(f"ts-grpc-{request.param}")
    store = work / "model_store"
    store.mkdir()
    _fields_archive(store, work, "1.0")
    _fields_archive(store, work, "2.0")
    models = ""
    char_model_store(work, {"ts_chars": ("ts_streaming_handler.py", "")})
    (work / "store" / "ts_chars.mar").replace(store / "ts_chars.mar")
    model = SHARED / SQUEEZENET
    if model.exists():
        make_squeezenet_archive(model, store, SQUEEZENET_CONFIG)
        models = "squeezenet.mar,"
    [management_port] = free_ports(1)
    config = work / "config.properties"
    config.write_text(
        f"model_store={store}\nload_models={models}ts_chars.mar\ndisable_token_authorization=true\n"
        f"grpc_management_port={management_port}\n"
    )
    args = ["--ts-config", str(config), "--no-default-model", "--grpc-server", request.param]
    with running_server(work, args) as server:
        yield server, f"127.0.0.1:{management_port}"


def _run_client(stubs: Path, server: DmsServer, management: str, image: Path | None) -> dict[str, Any]:
    command = [sys.executable, str(stubs / "client.py"), server.grpc_address, management, str(image or "-")]
    done = subprocess.run(command, cwd=stubs, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    results: dict[str, Any] = json.loads(done.stdout)
    return results


def test_torchserves_grpc_client_against_dms(stubs: Path, served: tuple[DmsServer, str]):
    server, management = served
    image = SHARED / "images" / "kitten.jpg"
    with_squeezenet = (SHARED / SQUEEZENET).exists() and image.exists()
    r = _run_client(stubs, server, management, image if with_squeezenet else None)

    assert r["ping"] == {"ok": True, "health": json.dumps({"status": "Healthy"}, indent=2)}
    listed = json.loads(r["list_empty"]["msg"])["models"]
    assert [m["modelName"] for m in listed] == (["squeezenet", "ts_chars"] if with_squeezenet else ["ts_chars"])
    assert r["register"] == {"ok": True, "msg": 'Model "fields" Version: 1.0 registered with 1 initial workers'}
    assert r["register_again"]["code"] == "ALREADY_EXISTS"
    assert r["register_bad_runtime"]["code"] == "INVALID_ARGUMENT" and "python4" in r["register_bad_runtime"]["details"]
    assert r["register_2"]["ok"], r["register_2"]

    # Each entry of the input map is a field of the request, as the handler receives it.
    assert json.loads(r["predict"]["prediction"]) == {"data": "hello", "extra": "x"}
    assert json.loads(r["predict_v2"]["prediction"]) == {"data": "v2"}
    assert r["predict_missing"]["code"] == "NOT_FOUND" and "nope" in r["predict_missing"]["details"]
    assert r["predict_unnamed"]["code"] == "INVALID_ARGUMENT" and "model_name" in r["predict_unnamed"]["details"]
    [streamed] = r["stream"]["answers"]
    assert json.loads(streamed["prediction"]) == {"data": "streamed"}

    # A TorchServe streaming handler (send_intermediate_predict_response): one message per piece, as it was sent.
    sys.path.insert(0, str(FIXTURES))
    from char_model import CharModel, train

    pieces = [answer["prediction"] for answer in r["stream_pieces"]["answers"]]
    assert pieces == list("".join(CharModel(train()).generate("Alice was", 12)))

    # StreamPredictions2: each request answered in turn, with its sequence id; a failure is told in its answer.
    one, two, three, four = r["stream2"]["answers"]
    assert (json.loads(one["prediction"]), one["sequence_id"], one["status"]) == ({"data": "one"}, "seq-1", None)
    assert two["sequence_id"] == "seq-1" and two["status"][0] == 5 and "nope" in two["status"][1]  # NOT_FOUND
    assert json.loads(three["prediction"]) == {"data": "three"}
    assert four["status"][0] == 3 and "sequence_id" in four["status"][1]  # INVALID_ARGUMENT

    assert r["scale"] == {"ok": True, "msg": "Workers scaled to 2 for model: fields"}
    [described] = json.loads(r["describe"]["msg"])
    assert described["modelName"] == "fields" and described["modelVersion"] == "1.0"
    assert described["minWorkers"] == 2 and len(described["workers"]) == 2
    assert r["describe_missing"]["code"] == "NOT_FOUND"
    assert r["set_default"]["msg"] == 'Default version successfully updated for model "fields" to "2.0"'
    assert json.loads(r["predict_default"]["prediction"]) == {"data": "default"}
    page = json.loads(r["list"]["msg"])
    assert [m["modelName"] for m in page["models"]] == ["fields"]
    assert page.get("nextPageToken") == "1"
    assert r["unregister_1"] == {"ok": True, "msg": 'Model "fields" version 1.0 unregistered'}
    assert r["unregister_missing"]["code"] == "NOT_FOUND"
    assert [m["modelVersion"] for m in server.describe("fields")] == ["2.0"]

    if with_squeezenet:  # the TorchServe docs' example: a photo as the "data" field
        top5 = json.loads(r["squeezenet"]["prediction"])
        assert list(top5) == list(KITTEN_TOP5)
        for label, probability in KITTEN_TOP5.items():
            assert top5[label] == pytest.approx(probability, abs=0.01)


def test_the_open_inference_protocol_shares_the_port(served: tuple[DmsServer, str]):
    import tritonclient.grpc as triton

    server, _ = served
    client = triton.InferenceServerClient(server.grpc_address)
    try:
        assert client.is_server_live() and client.is_server_ready()
    finally:
        client.close()
