"""The Open Inference Protocol against a real server, driven by the real tritonclient (HTTP and gRPC)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.e2e.test_tensor_handler import BIAS, WEIGHTS
from tests.support import DmsServer, shared_path

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is a test dependency")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is a test dependency")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture
def server(request: pytest.FixtureRequest, oip_server: DmsServer) -> DmsServer:
    """The package's shared protocol server (tests/e2e/conftest.py), whose gRPC runs on uvicorn's HTTP/2 (the
    default); for "grpc-grpcio", its twin serving gRPC on grpcio instead."""
    params = getattr(request.node, "callspec", None)
    if params is not None and params.params.get("transport") == "grpc-grpcio":
        twin: DmsServer = request.getfixturevalue("oip_server_grpcio")
        return twin
    return oip_server


def client(server: DmsServer, transport: str):
    if transport == "http":
        return httpclient.InferenceServerClient(server.inference_url.removeprefix("http://"))
    return grpcclient.InferenceServerClient(server.grpc_address)


def module(transport: str):
    return httpclient if transport == "http" else grpcclient


TRANSPORTS = ["http", "grpc", "grpc-grpcio"]
GRPC_SERVERS = ["grpc", "grpc-grpcio"]


def as_json(c, transport: str, method: str, *args, **kwargs):
    """Call a client method and get JSON-like dicts from either client."""
    if transport != "http":
        kwargs["as_json"] = True
    return getattr(c, method)(*args, **kwargs)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_health_and_metadata(server: DmsServer, transport: str):
    c = client(server, transport)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("linear") and not c.is_model_ready("no-such-model")
    server_meta = c.get_server_metadata()
    extensions = server_meta["extensions"] if transport == "http" else list(server_meta.extensions)
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(extensions)
    meta = as_json(c, transport, "get_model_metadata", "linear")
    assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1.0"]
    assert [(i["name"], i["datatype"], [int(d) for d in i["shape"]]) for i in meta["inputs"]] == [
        ("x", "FP32", [-1, 16])
    ]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("y", "FP32")]


DTYPE_CASES = [
    ("FP32", np.array([[0.5, -1.25, 3.0]], dtype=np.float32)),
    ("FP16", np.array([[0.5, -1.25, 3.0]], dtype=np.float16)),
    ("INT64", np.array([[1, -2, 2**40]], dtype=np.int64)),
    ("BOOL", np.array([[True, False, True]])),
    ("BYTES", np.array([[b"abc", b"", b"hello world"]], dtype=object)),
]


def expected_echo(array: np.ndarray) -> np.ndarray:
    if array.dtype == object:
        return np.array([bytes(reversed(v)) for v in array.ravel()], dtype=object).reshape(array.shape)
    if array.dtype == np.bool_:
        return ~array
    return array + np.ones(1, dtype=array.dtype)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize(("datatype", "array"), DTYPE_CASES, ids=[c[0] for c in DTYPE_CASES])
def test_infer_every_tested_datatype(server: DmsServer, transport: str, binary: bool, datatype: str, array):
    """HTTP: binary data extension on and off. gRPC: raw_input_contents (tritonclient) and typed contents."""
    if transport != "http" and not binary:
        got, request_id = typed_grpc_infer(server, datatype, array)
    else:
        lib = module(transport)
        tensor = lib.InferInput("x", list(array.shape), datatype)
        if transport == "http":
            tensor.set_data_from_numpy(array, binary_data=binary)
            outputs = [lib.InferRequestedOutput("out_x", binary_data=binary)]
        else:
            tensor.set_data_from_numpy(array)
            outputs = [lib.InferRequestedOutput("out_x")]
        result = client(server, transport).infer("echo", [tensor], outputs=outputs, request_id="req-7")
        got = result.as_numpy("out_x")
        response = result.get_response(as_json=True) if transport != "http" else result.get_response()
        request_id = response["id"]
    want = expected_echo(array)
    assert got.shape == want.shape and request_id == "req-7"
    if datatype == "BYTES":  # JSON carries BYTES as strings, binary as bytes
        assert [v if isinstance(v, bytes) else v.encode() for v in got.ravel()] == list(want.ravel())
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


TYPED_FIELDS = {"FP32": "fp32_contents", "INT64": "int64_contents", "BOOL": "bool_contents", "BYTES": "bytes_contents"}


def typed_grpc_infer(server: DmsServer, datatype: str, array: np.ndarray) -> tuple[np.ndarray, str]:
    """Send typed ``contents`` (not raw bytes) with tritonclient's generated stub; decode the raw answer."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    from tritonclient.utils import deserialize_bytes_tensor, triton_to_np_dtype

    request = service_pb2.ModelInferRequest(model_name="echo", id="req-7")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=list(array.shape))
    if datatype in TYPED_FIELDS:
        getattr(tensor.contents, TYPED_FIELDS[datatype]).extend(array.ravel().tolist())
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        if datatype not in TYPED_FIELDS:  # FP16 has no typed field in the protocol
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(request)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "raw_input_contents" in refused.value.details()
            return expected_echo(array), "req-7"
        response = stub.ModelInfer(request)
    out = response.outputs[0]
    raw = response.raw_output_contents[0]
    if out.datatype == "BYTES":
        values = deserialize_bytes_tensor(raw)
    else:
        values = np.frombuffer(raw, dtype=triton_to_np_dtype(out.datatype))
    return values.reshape(list(out.shape)), response.id


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_arbitrary_bytes_survive_the_binary_form(server: DmsServer, transport: str):
    lib = module(transport)
    values = np.array([bytes(range(256)), "é".encode(), b"\x00\xff"], dtype=object)
    tensor = lib.InferInput("x", [3], "BYTES")
    tensor.set_data_from_numpy(values)
    result = client(server, transport).infer("echo", [tensor])
    assert list(result.as_numpy("out_x")) == [bytes(reversed(v)) for v in values]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bf16_travels_in_binary_form_and_reaches_the_handler_as_float32(server: DmsServer, transport: str):
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="tritonclient's BF16 support needs ml_dtypes")
    lib = module(transport)
    values = np.array([[1.0, -2.5, 3.140625]], dtype=ml_dtypes.bfloat16)
    tensor = lib.InferInput("x", [1, 3], "BF16")
    tensor.set_data_from_numpy(values)
    got = client(server, transport).infer("echo", [tensor]).as_numpy("out_x")
    np.testing.assert_array_equal(got, np.array([[2.0, -1.5, 4.140625]], dtype=np.float32))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_onnx_model_batches_concurrent_requests(server: DmsServer, transport: str):
    lib = module(transport)
    c = client(server, transport)
    rows = np.random.default_rng(3).random((3, 16), dtype=np.float32)
    tensor = lib.InferInput("x", [3, 16], "FP32")
    tensor.set_data_from_numpy(rows)
    np.testing.assert_allclose(c.infer("linear", [tensor]).as_numpy("y"), rows @ WEIGHTS + BIAS, rtol=1e-5)


def kitten_tensor() -> np.ndarray:
    """The model README's recipe: RGB→BGR, short side 256 (bilinear), centre crop 224, BGR mean off."""
    image = Image.open(shared_path("images/kitten.jpg")).convert("RGB")
    width, height = image.size
    scale = 256 / min(width, height)
    image = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    array = np.asarray(image, dtype=np.float32)[:, :, ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))[None]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_squeezenet_kitten_matches_the_predictions_path(server: DmsServer, transport: str):
    shared_path("models/squeezenet/squeezenet_v1.1.onnx")
    labels = [
        line.split(" ", 1)[1].split(",")[0]
        for line in shared_path("models/squeezenet/synset.txt").read_text().splitlines()
    ]
    lib = module(transport)
    tensor = lib.InferInput("data_0", [1, 3, 224, 224], "FP32")
    tensor.set_data_from_numpy(kitten_tensor())
    probabilities = client(server, transport).infer("squeezenet", [tensor]).as_numpy("softmaxout_1").reshape(-1)
    top5 = np.argsort(-probabilities)[:5]
    via_predictions = server.predict("squeezenet", shared_path("images/kitten.jpg").read_bytes()).json()
    assert [labels[i] for i in top5] == list(via_predictions)
    for index in top5:
        assert probabilities[index] == pytest.approx(via_predictions[labels[index]], abs=1e-4)
    assert labels[top5[0]] == "Egyptian cat"


@pytest.mark.parametrize("transport", GRPC_SERVERS)
def test_grpc_stream_infer_answers_in_order(server: DmsServer, transport: str):
    answers: list = []
    c = grpcclient.InferenceServerClient(server.grpc_address)
    c.start_stream(callback=lambda result, error: answers.append((result, error)))
    try:
        for value in range(5):
            tensor = grpcclient.InferInput("x", [1, 3], "FP32")
            tensor.set_data_from_numpy(np.full((1, 3), value, dtype=np.float32))
            c.async_stream_infer("echo", [tensor], request_id=str(value))
        bad = grpcclient.InferInput("x", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
        c.async_stream_infer("missing-model", [bad])
    finally:
        c.stop_stream()
    assert len(answers) == 6
    good = [result for result, error in answers[:5]]
    assert [r.get_response().id for r in good] == ["0", "1", "2", "3", "4"]
    assert [float(r.as_numpy("out_x")[0, 0]) for r in good] == [1.0, 2.0, 3.0, 4.0, 5.0]
    # A whole answer is its request's final response, as Triton flags it for its streaming clients.
    assert all(r.get_response().parameters["triton_final_response"].bool_param for r in good)
    assert answers[5][0] is None and "missing-model" in str(answers[5][1])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_errors_come_back_with_the_right_status(server: DmsServer, transport: str):
    lib = module(transport)
    c = client(server, transport)
    wrong_shape = lib.InferInput("x", [1, 3], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException) as bad:
        c.infer("linear", [wrong_shape])
    assert "expects [-1, 16]" in bad.value.message()
    assert bad.value.status() == ("400" if transport == "http" else "StatusCode.INVALID_ARGUMENT")
    with pytest.raises(InferenceServerException) as missing:
        c.infer("no-such-model", [wrong_shape])
    assert missing.value.status() == ("404" if transport == "http" else "StatusCode.NOT_FOUND")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_statistics_count_what_ran(server: DmsServer, transport: str):
    lib = module(transport)
    c = client(server, transport)
    before = as_json(c, transport, "get_inference_statistics", "linear")["model_stats"][0]
    tensor = lib.InferInput("x", [1, 16], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
    for _ in range(3):
        c.infer("linear", [tensor])
    after = as_json(c, transport, "get_inference_statistics", "linear")["model_stats"][0]
    success = int(after["inference_stats"]["success"]["count"]) - int(
        before["inference_stats"].get("success", {}).get("count", 0)
    )
    assert success == 3
    assert int(after["execution_count"]) >= int(before.get("execution_count", 0)) + 1
    assert int(after["inference_stats"]["compute_infer"]["ns"]) > 0


def test_http_compression_both_ways(server: DmsServer):
    c = httpclient.InferenceServerClient(server.inference_url.removeprefix("http://"))
    rows = np.random.default_rng(5).random((64, 16), dtype=np.float32)
    tensor = httpclient.InferInput("x", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=False)
    for algorithm in ("gzip", "deflate"):
        result = c.infer(
            "linear", [tensor], request_compression_algorithm=algorithm, response_compression_algorithm=algorithm
        )
        np.testing.assert_allclose(result.as_numpy("y"), rows @ WEIGHTS + BIAS, rtol=1e-5)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_repository_extension_needs_the_management_key(server: DmsServer, transport: str):
    key = {"authorization" if transport != "http" else "Authorization": f"Bearer {server.key()}"}
    if transport == "http":
        c = httpclient.InferenceServerClient(server.management_url.removeprefix("http://"))
    else:
        c = grpcclient.InferenceServerClient(server.grpc_address)
    with pytest.raises(InferenceServerException):
        c.get_model_repository_index()
    index = as_json(c, transport, "get_model_repository_index", headers=key)
    models = index if transport == "http" else index["models"]
    assert {m["name"] for m in models} >= {"echo", "linear"}
    c.unload_model("echo", headers=key)
    assert not client(server, transport).is_model_ready("echo")
    c.load_model("echo", headers=key)
    assert client(server, transport).is_model_ready("echo")
