"""The sans-IO HTTP/1.1 core, fed bytes and a clock the test turns: what it hands its owner, what it refuses,
and when its deadlines pass. No socket and no event loop."""

from __future__ import annotations

import pytest

from dms.errors import DMSError
from dms.httputil.connection_deadlines import ReadLimits
from dms.httputil.http1_framing import encode_head
from dms.httputil.http1_wire import Expiry, Http1Wire, WireRequest


class Owner:
    def __init__(self) -> None:
        self.heads: list[WireRequest] = []
        self.early: list[WireRequest] = []
        self.requests: list[WireRequest] = []
        self.refusals: list[DMSError] = []

    def head_arrived(self, request: WireRequest) -> None:
        self.heads.append(request)

    def refused_early(self, request: WireRequest) -> None:
        self.early.append(request)

    def request_arrived(self, request: WireRequest) -> None:
        self.requests.append(request)

    def wire_refused(self, error: DMSError) -> None:
        self.refusals.append(error)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**limits: float) -> tuple[Http1Wire, Owner, Clock]:
    owner, clock = Owner(), Clock()
    wire = Http1Wire(owner, ReadLimits(**limits), idle_timeout_s=5.0, max_body_bytes=100, clock=clock)  # type: ignore[arg-type]
    return wire, owner, clock


def post(path: str = "/p", body: bytes = b"abc", *extra: bytes) -> bytes:
    head = [b"POST " + path.encode() + b" HTTP/1.1", b"Host: x", b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def test_requests_pipelined_in_one_read_arrive_whole_in_order():
    wire, owner, _ = make()
    wire.receive(post("/a%2Fb?x=1&y", b"one", b"X-Request-ID: r1") + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    first, second = owner.requests
    assert (first.method, first.path, first.raw_path, first.query, first.body) == (
        "POST",
        "/a/b",
        b"/a%2Fb",
        b"x=1&y",
        b"one",
    )
    assert first.header(b"x-request-id") == b"r1" and first.keep_alive and first.http_version == "1.1"
    assert (second.method, second.path, second.body) == ("GET", "/ping", b"")
    assert not wire.arriving() and owner.refusals == []


def test_a_body_in_chunks_and_pieces_is_put_together():
    wire, owner, _ = make()
    request = b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    for index in range(len(request)):
        wire.receive(request[index : index + 1])
    [arrived] = owner.requests
    assert arrived.body == b"abcde" and wire.arriving() is False


@pytest.mark.parametrize(
    ("request_bytes", "keep_alive"),
    [
        (post(), True),
        (post().replace(b"HTTP/1.1", b"HTTP/1.0"), False),
        (post("/p", b"abc", b"Connection: close"), False),
        (post().replace(b"HTTP/1.1", b"HTTP/1.0").replace(b"Host: x", b"Connection: keep-alive"), True),
        (b"GET /p HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", False),
    ],
    ids=["1.1", "1.0", "close", "1.0-keep-alive", "upgrade"],
)
def test_which_request_is_the_connections_last(request_bytes: bytes, keep_alive: bool):
    wire, owner, _ = make()
    wire.receive(request_bytes + post())  # a request after the last is not read
    assert owner.requests[0].keep_alive is keep_alive
    assert len(owner.requests) == (2 if keep_alive else 1) and owner.refusals == []


def test_a_head_over_the_limit_is_refused_whole_or_arriving():
    wire, owner, _ = make(max_header_bytes=1000)
    wire.receive(post("/p", b"abc", b"X-Big: " + b"b" * 1000))  # whole in one read, after a request
    [refusal] = owner.refusals
    assert refusal.kind == "headers_too_large" and "max_header_bytes (1000 bytes)" in refusal.message
    assert owner.requests == [] and wire.closed
    wire, owner, _ = make(max_header_bytes=1000)
    wire.receive(post() + b"GET /p HTTP/1.1\r\nX-Endless: ")
    for _ in range(3):
        wire.receive(b"a" * 400)  # a header that never ends: refused once the reads pass the limit
    assert len(owner.requests) == 1 and len(owner.refusals) == 1 and wire.closed
    wire.receive(post())
    assert len(owner.requests) == 1  # nothing more is read


def test_too_many_headers_are_refused_as_the_head_ends():
    wire, owner, _ = make(max_header_count=3)
    wire.receive(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n")
    [refusal] = owner.refusals
    assert "max_header_count (3)" in refusal.message and owner.heads == []


def test_a_malformed_request_is_refused_naming_it():
    wire, owner, _ = make()
    wire.receive(b"POST /p HTTP/1.1\r\nX-Request-ID: a\x01b\r\n\r\n")
    [refusal] = owner.refusals
    assert refusal.kind == "invalid_input" and refusal.message.startswith("malformed HTTP request")


def test_a_body_too_large_is_refused_early_and_the_rest_dropped():
    wire, owner, _ = make()
    wire.receive(post("/p", b"x" * 101)[:-50])  # declared too large: refused with its head
    [declared] = owner.early if owner.early else owner.heads
    assert declared.refusal is not None and "of 101 bytes" in declared.refusal.message
    wire.receive(b"x" * 50)
    chunked = b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    wire.receive(chunked + b"40\r\n" + b"y" * 64 + b"\r\n")
    assert len(owner.early) == 0
    wire.receive(b"40\r\n" + b"y" * 64 + b"\r\n")  # 128 bytes read: over the limit
    [grown] = owner.early
    assert grown.refusal is not None and grown.body == b"" and grown.chunks == []
    wire.receive(b"0\r\n\r\n" + post())
    assert [r.refusal is not None for r in owner.requests] == [True, True, False]


def test_the_deadlines_on_a_clock():
    wire, _, clock = make(timeout_s=10.0)
    assert wire.deadline() == clock.now + 5.0  # idle from the start
    clock.now += 5.0
    assert wire.expired() is Expiry.IDLE
    wire, _, clock = make(timeout_s=10.0)
    wire.receive(post("/p", b"0123456789")[:-5])
    began = clock.now
    clock.now += 6
    wire.receive(b"01")  # the body moved on: its pause is counted from now
    assert wire.deadline() == clock.now + 10 and wire.expired() is None
    clock.now += 10
    assert wire.expired() is Expiry.READ_TIMEOUT and clock.now - began == 16
    error = wire.read_timeout_error(Expiry.READ_TIMEOUT)
    assert "request_read_timeout_s (10 s)" in error.message


def test_the_body_rate_floor_and_time_not_read():
    wire, _, clock = make(timeout_s=60.0, min_body_rate=100.0, body_rate_grace_s=2.0)
    wire.receive(post("/p", b"z" * 100)[:-90])  # 10 bytes of body
    assert wire.first_deadline() == clock.now + 2.0  # the first look: after the grace
    clock.now += 2.5
    assert wire.expired() is Expiry.TOO_SLOW
    assert "min_request_body_rate_bytes_s (100 bytes/s" in wire.read_timeout_error(Expiry.TOO_SLOW).message
    wire.reading_paused()  # the server was not reading: the clock waits, and starts afresh
    assert wire.expired() is None and wire.deadline() is None
    clock.now += 30
    wire.reading_resumed()
    assert wire.expired() is None and wire.request_since == clock.now and wire.body_bytes == 0
    wire.receive(b"z" * 90)
    assert not wire.arriving()
    wire.went_idle()
    assert wire.deadline() == clock.now + 5.0


def test_a_stopping_server_takes_one_more_request_at_most():
    wire, owner, _ = make()
    wire.receive(post()[:10])
    wire.stop_taking()
    wire.receive(post()[10:] + post())
    [last] = owner.requests
    assert last.keep_alive is False and wire.closed


def test_answers_are_framed():
    head = b"".join(encode_head(200, [(b"content-type", b"text/plain")], [(b"date", b"D")], False, 2))
    assert (
        head
        == b"HTTP/1.1 200 OK\r\ndate: D\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\n"
    )
    assert b"content-length" not in b"".join(encode_head(204, [], [], True, 0))
    assert b"".join(encode_head(200, [(b"content-length", b"5")], [], True, 0)).count(b"content-length") == 1
    assert b"".join(encode_head(599, [], [], True)) == b"HTTP/1.1 599 \r\n\r\n"
