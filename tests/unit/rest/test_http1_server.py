"""DMS's HTTP/1.1 connections with the inference port's router, driven byte by byte: which requests go straight
to a model (without the ASGI app), and how they are written, pipelined, refused and let go of."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dms.auth import KeyStore
from dms.errors import DMSError
from dms.httputil.connection_deadlines import ReadLimits
from dms.messages import ResponseItem
from dms.observability.metrics import ServerMetrics
from dms.rest.calls import CallRouter
from dms.rest.errors import error_response
from dms.rest.forwarding import Forwarder
from dms.rest.http1_server import Http1Connection, Http1Server
from dms.rest.inference import InferenceForwarders, inference_routes
from dms.settings import ServerSettings
from tests.unit.protocol_support import FakeDataPlane, FakeTransport, run


class RecordingApp:
    """The ASGI app behind the protocol: answers 200 "asgi" and records each request it got."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.gate: asyncio.Event | None = None
        """When set, the app waits for it before it reads the body."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        if self.gate is not None:
            await self.gate.wait()
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"asgi"})


class Harness:
    def __init__(
        self,
        keys: KeyStore | None = None,
        keep_alive_s: float = 5,
        read_timeout_s: float = 60,
        min_body_rate: float = 0.0,
        body_rate_grace_s: float = 10.0,
    ) -> None:
        self.dataplane = FakeDataPlane(ServerSettings(max_request_size_bytes=100))
        self.metrics = ServerMetrics()
        forwarder = Forwarder(
            self.dataplane,  # type: ignore[arg-type]
            self.metrics,
            protocol="raw",
            on_error=error_response,
            pass_query=True,
        )
        self.app = RecordingApp()
        table = inference_routes(InferenceForwarders(forwarder, forwarder, forwarder))
        self.router = CallRouter(self.app, table, keys, "inference", lambda path: path == "/ping")
        limits = ReadLimits(read_timeout_s, min_body_rate, body_rate_grace_s)
        self.server = Http1Server(self.router, limits, max_body_bytes=100, idle_timeout_s=keep_alive_s)
        self.protocol = Http1Connection(self.server)
        self.transport = FakeTransport()
        self.protocol.connection_made(self.transport)

    def feed(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def answer(self, index: int, item: ResponseItem) -> None:
        self.dataplane.submitted[index][3].set_result(item)

    def in_flight(self) -> int:
        return self.metrics._in_flight.get("raw", 0)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def post(path: str, body: bytes = b"abc", *extra: bytes) -> bytes:
    head = [b"POST " + path.encode() + b" HTTP/1.1", b"Host: x", b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def test_a_forwarding_route_is_answered_without_the_asgi_app(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        h.feed(post("/predictions/m/2.0?topk=1", b"abc", b"X-Request-ID: r1"))
        [(name, version, item, _)] = h.dataplane.submitted
        assert (name, version, item.body, item.query, item.request_id) == ("m", "2.0", b"abc", [("topk", "1")], "r1")
        assert h.transport.take() == b"" and h.in_flight() == 1 and not h.router.tasks
        h.answer(0, ResponseItem(200, b"ok", "text/plain", headers=[("X-Extra", "1")]))
        await settle()
        written = h.transport.take()
        assert written.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\ncontent-length: 2\r\n" in written and b"\r\nx-extra: 1\r\n" in written
        assert b"\r\nx-request-id: r1\r\n" in written and b"content-type: text/plain; charset=utf-8" in written
        assert written.endswith(b"\r\n\r\nok") and b"connection: close" not in written
        assert h.app.paths == [] and not h.transport.closed and h.in_flight() == 0

    run(loop, test)


def test_a_body_in_chunks_and_pieces_is_put_together(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        request = b"PUT /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        request += b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        for index in range(0, len(request), 7):
            h.feed(request[index : index + 7])
        await settle()
        assert h.app.paths == ["/v1/models/m:predict"]  # PUT is not a route of KServe v1: the ASGI app has it
        assert h.transport.take().endswith(b"asgi")
        h.feed(request.replace(b"PUT", b"POST"))
        [(name, _, item, _)] = h.dataplane.submitted
        assert (name, item.body) == ("m", b"abcde") and not h.router.tasks

    run(loop, test)


def test_other_requests_go_to_the_asgi_app(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        h.feed(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        await settle()
        assert h.app.paths == ["/ping"] and h.transport.take().endswith(b"asgi")
        # Expect: 100-continue and a percent-encoded path take the same way to the model, with no ASGI task.
        for index, (request, version) in enumerate(
            [(post("/predictions/m", b"abc", b"Expect: 100-continue"), None), (post("/predictions/m%2Fx"), "x")]
        ):
            h.feed(request)
            await settle()
            assert not h.router.tasks and h.dataplane.submitted[index][1] == version
            h.answer(index, ResponseItem(200, b"ok", "text/plain"))
            await settle()
            written = h.transport.take()
            assert written.startswith(b"HTTP/1.1 100 Continue\r\n\r\n" if index == 0 else b"HTTP/1.1 200 OK")
            assert written.endswith(b"ok") and not h.router.tasks

    run(loop, test)


def test_a_request_pipelined_behind_one_in_flight_waits_for_it(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        h.feed(post("/predictions/m", b"one") + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        await settle()
        assert h.app.paths == [] and h.transport.take() == b""
        h.answer(0, ResponseItem(200, b"first", "text/plain"))
        await settle()
        written = h.transport.take()
        assert written.index(b"first") < written.index(b"asgi")
        assert h.app.paths == ["/ping"]

    run(loop, test)


def test_requests_queued_behind_one_in_flight_are_read_no_further_until_their_turn(loop: asyncio.AbstractEventLoop):
    """A client that pipelines requests without reading the answers must not have every one parsed into memory
    (uvicorn's protocol resumed reading after every answer; test_unread_answers.py)."""

    async def test() -> None:
        h = Harness()
        h.feed(post("/predictions/m", b"one") + post("/predictions/m", b"two") + post("/predictions/m", b"three"))
        assert not h.transport.reading and len(h.dataplane.submitted) == 1  # two requests queued
        h.protocol.pause_writing()
        h.protocol.resume_writing()
        assert not h.transport.reading  # writes flow again, but requests are still queued
        h.answer(0, ResponseItem(200, b"first", "text/plain"))
        await settle()
        assert len(h.dataplane.submitted) == 2 and not h.transport.reading  # the third still waits its turn
        h.answer(1, ResponseItem(200, b"second", "text/plain"))
        await settle()
        assert len(h.dataplane.submitted) == 3 and h.transport.reading  # the last one in flight: read on
        h.answer(2, ResponseItem(200, b"third", "text/plain"))
        await settle()
        written = h.transport.take()
        assert written.index(b"first") < written.index(b"second") < written.index(b"third")
        assert h.transport.reading and not h.transport.closed

    run(loop, test)


def test_a_client_that_does_not_read_its_answers_is_read_no_further(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        h.feed(post("/predictions/m", b"one"))
        h.protocol.pause_writing()  # the transport holds more unsent bytes than its high-water mark
        assert not h.transport.reading
        h.answer(0, ResponseItem(200, b"first", "text/plain"))
        await settle()
        assert h.transport.take().endswith(b"first") and not h.transport.reading  # answered; reading stays paused
        h.protocol.resume_writing()
        assert h.transport.reading
        h.feed(post("/predictions/m", b"two"))
        assert len(h.dataplane.submitted) == 2

    run(loop, test)


def test_refusals_are_answered_at_once_and_the_connection_goes_on(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        h.feed(post("/predictions/m", b"x" * 101))  # over max_request_size_bytes (100), by its Content-Length
        written = h.transport.take()
        assert written.startswith(b"HTTP/1.1 413 ") and b"PayloadTooLargeError" in written
        chunked = b"POST /predictions/m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        h.feed(chunked + b"40\r\n" + b"y" * 64 + b"\r\n")
        assert h.transport.take() == b""
        h.feed(b"40\r\n" + b"y" * 64 + b"\r\n")  # 128 bytes read: over the limit
        assert h.transport.take().startswith(b"HTTP/1.1 413 ")
        h.feed(b"40\r\n" + b"y" * 64 + b"\r\n0\r\n\r\n")  # the rest is read and dropped
        h.feed(post("/predictions/missing"))
        assert h.transport.take().startswith(b"HTTP/1.1 404 ")
        assert h.dataplane.submitted == [] and h.in_flight() == 0 and not h.transport.closed

    run(loop, test)


def test_a_client_that_leaves_cancels_its_request_and_is_written_nothing(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        h.feed(post("/predictions/m"))
        h.protocol.connection_lost(None)
        await settle()
        assert h.dataplane.submitted[0][3].cancelled()
        assert h.in_flight() == 0 and h.transport.take() == b""

        h = Harness()
        h.feed(post("/predictions/m", b"abcdef")[:-3])  # the body is not complete
        h.protocol.connection_lost(None)
        assert h.dataplane.submitted == [] and h.in_flight() == 0

    run(loop, test)


def test_http_1_0_and_connection_close_are_answered_then_closed(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        for request in (
            post("/predictions/m").replace(b"HTTP/1.1", b"HTTP/1.0"),
            post("/predictions/m", b"abc", b"Connection: close"),
        ):
            h = Harness()
            h.feed(request)
            h.answer(0, ResponseItem(200, b"ok", "text/plain"))
            await settle()
            written = h.transport.take()
            assert written.startswith(b"HTTP/1.1 200 OK") and b"\r\nconnection: close\r\n" in written
            assert h.transport.closed

    run(loop, test)


@pytest.mark.parametrize(
    ("content_type", "headers"),
    [
        ("text/plain", [("x-bad", "a\r\ninjected: yes")]),
        ("text/plain\r\ninjected: yes", []),
        ("text/plain", [("x bad\r\ninjected", "yes")]),
        ("text/plain", [("x-emoji", "injected \u2603")]),  # Latin-1 cannot encode it
    ],
)
def test_a_malformed_header_from_the_model_is_a_500_counted_as_one(
    loop: asyncio.AbstractEventLoop, content_type: str, headers: list[tuple[str, str]]
):
    async def test() -> None:
        h = Harness()
        h.feed(post("/predictions/m"))
        h.answer(0, ResponseItem(200, b"ok", content_type, headers=headers))
        await settle()
        written = h.transport.take()
        assert written.startswith(b"HTTP/1.1 500 ") and b"injected" not in written
        assert b"InternalError" in written and b"malformed header" in written
        assert [(labels["code"], count.value) for labels, count in h.metrics.requests.samples()] == [("500", 1)]
        assert h.in_flight() == 0 and not h.transport.closed  # the connection goes on
        h.feed(post("/predictions/m"))
        h.answer(1, ResponseItem(200, b"ok", "text/plain"))
        await settle()
        assert h.transport.take().startswith(b"HTTP/1.1 200 OK")

    run(loop, test)


def test_a_request_id_with_a_control_character_is_refused_by_the_parser(loop: asyncio.AbstractEventLoop):
    """The echoed ``X-Request-ID`` is written unchecked: httptools must refuse what could split the answer."""

    async def test() -> None:
        h = Harness()
        h.feed(post("/predictions/m", b"abc", b"X-Request-ID: a\x01b"))
        await settle()
        assert h.transport.take().startswith(b"HTTP/1.1 400 ") and h.dataplane.submitted == []

    run(loop, test)


def test_an_error_the_model_raised_is_answered_in_the_routes_format(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        h.feed(post("/predictions/m"))
        h.dataplane.submitted[0][3].set_exception(DMSError("the queue moved on"))
        await settle()
        written = h.transport.take()
        assert written.startswith(b"HTTP/1.1 500 ") and b"the queue moved on" in written

    run(loop, test)


def test_a_request_without_the_inference_key_is_refused_and_not_counted(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
):
    async def test() -> None:
        keys = KeyStore(tmp_path / "keys.json")
        h = Harness(keys)
        h.feed(post("/predictions/m", b"abc", b"Authorization: Bearer " + keys.key("inference").encode()))
        assert len(h.dataplane.submitted) == 1 and h.in_flight() == 1
        h.answer(0, ResponseItem(200, b"ok", "text/plain"))
        await settle()
        assert h.transport.take().startswith(b"HTTP/1.1 200 OK") and h.in_flight() == 0
        h.feed(post("/predictions/m", b"abcdef")[:-3])  # refused on its headers, before the body is in
        written = h.transport.take()
        assert written.startswith(b"HTTP/1.1 401 ") and len(h.dataplane.submitted) == 1
        h.protocol.connection_lost(None)  # the refused request was never counted, so nothing is taken off
        assert h.in_flight() == 0

    run(loop, test)


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout_and_a_busy_one_is_not(
    loop: asyncio.AbstractEventLoop,
):
    async def test() -> None:
        h = Harness(keep_alive_s=0.3)
        for index in range(4):  # a request every 0.15 s: idle for half the timeout at most
            h.feed(post("/predictions/m"))
            h.answer(index, ResponseItem(200, b"ok", "text/plain"))
            await settle()
            assert h.transport.take().endswith(b"\r\n\r\nok")
            await asyncio.sleep(0.15)
        assert not h.transport.closed  # 0.6 s since the first answer, never idle for 0.3 s
        h.feed(post("/predictions/m"))
        await asyncio.sleep(0.45)  # busy: a request waits for its model, past the timeout
        assert not h.transport.closed
        h.answer(4, ResponseItem(200, b"ok", "text/plain"))
        await settle()
        await asyncio.sleep(0.2)
        assert not h.transport.closed  # idle for 0.2 s only
        await asyncio.sleep(0.2)
        assert h.transport.closed

        # A connection that goes away drops its idle timer at once (the loop would keep it alive till then).
        h = Harness(keep_alive_s=300)
        h.feed(post("/predictions/m"))
        h.answer(0, ResponseItem(200, b"ok", "text/plain"))
        await settle()
        assert h.protocol.timer is not None
        h.protocol.connection_lost(None)
        assert h.protocol.timer is None

    run(loop, test)
