"""gRPC on uvicorn's HTTP/2 (``--grpc-server uvicorn``, the default) as long-lived clients use it.

The protocol's own behaviour (every method, datatypes, errors, streaming, auth) is tested for both gRPC
servers in ``test_open_inference_protocol.py``; this module covers what is particular to this one.
"""

from __future__ import annotations

import concurrent.futures

import grpc
import httpx
import numpy as np
import pytest

from dms.grpc.connection import STREAMS_PER_CONNECTION
from tests.support import DmsServer

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is a test dependency")
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.e2e.test_tensor_handler import BIAS, WEIGHTS


@pytest.fixture
def server(oip_server: DmsServer) -> DmsServer:
    return oip_server


def linear_request(row: np.ndarray) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="linear")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 16])
    request.raw_input_contents.append(row.astype(np.float32).tobytes())
    return request


def test_one_channel_outlives_the_per_connection_stream_budget_without_a_failed_call(server: DmsServer):
    """Past the budget the server moves the client to a new connection gracefully: no call fails."""
    calls = STREAMS_PER_CONNECTION + 400
    rows = np.random.default_rng(3).random((64, 16), dtype=np.float32)
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: (i, stub.ModelInfer(linear_request(rows[i % 64]))), range(calls)))
    assert len(answers) == calls
    for i, answer in answers:
        got = np.frombuffer(answer.raw_output_contents[0], dtype=np.float32)
        np.testing.assert_allclose(got, rows[i % 64] @ WEIGHTS + BIAS, rtol=1e-5)


def test_http1_and_unknown_methods_on_the_grpc_port_are_refused_and_it_keeps_serving(server: DmsServer):
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"http://{server.grpc_address}/inference.GRPCInferenceService/ServerLive", timeout=10)
    with grpc.insecure_channel(server.grpc_address) as channel:
        unknown = channel.unary_unary("/inference.GRPCInferenceService/NoSuchMethod")
        with pytest.raises(grpc.RpcError) as refused:
            unknown(b"", timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
