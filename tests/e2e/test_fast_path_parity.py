"""The forwarding routes answer the same through the lean paths (default) and through the ASGI routes.

One server runs with the fast path, one without, both serving gRPC on uvicorn's HTTP/2; every request
below goes to both, and the status, content type, body and request id must match (the request id where
the client sent one). For ``ModelInfer`` calls, the gRPC status, its details and the answer must match.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from dms._generated import inference_pb2 as pb
from dms.server import default_model_archive
from tests.e2e.test_tensor_handler import write_linear_archive
from tests.support import running_server

SAMPLE = (default_model_archive().parent / "samples" / "digit_7.png").read_bytes()
ROW = [float(i) for i in range(16)]
OIP = json.dumps({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": ROW}]}).encode()
JSON = {"Content-Type": "application/json"}

REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/predictions/digits", {"content": SAMPLE, "headers": {"X-Request-ID": "parity-1"}}),
    ("PUT", "/predictions/digits/1.0", {"content": SAMPLE, "params": {"topk": "1"}}),
    ("POST", "/predictions/nope", {"content": SAMPLE}),
    ("POST", "/predictions/digits/9.9", {"content": SAMPLE}),
    ("POST", "/predictions/digits", {"content": b"garbage"}),
    ("POST", "/predictions/digits", {"content": b"x" * 6000}),
    ("GET", "/predictions/digits", {}),
    ("POST", "/predictions/linear", {"content": json.dumps([ROW]).encode(), "headers": JSON}),
    ("POST", "/v2/models/linear/infer", {"content": OIP, "headers": {**JSON, "X-Request-ID": "parity-2"}}),
    ("POST", "/v2/models/linear/versions/1.0/infer", {"content": OIP, "headers": JSON}),
    (
        "POST",
        "/v2/models/linear/infer",
        {"content": gzip.compress(OIP), "headers": {**JSON, "Content-Encoding": "gzip"}},
    ),
    ("POST", "/v2/models/linear/infer", {"content": OIP.replace(b"FP32", b"FP99"), "headers": JSON}),
    ("POST", "/v2/models/linear/infer", {"content": b"{not json", "headers": JSON}),
    ("POST", "/v2/models/nope/infer", {"content": OIP, "headers": JSON}),
    ("POST", "/v2/models/linear/versions/2.0/infer", {"content": OIP, "headers": JSON}),
    ("POST", "/v2/models/linear/infer", {"content": OIP + b" " * 6000, "headers": JSON}),
    ("GET", "/v2/models/linear/infer", {}),
    ("POST", "/v1/models/linear:predict", {"content": json.dumps({"instances": [ROW]}).encode(), "headers": JSON}),
    ("POST", "/v1/models/nope:predict", {"content": b"{}", "headers": JSON}),
]


def _answer(response: httpx.Response, sent: dict[str, Any]) -> tuple[object, ...]:
    sent_id = sent.get("headers", {}).get("X-Request-ID")
    assert response.headers.get("x-request-id") or response.status_code == 405
    return (
        response.status_code,
        response.headers.get("content-type"),
        response.content,
        response.headers.get("x-request-id") if sent_id else None,
    )


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("parity")
    (work / "fast").mkdir()
    (work / "slow").mkdir()
    store = work / "store"
    write_linear_archive(work, store, "initial_workers: 1\nbatch_size: 4\n")
    digits = f"digits={default_model_archive()}"
    args = ["--default-workers-per-model", "1", "--model-store", str(store), "--models", "linear=linear.mar", digits]
    args += ["--grpc-server", "uvicorn"]
    env = {"DMS_MAX_REQUEST_SIZE_BYTES": "5000", "DMS_GRPC_MAX_MESSAGE_BYTES": "4096"}
    with (
        running_server(work / "fast", args, {**env, "DMS_INFERENCE_FAST_PATH": "true"}) as fast,
        running_server(work / "slow", args, {**env, "DMS_INFERENCE_FAST_PATH": "false"}) as slow,
    ):
        yield fast, slow


@pytest.mark.parametrize(("method", "path", "options"), REQUESTS, ids=[f"{m} {p}" for m, p, _ in REQUESTS])
def test_same_answer_either_way(servers, method: str, path: str, options: dict[str, Any]):
    fast, slow = servers
    answers = [
        _answer(server.http.request(method, f"{server.inference_url}{path}", **options), options)
        for server in (fast, slow)
    ]
    assert answers[0] == answers[1]
    status = answers[0][0]
    assert isinstance(status, int)
    if method != "GET" and "nope" not in path and "9.9" not in path and "2.0" not in path:
        assert status in (200, 400, 413), answers[0]


def _infer_request(model: str = "linear", version: str = "", datatype: str = "FP32", call_id: str = "call") -> bytes:
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype=datatype, shape=[1, 16])
    raw = np.asarray([ROW], dtype=np.float32).tobytes()
    request = pb.ModelInferRequest(
        model_name=model, model_version=version, id=call_id, inputs=[tensor], raw_input_contents=[raw]
    )
    return request.SerializeToString()


CALLS: list[tuple[str, bytes, dict[str, Any]]] = [
    ("answered", _infer_request(), {}),
    ("version and request id", _infer_request(version="1.0"), {"metadata": [("x-request-id", "parity-g")]}),
    ("gzip", _infer_request(), {"compression": grpc.Compression.Gzip}),
    ("unknown model", _infer_request(model="nope"), {}),
    ("unknown version", _infer_request(version="2.0"), {}),
    ("bad datatype", _infer_request(datatype="FP99"), {}),
    ("not protobuf", b"\xff\xff\xff", {}),
    ("over the message limit", _infer_request(call_id="x" * 5000), {}),
]


@pytest.mark.parametrize(("request_bytes", "options"), [c[1:] for c in CALLS], ids=[c[0] for c in CALLS])
def test_same_grpc_answer_either_way(servers, request_bytes: bytes, options: dict[str, Any]):
    answers = []
    for server in servers:
        with grpc.insecure_channel(server.grpc_address) as channel:
            infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            try:
                answers.append((grpc.StatusCode.OK, "", infer(request_bytes, timeout=30, **options)))
            except grpc.RpcError as exc:
                answers.append((exc.code(), exc.details(), b""))
    assert answers[0] == answers[1]
    code, _, answer = answers[0]
    if code == grpc.StatusCode.OK:
        response = pb.ModelInferResponse.FromString(answer)
        assert response.model_name == "linear" and response.raw_output_contents
