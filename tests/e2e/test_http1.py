"""HTTP/1.1 on the inference port, spoken byte by byte to a real server, with the lean path on (the
default) and off: pipelining, chunked bodies, ``Expect: 100-continue``, HTTP/1.0, ``Connection: close``,
a body over the limit, and a handler's header that tries to split the answer."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import make_probe_archive
from tests.support import DmsServer, running_server

MAX_BODY = 2000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DmsServer]:
    work = tmp_path_factory.mktemp("http1")
    store = work / "store"
    make_probe_archive(store, "probe", config="initial_workers: 1\n")
    args = ["--model-store", str(store), "--models", "probe=probe-1.0.mar"]
    env = {"DMS_MAX_REQUEST_SIZE_BYTES": str(MAX_BODY)}
    with running_server(work, args, env) as started:
        yield started


class RawClient:
    """One TCP connection: send bytes, read whole answers (status, headers, body) in order."""

    def __init__(self, server: DmsServer) -> None:
        host, port = server.inference_url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.buffer = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"the server closed the connection; unread: {self.buffer!r}")
        self.buffer += data

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split(" ")[1]), headers, body

    def closed(self) -> bool:
        """Whether the server closed the connection (after everything it sent was read)."""
        return not self.buffer and self.sock.recv(1) == b""


def probe(command: dict[str, object], *extra: str, version: str = "HTTP/1.1") -> bytes:
    body = json.dumps(command).encode()
    head = [f"POST /predictions/probe {version}", "Host: dms", "Content-Type: application/json", *extra]
    return "\r\n".join([*head, f"Content-Length: {len(body)}", "", ""]).encode() + body


def test_pipelined_requests_are_answered_in_order(server: DmsServer):
    with RawClient(server) as client:
        client.send(probe({"sleep": 0.2, "echo": 1}) + b"GET /ping HTTP/1.1\r\nHost: dms\r\n\r\n" + probe({"echo": 2}))
        first, ping, second = client.answer(), client.answer(), client.answer()
    assert (first[0], json.loads(first[2])["echo"]) == (200, 1)
    assert (ping[0], json.loads(ping[2])) == (200, {"status": "Healthy"})
    assert (second[0], json.loads(second[2])["echo"]) == (200, 2)


def test_a_chunked_body_sent_in_pieces_is_one_request(server: DmsServer):
    body = json.dumps({"echo": "chunked"}).encode()
    with RawClient(server) as client:
        client.send(b"POST /predictions/probe HTTP/1.1\r\nHost: dms\r\nTransfer-Encoding: chunked\r\n")
        client.send(b"Content-Type: application/json\r\n\r\n")
        for piece in (body[:5], body[5:]):
            client.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        client.send(b"0\r\n\r\n")
        status, headers, answer = client.answer()
    assert (status, json.loads(answer)["echo"]) == (200, "chunked")
    assert headers["x-request-id"]


def test_expect_100_continue_gets_its_interim_answer(server: DmsServer):
    request = probe({"echo": "expected"}, "Expect: 100-continue")
    head, body = request.split(b"\r\n\r\n", 1)
    with RawClient(server) as client:
        client.send(head + b"\r\n\r\n")
        assert client.answer()[0] == 100
        client.send(body)
        status, _, answer = client.answer()
    assert (status, json.loads(answer)["echo"]) == (200, "expected")


@pytest.mark.parametrize("request_kind", ["HTTP/1.0", "Connection: close"])
def test_a_request_that_ends_its_connection_is_answered_then_closed(server: DmsServer, request_kind: str):
    if request_kind == "HTTP/1.0":
        request = probe({"echo": "bye"}, version="HTTP/1.0")
    else:
        request = probe({"echo": "bye"}, "Connection: close")
    with RawClient(server) as client:
        client.send(request)
        status, headers, answer = client.answer()
        assert (status, json.loads(answer)["echo"], headers["connection"]) == (200, "bye", "close")
        assert client.closed()


def test_a_body_over_the_limit_is_a_413_and_the_connection_goes_on(server: DmsServer):
    chunk = b"x" * 1000
    with RawClient(server) as client:
        client.send(b"POST /predictions/probe HTTP/1.1\r\nHost: dms\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):  # 3,000 bytes, over the 2,000 allowed; it is refused once the limit is passed
            client.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, _, answer = client.answer()
        assert status == 413 and json.loads(answer)["type"] == "PayloadTooLargeError"
        client.send(b"0\r\n\r\n" + probe({"echo": "after"}))
        status, _, answer = client.answer()
    assert (status, json.loads(answer)["echo"]) == (200, "after")


def server_errors(server: DmsServer) -> float:
    """The requests the server counted as answered 500."""
    text = httpx.get(f"{server.metrics_url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("dms_requests_total{") and 'code="500"' in line
    )


def test_a_handler_header_cannot_split_the_answer(server: DmsServer):
    errors_before = server_errors(server)
    with RawClient(server) as client:
        client.send(probe({"header": ["x-note", "a\r\ninjected: yes"], "echo": "split"}))
        status, headers, answer = client.answer()
        assert (status, json.loads(answer)["type"]) == (500, "InternalError") and "injected" not in headers
        assert b"injected" not in answer
        client.send(probe({"echo": "same connection"}))  # the connection goes on
        status, _, answer = client.answer()
        assert (status, json.loads(answer)["echo"]) == (200, "same connection")
    assert server_errors(server) == errors_before + 1  # counted as the 500 it was
    assert "answered with a header HTTP cannot carry, 'x-note'" in server.log()
