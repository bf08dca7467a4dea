"""Clients that send a request too slowly, or stop halfway: after ``request_read_timeout_s`` each gets
408 with the JSON error body and its connection is closed, on every HTTP port, while the server goes
on serving others. A slow body that keeps coming is served. On the gRPC port a unary call whose request
stops arriving ends with DEADLINE_EXCEEDED; a stream's requests may pause as long as they like.

Before, such connections stayed open for as long as their clients liked (slowloris): 3,000 of them,
each holding half a request head, stayed open on one server, bounded only by its file limit.
"""

from __future__ import annotations

import json
import queue
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import grpc
import numpy as np
import psutil
import pytest

from tests.e2e.test_tensor_handler import BIAS, WEIGHTS, write_linear_archive
from tests.support import DmsServer, running_server, wait_for

READ_TIMEOUT_S = 1.0
ROW = np.arange(16, dtype=np.float32)
BODY = json.dumps(ROW.tolist()).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DmsServer]:
    work: Path = tmp_path_factory.mktemp("slow")
    store = work / "store"
    write_linear_archive(work, store, "initial_workers: 1\nbatch_size: 4\n")
    env = {"DMS_REQUEST_READ_TIMEOUT_S": str(READ_TIMEOUT_S)}
    with running_server(work, ["--model-store", str(store), "--models", "linear=linear.mar"], env) as running:
        yield running


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def assert_408(received: bytes, names: str = f"request_read_timeout_s ({READ_TIMEOUT_S:g} s)") -> None:
    """A 408 with the JSON error body naming ``names`` (the limit the request overran), and the connection closed."""
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), received[:200]
    assert b"\r\nconnection: close" in head.lower()
    answer = json.loads(body)
    assert answer["code"] == 408 and answer["type"] == "RequestReadTimeoutError"
    assert names in answer["message"]


def assert_serving(server: DmsServer) -> None:
    answer = server.predict("linear", BODY, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200
    np.testing.assert_allclose(np.asarray(answer.json(), dtype=np.float32).ravel(), ROW @ WEIGHTS + BIAS, rtol=1e-5)


def predictions_request(server: DmsServer) -> bytes:
    head = f"POST /predictions/linear HTTP/1.1\r\nHost: {urlsplit(server.inference_url).netloc}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    return head.encode() + BODY


def test_requests_that_stop_arriving_get_408_on_every_port_and_their_connections_close(server: DmsServer):
    assert server.proc is not None
    frontend = psutil.Process(server.proc.pid)
    fds_before = frontend.num_fds()
    request = predictions_request(server)
    stalled = []
    for url in (server.inference_url, server.management_url, server.metrics_url):
        for _ in range(20):  # half a request head each
            sock = connect(url)
            sock.sendall(b"POST /predictions/linear HTTP/1.1\r\nHost: x\r\nContent-Ty")
            stalled.append(sock)
    body_stalled = connect(server.inference_url)
    body_stalled.sendall(request[: -len(BODY) // 2])  # the head and half the body
    stalled.append(body_stalled)
    wait_for(lambda: frontend.num_fds() >= fds_before + len(stalled), what="the server holding every connection")
    started = time.monotonic()
    assert_serving(server)  # meanwhile everyone else is served
    try:
        for sock in stalled:
            assert_408(read_until_closed(sock))
        assert time.monotonic() - started < READ_TIMEOUT_S + 5
    finally:
        for sock in stalled:
            sock.close()
    wait_for(lambda: frontend.num_fds() <= fds_before + 2, what="the stalled connections' descriptors released")
    assert_serving(server)
    metrics = server.http.get(f"{server.metrics_url}/metrics").text
    assert 'code="408"' in metrics  # the body that stopped came to its route: counted as a request


def test_a_slow_body_that_keeps_coming_is_served(server: DmsServer):
    request = predictions_request(server)
    with connect(server.inference_url) as sock:
        head_end = len(request) - len(BODY)
        sock.sendall(request[:head_end])
        pieces = np.array_split(np.frombuffer(BODY, dtype=np.uint8), 5)
        for piece in pieces:  # five pieces half a timeout apart: the body takes 2.5 timeouts in all
            time.sleep(READ_TIMEOUT_S / 2)
            sock.sendall(piece.tobytes())
        received = b""
        while b"\r\n\r\n" not in received or not received.endswith(b"]"):
            chunk = sock.recv(65536)
            assert chunk, f"closed before the answer: {received!r}"
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), received
    values = np.asarray(json.loads(body), dtype=np.float32).ravel()
    np.testing.assert_allclose(values, ROW @ WEIGHTS + BIAS, rtol=1e-5)


def test_grpc_calls_whose_requests_stop_arriving_end_with_deadline_exceeded(server: DmsServer):
    """On the gRPC port (uvicorn's HTTP/2), with the lean ``ModelInfer`` path and the ASGI one for other methods:
    each stalled call ends, while the connection and the server go on serving."""
    zttp = pytest.importorskip("zttp")
    host, port = server.grpc_address.rsplit(":", 1)
    client = zttp.Connection(zttp.CLIENT, protocol=zttp.HTTP2)
    client.initiate_connection()
    headers = [(b"content-type", b"application/grpc"), (b"te", b"trailers")]
    stalled = set()
    for method in (b"ModelInfer", b"ServerMetadata"):
        stream = client.send_request(b"POST", b"/inference.GRPCInferenceService/" + method, b"HTTP/2", headers)
        stream.send_data(b"\x00\x00\x00\x00\x40\x0a")  # a message declared 64 bytes long, and one of them
        stalled.add(stream.stream_id)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(client.data_to_send())
        started = time.monotonic()
        assert_serving(server)  # meanwhile everyone else is served
        trailers = read_trailers(sock, client, stalled)
        elapsed = time.monotonic() - started
        assert READ_TIMEOUT_S * 0.9 <= elapsed < READ_TIMEOUT_S + 5
        for stream_id in stalled:
            assert trailers[stream_id][b"grpc-status"] == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0]).encode()
            assert "request_read_timeout_s (1 s)" in unquote(trailers[stream_id][b"grpc-message"].decode())
        # The same connection takes the next call.
        stream = client.send_request(b"POST", b"/inference.GRPCInferenceService/ServerLive", b"HTTP/2", headers)
        stream.send_data(b"\x00\x00\x00\x00\x00")
        stream.end_message()
        sock.sendall(client.data_to_send())
        assert read_trailers(sock, client, {stream.stream_id})[stream.stream_id][b"grpc-status"] == b"0"


def read_trailers(
    sock: socket.socket, client: Any, streams: set[int], on_quiet: Callable[[], None] | None = None
) -> dict[int, dict[bytes, bytes]]:
    """Read the connection (a zttp client's) until each of ``streams`` has ended; their trailers. With
    ``on_quiet``, a read that times out (the socket's timeout) calls it and reads on."""
    import zttp

    trailers: dict[int, dict[bytes, bytes]] = {}
    while not streams <= trailers.keys():
        try:
            data = sock.recv(65536)
        except TimeoutError:
            if on_quiet is None:
                raise
            on_quiet()
            continue
        assert data, f"the connection closed; answers so far: {trailers}"
        client.receive_data(data)
        for event in iter(client.next_event, zttp.NEED_DATA):
            if isinstance(event, zttp.EndOfMessage):
                trailers[event.stream_id] = dict(event.trailers)
        if reply := client.data_to_send():
            sock.sendall(reply)
    return trailers


def test_a_grpc_stream_may_pause_longer_than_the_read_timeout(server: DmsServer):
    grpcclient = pytest.importorskip("tritonclient.grpc")
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_address)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for pause in (0.0, READ_TIMEOUT_S * 1.5):
            time.sleep(pause)
            tensor = grpcclient.InferInput("x", [1, 16], "FP32")
            tensor.set_data_from_numpy(ROW[None, :])
            client.async_stream_infer("linear", [tensor])
            result, error = answers.get(timeout=30)
            assert error is None, error
            np.testing.assert_allclose(result.as_numpy("y").ravel(), ROW @ WEIGHTS + BIAS, rtol=1e-5)
    finally:
        client.stop_stream()
        client.close()
