"""Hostile gRPC clients against a real server (uvicorn's HTTP/2, the default): compression bombs, streams that
never end or carry garbage, more streams or connections than a server should keep, model names made to
grow the metrics, and request ids made to forge log lines. Each attack gets a clear status; the server's
memory, workers and other clients are checked around it (``tests/e2e/hostile.py``).
"""

from __future__ import annotations

import socket
import time
import zlib
from functools import cache

import grpc
import httpx
import pytest

from dms._generated import inference_pb2 as pb
from tests.e2e.h2_client import RawGrpc, grpc_frame
from tests.e2e.hostile import watched
from tests.e2e.test_tensor_handler import write_linear_archive
from tests.support import DmsServer, running_server, wait_for

UNAUTHENTICATED, RESOURCE_EXHAUSTED, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 16, 8, 3, 4
REFUSED_STREAM = 0x7
IDLE_S = 2
MAX_CONNECTIONS = 40
LINEAR_ROW = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("hostile-grpc")
    store = work / "store"
    store.mkdir()
    write_linear_archive(work, store, "initial_workers: 1\nbatch_size: 8\n")
    args = [
        "--model-store",
        str(store),
        "--models",
        "linear=linear.mar",
        "--no-snapshot",
        "--enable-inference-token-auth",
    ]
    env = {"DMS_GRPC_STREAM_IDLE_TIMEOUT_S": str(IDLE_S), "DMS_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
    with running_server(work, args, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def grpcio_server(tmp_path_factory: pytest.TempPathFactory):
    """The same, with gRPC served by grpcio (``--grpc-server grpcio``) rather than uvicorn's HTTP/2."""
    work = tmp_path_factory.mktemp("hostile-grpcio")
    store = work / "store"
    write_linear_archive(work, store, "initial_workers: 1\nbatch_size: 8\n")
    args = ["--model-store", str(store), "--models", "linear=linear.mar", "--no-snapshot"]
    with running_server(work, [*args, "--enable-inference-token-auth", "--grpc-server", "grpcio"]) as running:
        yield running


def key(server: DmsServer) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {server.key('inference')}".encode())]


def bystander(server: DmsServer):
    url = f"{server.inference_url}/v2/models/linear/infer"
    headers = {"Authorization": f"Bearer {server.key('inference')}"}
    return lambda client: client.post(url, json=LINEAR_ROW, headers=headers)


def infer_request(model: str = "linear", request_id: str = "") -> bytes:
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 16]).contents.fp32_contents.extend([0.5] * 16)
    return request.SerializeToString()


@cache
def gzip_bomb(inflated: int = 400 << 20) -> bytes:
    """A gzip stream of ``inflated`` zero bytes (about 400 KB for 400 MB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = [packer.compress(chunk) for _ in range(inflated // len(chunk))]
    return b"".join([*parts, packer.flush()])


# -- hole 4: a compressed message is inflated only for a caller with the key, and only up to the limit -----


@pytest.mark.parametrize(
    ("with_key", "status", "named"),
    [(False, UNAUTHENTICATED, "Authorization"), (True, RESOURCE_EXHAUSTED, "grpc_max_message_bytes (6553500)")],
    ids=["no key: refused before anything is read", "key: inflated only to the limit"],
)
def test_compression_bomb(server: DmsServer, with_key: bool, status: int, named: str):
    bomb = grpc_frame(gzip_bomb(), compressed=True)
    assert len(bomb) < 1 << 20
    metadata = [(b"grpc-encoding", b"gzip"), *(key(server) if with_key else [])]
    with watched(server, bystander(server)):
        for _ in range(4):
            connection = RawGrpc(server)
            try:
                answer = connection.call("ModelInfer", bomb, metadata)
            finally:
                connection.close()
            assert answer.status == status, (answer.headers, answer.trailers)
            assert named in answer.message


def test_grpcio_checks_the_key_before_it_reads_a_compressed_message(grpcio_server: DmsServer):
    bomb = grpc_frame(gzip_bomb(), compressed=True)
    with watched(grpcio_server, bystander(grpcio_server)):
        for _ in range(4):
            connection = RawGrpc(grpcio_server)
            try:
                refused = connection.call("ModelInfer", bomb, [(b"grpc-encoding", b"gzip")])
                keyed = connection.call("ModelInfer", bomb, [(b"grpc-encoding", b"gzip"), *key(grpcio_server)])
            finally:
                connection.close()
            assert refused.status == UNAUTHENTICATED, (refused.headers, refused.trailers)
            assert keyed.status == RESOURCE_EXHAUSTED, (keyed.headers, keyed.trailers)  # inflated up to the limit


def test_a_compressed_call_under_the_limit_is_served(server: DmsServer):
    with grpc.insecure_channel(server.grpc_address, compression=grpc.Compression.Gzip) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        answer = pb.ModelInferResponse.FromString(
            call(infer_request(), metadata=[("authorization", f"Bearer {server.key('inference')}")], timeout=30)
        )
    assert answer.model_name == "linear" and len(answer.raw_output_contents[0]) == 16


# -- hole 2: streams end; connections and streams are bounded ---------------------------------------------


def test_a_stream_message_that_is_not_protobuf_ends_the_stream(server: DmsServer):
    with watched(server, bystander(server)):
        connection = RawGrpc(server)
        try:
            stream = connection.open("ModelStreamInfer", key(server))
            connection.send(stream, grpc_frame(b"\xff\xff\xff\xff not protobuf"))
            answer = connection.wait(stream)
        finally:
            connection.close()
    assert answer.status == INVALID_ARGUMENT, (answer.headers, answer.trailers)
    assert "not a ModelInferRequest" in answer.message


def test_a_stream_that_sends_nothing_ends_after_the_idle_timeout(server: DmsServer):
    connection = RawGrpc(server)
    try:
        opened = time.monotonic()
        stream = connection.open("ModelStreamInfer", key(server))
        connection.send(stream, grpc_frame(infer_request()))
        answer = connection.wait(stream, timeout_s=IDLE_S + 20)
        waited = time.monotonic() - opened
    finally:
        connection.close()
    assert answer.status == DEADLINE_EXCEEDED, (answer.headers, answer.trailers)
    assert "grpc_stream_idle_timeout_s" in answer.message
    assert bytes(answer.data) != b""  # the one request was answered before the stream went idle
    assert IDLE_S <= waited < IDLE_S + 15


def test_dropped_streams_leave_nothing_behind(server: DmsServer):
    """Streams opened (headers only, or with a request) and dropped with their connections: each ends."""
    with watched(server, bystander(server)):
        for _ in range(30):
            connection = RawGrpc(server)
            for index in range(100):
                stream = connection.open("ModelStreamInfer", key(server))
                if index % 2:  # a request each stream must answer (to a model that is not there: the queue stays free)
                    connection.send(stream, grpc_frame(infer_request("not-registered")))
            connection.read(0.05)
            connection.close()
        time.sleep(1)


def test_streams_past_the_cap_on_one_connection_are_refused(server: DmsServer):
    connection = RawGrpc(server)
    try:
        streams = [connection.open("ModelStreamInfer", key(server)) for _ in range(140)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(connection.answers[s].reset is not None for s in streams) < 12:
            connection.read(0.2)
        refused = [s for s in streams if connection.answers[s].reset == REFUSED_STREAM]
    finally:
        connection.close()
    assert len(refused) == 12, f"{len(refused)} of 140 streams refused (the cap is 128)"
    assert refused == streams[128:]


def test_connections_past_max_connections_are_refused_and_counted_back(server: DmsServer):
    held = []
    try:
        for _ in range(MAX_CONNECTIONS):
            held.append(socket.create_connection(server.inference_url.removeprefix("http://").split(":"), timeout=10))
        time.sleep(0.3)
        refused = httpx.get(f"{server.inference_url}/ping", timeout=10)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert "max_connections (40)" in refused.json()["message"]
        connection = RawGrpc(server)
        try:
            connection.read(2)
            assert connection.goaway == 0xB or connection.closed
        finally:
            connection.close()
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: httpx.get(f"{server.inference_url}/ping", timeout=10).status_code == 200, what="a place again")


# -- hole 5: no metric series, and no long error, for names nothing registered ----------------------------


def test_long_and_unknown_model_names_add_no_series(server: DmsServer):
    before = len(httpx.get(f"{server.metrics_url}/metrics").content)
    headers = {"Authorization": f"Bearer {server.key('inference')}"}
    with watched(server, bystander(server)):
        for index in range(100):
            long_name = f"m{index}" + "x" * 10_000  # a 100 KB one is a 431 now: over max_header_bytes
            response = server.http.post(
                f"{server.inference_url}/predictions/{long_name}", content=b"1", headers=headers
            )
            assert response.status_code == 400, response.text[:200]
            assert "at most 128 are allowed" in response.json()["message"]
            response = server.http.post(
                f"{server.inference_url}/predictions/unknown{index}", content=b"1", headers=headers
            )
            assert response.status_code == 404
        with grpc.insecure_channel(server.grpc_address) as channel:
            call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            for index in range(100):
                with pytest.raises(grpc.RpcError) as refused:  # no key: refused before its name is read
                    call(infer_request("n" * 1000 + str(index)), timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.RpcError) as long_name:
                    call(infer_request("n" * 100_000 + str(index)), metadata=key_metadata(server), timeout=10)
                assert long_name.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    metrics = httpx.get(f"{server.metrics_url}/metrics").text
    assert "unknown7" not in metrics and "nnnn" not in metrics and "xxxx" not in metrics
    assert 'model="_unregistered"' in metrics
    assert len(metrics) - before < 20_000


def key_metadata(server: DmsServer) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {server.key('inference')}")]


# -- hole 10: a request id cannot forge a log line -------------------------------------------------------


def test_a_request_id_with_a_newline_is_escaped_in_the_access_log(server: DmsServer):
    forged = "abc\n2026-01-01 00:00:00,000 INFO dms.access: forged v2-grpc linear 1.0 OK 0.01ms batch=1"
    with watched(server, bystander(server)), grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        answer = pb.ModelInferResponse.FromString(call(infer_request(request_id=forged), metadata=key_metadata(server)))
    assert answer.id == forged  # the client gets its id back as it sent it
    wait_for(lambda: any("abc\\n2026" in line for line in server.log_lines), what="the escaped access-log line")
    assert not any(line.startswith("2026-01-01") for line in server.log_lines)
