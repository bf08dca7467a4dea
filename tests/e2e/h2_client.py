"""A bare HTTP/2 client for gRPC calls no well-behaved client makes (zttp's client role, over a socket).

``RawGrpc`` sends exactly the frames a test asks for: a message flagged as compressed whose bytes the test
made, a stream opened and never ended, thousands of streams at once, and reads what the server answers:
each stream's headers, data and trailers, resets, and a GOAWAY.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import zttp

from tests.support import DmsServer


def grpc_frame(message: bytes, compressed: bool = False) -> bytes:
    """One length-prefixed gRPC message (flag byte, 4-byte length)."""
    return bytes([1 if compressed else 0]) + len(message).to_bytes(4, "big") + message


@dataclass
class StreamAnswer:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int | None:
        """The grpc-status of the trailers (or of a trailers-only answer's headers)."""
        value = self.trailers.get(b"grpc-status") or dict(self.headers).get(b"grpc-status")
        return int(value) if value is not None else None

    @property
    def message(self) -> str:
        value = self.trailers.get(b"grpc-message") or dict(self.headers).get(b"grpc-message") or b""
        return value.decode("latin-1")


class RawGrpc:
    """One HTTP/2 connection to the server's gRPC port."""

    def __init__(self, server: DmsServer) -> None:
        host, port = server.grpc_address.rsplit(":", 1)
        self.authority = server.grpc_address.encode()
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.conn = zttp.Connection(zttp.CLIENT, zttp.HTTP2)
        self.conn.initiate_connection()
        self.answers: dict[int, StreamAnswer] = {}
        self.goaway: int | None = None
        self.closed = False
        self._flush()

    def open(self, method: str, metadata: list[tuple[bytes, bytes]] | None = None) -> int:
        """Open a call's stream (its headers sent, no message yet); its id."""
        headers = [
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b":authority", self.authority),
            *(metadata or []),
        ]
        stream = self.conn.send_request(b"POST", f"/inference.GRPCInferenceService/{method}".encode(), b"2", headers)
        self.answers[stream.stream_id] = StreamAnswer()
        self._flush()
        return stream.stream_id

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        stream = self.conn.stream(stream_id)
        if data:
            stream.send_data(data)
        if end:
            stream.end_message()
        self._flush()

    def call(self, method: str, data: bytes, metadata: list[tuple[bytes, bytes]] | None = None) -> StreamAnswer:
        """A whole unary call: open, send ``data``, end, and wait for the answer."""
        stream_id = self.open(method, metadata)
        self.send(stream_id, data, end=True)
        return self.wait(stream_id)

    def wait(self, stream_id: int, timeout_s: float = 30.0) -> StreamAnswer:
        deadline = time.monotonic() + timeout_s
        answer = self.answers[stream_id]
        while not (answer.ended or answer.reset is not None) and not self.closed:
            if time.monotonic() > deadline:
                raise AssertionError(f"stream {stream_id} got no answer within {timeout_s} s")
            self.read(deadline - time.monotonic())
        return answer

    def read(self, timeout_s: float = 1.0) -> bool:
        """Read what arrives within ``timeout_s`` and handle its events; False once the server closed."""
        self.sock.settimeout(max(0.01, timeout_s))
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return True
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.conn.receive_data(data)
        while (event := self.conn.next_event()) is not zttp.NEED_DATA:
            self._handle(event)
        self._flush()
        return True

    def _handle(self, event: object) -> None:
        answer = self.answers.get(getattr(event, "stream_id", 0))
        if isinstance(event, zttp.Response) and answer is not None:
            answer.headers = list(event.headers)
        elif isinstance(event, zttp.Data) and answer is not None:
            answer.data += event.data
        elif isinstance(event, zttp.EndOfMessage) and answer is not None:
            answer.trailers = dict(event.trailers)
            answer.ended = True
        elif isinstance(event, zttp.RstStream) and answer is not None:
            answer.reset = int(event.error_code)
        elif isinstance(event, zttp.GoAway):
            self.goaway = int(event.error_code)

    def _flush(self) -> None:
        pending = self.conn.data_to_send()
        if pending:
            try:
                self.sock.sendall(pending)
            except OSError:
                self.closed = True

    def close(self) -> None:
        self.sock.close()
