"""The body-rate floor (``min_request_body_rate_bytes_s``): a client that keeps a request alive with a byte
now and then, never pausing long enough for ``request_read_timeout_s``, gets 408 once the grace has passed
and its connection is closed, on the inference and management ports alike (on the gRPC port its call ends
with DEADLINE_EXCEEDED and the connection serves on); a body that keeps above the
floor is served however long it takes; everyone else is served meanwhile."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import grpc
import numpy as np
import pytest

from tests.e2e.test_slow_clients import ROW, assert_408, assert_serving, connect, read_trailers
from tests.e2e.test_tensor_handler import BIAS, WEIGHTS, write_linear_archive
from tests.support import DmsServer, running_server

FLOOR_BYTES_S = 1000
GRACE_S = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DmsServer]:
    work: Path = tmp_path_factory.mktemp("rate")
    store = work / "store"
    write_linear_archive(work, store, "initial_workers: 1\nbatch_size: 4\n")
    env = {
        "DMS_REQUEST_READ_TIMEOUT_S": "30",  # pauses alone would hold these requests for minutes
        "DMS_MIN_REQUEST_BODY_RATE_BYTES_S": str(FLOOR_BYTES_S),
        "DMS_REQUEST_BODY_RATE_GRACE_S": str(GRACE_S),
    }
    with running_server(work, ["--model-store", str(store), "--models", "linear=linear.mar"], env) as running:
        yield running


def request_head(path: str, length: int) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    return head.encode()


def trickle(sock: socket.socket, seconds: float) -> bytes:
    """Send a space every 0.1 s (10 bytes/s) until the server closes the connection; what it sent."""
    sock.settimeout(0.1)
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            try:
                sock.sendall(b" ")
            except OSError:  # closed by the server between two reads
                break
            continue
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the connection was still open after {seconds} s; received {received!r}")


def test_requests_trickling_under_the_floor_get_408_and_others_are_served(server: DmsServer):
    """A body on the inference port's own path, a head on the management port's (uvicorn's protocol)."""
    body_trickle = connect(server.inference_url)
    body_trickle.sendall(request_head("/predictions/linear", 5000) + b"[")
    management_trickle = connect(server.management_url)
    management_trickle.sendall(b"GET /models HTTP/1.1\r\nHost: x\r\nX-Pad: ")  # a head that never ends
    started = time.monotonic()
    try:
        assert_serving(server)  # meanwhile everyone else is served
        for sock in (body_trickle, management_trickle):
            assert_408(trickle(sock, GRACE_S + 10), f"min_request_body_rate_bytes_s ({FLOOR_BYTES_S:g} bytes/s")
        assert time.monotonic() - started < GRACE_S + 8  # not the 30 s a pause would take
    finally:
        body_trickle.close()
        management_trickle.close()
    assert_serving(server)


def test_a_body_above_the_floor_is_served_however_long_it_takes(server: DmsServer):
    body = json.dumps(ROW.tolist()).encode().ljust(8000)  # JSON may end in spaces: 8,000 bytes in all
    with connect(server.inference_url) as sock:
        sock.sendall(request_head("/predictions/linear", len(body)))
        for offset in range(0, len(body), 1000):  # 1,000 bytes every 0.25 s: 4,000 bytes/s for 2 s
            time.sleep(0.25)
            sock.sendall(body[offset : offset + 1000])
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"]"):
            chunk = sock.recv(65536)
            assert chunk, f"closed before the answer: {received!r}"
            received += chunk
    head, _, answer = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), received
    np.testing.assert_allclose(
        np.asarray(json.loads(answer), dtype=np.float32).ravel(), ROW @ WEIGHTS + BIAS, rtol=1e-5
    )


def test_grpc_calls_trickling_under_the_floor_end_and_their_connection_serves_on(server: DmsServer):
    """On the gRPC port (uvicorn's HTTP/2), on the lean ``ModelInfer`` path and the ASGI one for other methods:
    DEADLINE_EXCEEDED naming the floor, and the connection takes the next call."""
    zttp = pytest.importorskip("zttp")
    host, port = server.grpc_address.rsplit(":", 1)
    client = zttp.Connection(zttp.CLIENT, protocol=zttp.HTTP2)
    client.initiate_connection()
    headers = [(b"content-type", b"application/grpc"), (b"te", b"trailers")]
    streams = []
    for method in (b"ModelInfer", b"ModelMetadata"):
        stream = client.send_request(b"POST", b"/inference.GRPCInferenceService/" + method, b"HTTP/2", headers)
        stream.send_data(b"\x00\x00\x00\x07\xd0")  # a message declared 2,000 bytes long
        streams.append(stream)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(client.data_to_send())
        started = time.monotonic()

        def send_a_byte_each() -> None:  # every 0.1 s: 10 bytes/s, each pause far inside the 30 s read timeout
            assert time.monotonic() - started < GRACE_S + 10, "calls still open after the grace and 10 s more"
            for stream in streams:
                with contextlib.suppress(zttp.LocalProtocolError):  # that call has ended
                    stream.send_data(b"\x0a")
            sock.sendall(client.data_to_send())

        sock.settimeout(0.1)
        trailers = read_trailers(sock, client, {stream.stream_id for stream in streams}, send_a_byte_each)
        for ended in trailers.values():
            assert ended[b"grpc-status"] == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0]).encode()
            details = unquote(ended[b"grpc-message"].decode())
            assert f"min_request_body_rate_bytes_s ({FLOOR_BYTES_S:g} bytes/s" in details
        assert time.monotonic() - started < GRACE_S + 8
        sock.settimeout(10)
        live = client.send_request(b"POST", b"/inference.GRPCInferenceService/ServerLive", b"HTTP/2", headers)
        live.send_data(b"\x00\x00\x00\x00\x00")
        live.end_message()
        sock.sendall(client.data_to_send())
        assert read_trailers(sock, client, {live.stream_id})[live.stream_id][b"grpc-status"] == b"0"
    assert_serving(server)
