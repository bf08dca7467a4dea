"""HTTP/2 floods on the default gRPC port (uvicorn's HTTP/2 over zttp): each is cut off at the connection,
the frontend's memory stays bounded, and the server goes on serving everyone else.

The frames are written by hand, as an attacker would, since no well-behaved client sends them. The floods
whose acknowledgements go unread (PING, SETTINGS) are in ``test_unread_answers.py``, for both gRPC servers.
grpcio, the other server, reads these three to the end without closing the connection (64 MB of
CONTINUATION frames, 20,000 reset streams, a 1 MB header: +60 MiB of frontend memory here).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from tests.e2e.test_unread_answers import PREFACE, assert_bounded_and_serving, frame, frontend_rss_mib
from tests.support import DmsServer

grpc = pytest.importorskip("grpc", reason="grpcio is a dependency")

HEADERS, RST_STREAM, GOAWAY, CONTINUATION = 0x1, 0x3, 0x7, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4
NO_ERROR, CANCEL, ENHANCE_YOUR_CALM = 0x0, 0x8, 0xB
FLOOD_BYTES = 64 * 1024 * 1024
"""What each flood would send if nothing stopped it (it is cut off after well under a megabyte)."""


def hpack_string(value: bytes) -> bytes:
    """A string literal without Huffman coding (RFC 7541 sections 5.1 and 5.2)."""
    if len(value) < 127:
        return bytes([len(value)]) + value
    rest, out = len(value) - 127, bytearray([127])
    while rest >= 128:
        out.append((rest & 127) | 128)
        rest >>= 7
    return bytes(out) + bytes([rest]) + value


def header(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing and with a literal name (RFC 7541 section 6.2.2)."""
    return b"\x00" + hpack_string(name) + hpack_string(value)


def call_headers(server: DmsServer, *extra: bytes) -> bytes:
    return b"".join(
        [
            header(b":method", b"POST"),
            header(b":scheme", b"http"),
            header(b":path", b"/inference.GRPCInferenceService/ServerLive"),
            header(b":authority", server.grpc_address.encode()),
            header(b"content-type", b"application/grpc"),
            header(b"te", b"trailers"),
            *extra,
        ]
    )


class Connection:
    """A raw connection to the gRPC port whose answers a thread reads (so a GOAWAY is seen even when the
    server resets the connection while the client still sends)."""

    def __init__(self, server: DmsServer) -> None:
        host, port = server.grpc_address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.received = bytearray()
        self.ended = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while data := self.sock.recv(65536):
                self.received += data
        except OSError:
            pass
        self.ended.set()

    def send_all(self, chunks: Iterator[bytes]) -> int:
        """Send until the chunks run out or the server ends the connection; the bytes sent."""
        sent = 0
        try:
            for chunk in chunks:
                self.sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        return sent

    def goaway_code(self) -> int | None:
        """The error code of the first GOAWAY frame the server sent, if any."""
        at = 0
        while at + 9 <= len(self.received):
            length, kind = int.from_bytes(self.received[at : at + 3], "big"), self.received[at + 3]
            if kind == GOAWAY and at + 9 + 8 <= len(self.received):
                return int.from_bytes(self.received[at + 13 : at + 17], "big")
            at += 9 + length
        return None

    def close(self) -> None:
        self.sock.close()
        self._reader.join(10)


@pytest.fixture
def server(oip_server: DmsServer) -> DmsServer:
    return oip_server


def endless_header_block(server: DmsServer) -> Iterator[bytes]:
    """HEADERS without END_HEADERS, then CONTINUATION frames that never end the block."""
    yield PREFACE + frame(HEADERS, 0, 1, call_headers(server))
    pad = frame(CONTINUATION, 0, 1, header(b"x-pad", b"a" * 16_000))
    for _ in range(FLOOD_BYTES // len(pad)):
        yield pad


def oversized_header(server: DmsServer) -> Iterator[bytes]:
    """A 1 MB header value, in HEADERS and CONTINUATION frames of the default 16 KiB."""
    block = call_headers(server, header(b"x-big", b"b" * (1 << 20)))
    pieces = [block[at : at + 16_384] for at in range(0, len(block), 16_384)]
    yield PREFACE + frame(HEADERS, 0, 1, pieces[0])
    for index, piece in enumerate(pieces[1:], 1):
        yield frame(CONTINUATION, END_HEADERS if index == len(pieces) - 1 else 0, 1, piece)


@pytest.mark.parametrize("flood", [endless_header_block, oversized_header], ids=["endless", "oversized"])
def test_a_header_block_past_the_limit_ends_the_connection_with_enhance_your_calm(server: DmsServer, flood):
    before = frontend_rss_mib(server)
    connection = Connection(server)
    try:
        sent = connection.send_all(flood(server))
        assert connection.ended.wait(10), "the server kept the connection open"
        assert connection.goaway_code() == ENHANCE_YOUR_CALM, bytes(connection.received[:64])
        assert sent < 4 * 1024 * 1024, f"the server read {sent / 1e6:.1f} MB of one header block"
        assert_bounded_and_serving(server, before, sent)
    finally:
        connection.close()


def test_streams_opened_and_reset_at_once_end_the_connection(server: DmsServer):
    """The HTTP/2 rapid reset attack (CVE-2023-44487): each stream costs the server a call it must start
    and cancel, the client nothing. The server caps the streams one connection may open."""
    before = frontend_rss_mib(server)
    connection = Connection(server)
    opened = time.monotonic()

    def resets() -> Iterator[bytes]:
        yield PREFACE
        for stream in range(1, 2 * 50_000, 2):
            yield frame(HEADERS, END_HEADERS, stream, call_headers(server)) + frame(
                RST_STREAM, 0, stream, struct.pack(">I", CANCEL)
            )

    try:
        sent = connection.send_all(resets())
        assert connection.ended.wait(10), "the server kept the connection open"
        assert connection.goaway_code() in (NO_ERROR, ENHANCE_YOUR_CALM), bytes(connection.received[:64])
        assert time.monotonic() - opened < 20
        assert_bounded_and_serving(server, before, sent)
    finally:
        connection.close()
    with grpc.insecure_channel(server.grpc_address) as channel:
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
