"""``ModelInfer`` answers the same through the lean gRPC path (default) and through the ASGI one (``GrpcApp``).

One server runs with the fast path, one without, both serving gRPC on uvicorn's HTTP/2; every call below
goes to both, and the gRPC status, its details and the answer must match. (HTTP has one path since
``dms.rest.http1_server``; ``tests/unit/rest/test_asgi_adapter.py`` checks that it answers the same as the
inference API mounted as an ASGI app.)
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest

from dms._generated import inference_pb2 as pb
from dms.server import default_model_archive
from tests.e2e.test_tensor_handler import write_linear_archive
from tests.support import running_server

ROW = [float(i) for i in range(16)]


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
