"""Clients that send without reading what comes back: the server stops reading them, its memory stays
bounded, and it goes on serving everyone else.

Before, a client that pipelined HTTP/1.1 requests without reading the answers, or sent HTTP/2 PING or
SETTINGS frames without reading the acknowledgements, grew the frontend by about as much as it sent
(~400 MiB in a few seconds here), since every read was parsed and answered into memory.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil
import pytest

from tests.e2e.test_tensor_handler import BIAS, WEIGHTS
from tests.support import DmsServer

FLOOD_S = 5.0
GROWTH_LIMIT_MIB = 32
"""What the frontend's memory may grow by while one client floods it (bounded reading: under 6 MiB here;
unbounded, 62 to 385 MiB in the same 5 s)."""


def frontend_rss_mib(server: DmsServer) -> float:
    assert server.proc is not None
    return psutil.Process(server.proc.pid).memory_info().rss / 2**20


def flood(host: str, port: int, opening: bytes, chunk: bytes, seconds: float) -> tuple[socket.socket, int]:
    """Send ``opening``, then ``chunk`` again and again for ``seconds``, reading nothing; the bytes sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that is slow to read, too
    sock.connect((host, port))
    sock.sendall(opening)
    sock.settimeout(0.25)
    sent, pending, deadline = len(opening), memoryview(chunk), time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            count = sock.send(pending)
        except TimeoutError:
            continue  # the server is not reading: the kernel's buffers are full
        except OSError:
            break  # the server closed the connection
        sent += count
        pending = pending[count:] or memoryview(chunk)
    return sock, sent


def assert_bounded_and_serving(server: DmsServer, before_mib: float, sent: int) -> None:
    grown = frontend_rss_mib(server) - before_mib
    assert grown < GROWTH_LIMIT_MIB, f"frontend grew {grown:.0f} MiB while a client sent {sent / 1e6:.1f} MB unread"
    row = np.arange(16, dtype=np.float32)
    answer = server.predict("linear", json.dumps(row.tolist()).encode(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 200
    np.testing.assert_allclose(np.asarray(answer.json(), dtype=np.float32).ravel(), row @ WEIGHTS + BIAS, rtol=1e-5)


@pytest.mark.parametrize("port", ["inference", "metrics"])
def test_pipelined_requests_whose_answers_go_unread_are_read_no_further(oip_server: DmsServer, port: str):
    server = oip_server
    url = urlsplit(server.inference_url if port == "inference" else server.metrics_url)
    assert url.hostname is not None and url.port is not None
    if port == "inference":
        body = json.dumps([[0.5] * 16]).encode()
        head = f"POST /predictions/linear HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        request = head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body
    else:
        request = f"GET /metrics HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode()
    before = frontend_rss_mib(server)
    sock, sent = flood(url.hostname, url.port, request, request * 256, FLOOD_S)
    try:
        assert_bounded_and_serving(server, before, sent)
        # What it had sent is still answered, in order, once it reads.
        sock.setblocking(True)
        sock.settimeout(30)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n"), first[:200]
    finally:
        sock.close()


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame (RFC 9113 section 4.1)."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0)
PINGS = b"".join(frame(0x6, 0, 0, struct.pack(">Q", n)) for n in range(512))
SETTINGS = frame(0x4, 0, 0, struct.pack(">HI", 0x3, 100)) * 512  # SETTINGS_MAX_CONCURRENT_STREAMS = 100


@pytest.mark.parametrize("grpc_server", ["grpcio", "uvicorn"])
@pytest.mark.parametrize("frames", [PINGS, SETTINGS], ids=["ping", "settings"])
def test_http2_frames_whose_acknowledgements_go_unread_are_read_no_further(
    request: pytest.FixtureRequest, grpc_server: str, frames: bytes
):
    server: DmsServer = request.getfixturevalue("oip_server_grpcio" if grpc_server == "grpcio" else "oip_server")
    host, port = server.grpc_address.rsplit(":", 1)
    before = frontend_rss_mib(server)
    sock, sent = flood(host, int(port), PREFACE, frames, FLOOD_S)
    try:
        assert_bounded_and_serving(server, before, sent)
        grpc = pytest.importorskip("grpc")
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
    finally:
        sock.close()
    assert httpx.get(f"{server.inference_url}/ping", timeout=10).status_code == 200
