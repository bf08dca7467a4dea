"""A streamed answer on DMS's HTTP/1.1 connection, driven byte by byte: its head with the first chunk, one piece
of chunked encoding per chunk, the end, and what a slow or departed client, or a model that fails, does to it."""

from __future__ import annotations

import asyncio

from dms.messages import Chunk, ResponseItem
from tests.unit.protocol_support import FakeStreamControl, run
from tests.unit.rest.test_http1_server import Harness, post, settle


def started(h: Harness) -> tuple[object, FakeStreamControl]:
    h.feed(post("/predictions/m", b"abc", b"X-Request-ID: r1"))
    [reader] = h.dataplane.readers
    assert reader is not None and h.dataplane.submitted[0][2].stream
    return reader, FakeStreamControl()


def test_chunks_go_out_as_they_come_and_the_answer_ends(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        reader, control = started(h)
        reader.chunk(Chunk(0, 0, b"Hel", 200, "text/plain", [("X-Model", "1")]), control)
        head = h.transport.take()
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in head
        assert b"content-length" not in head and b"x-model: 1" in head and b"x-request-id: r1" in head
        assert head.endswith(b"\r\n\r\n3\r\nHel\r\n") and control.credits == 1
        reader.chunk(Chunk(0, 0, b"lo"), control)
        assert h.transport.take() == b"2\r\nlo\r\n" and control.credits == 2
        h.answer(0, ResponseItem(200, b"!", "text/plain"))
        await settle()
        assert h.transport.take() == b"1\r\n!\r\n0\r\n\r\n"
        assert not h.transport.closed and h.in_flight() == 0 and not control.stopped
        h.feed(post("/predictions/m", b"next"))  # the connection serves on
        assert len(h.dataplane.submitted) == 2

    run(loop, test)


def test_a_client_that_does_not_read_gets_no_credit_until_it_does(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        reader, control = started(h)
        reader.chunk(Chunk(0, 0, b"a", 200, "text/plain"), control)
        h.protocol.pause_writing()
        reader.chunk(Chunk(0, 0, b"b"), control)
        reader.chunk(Chunk(0, 0, b"c"), control)
        await settle()
        assert control.credits == 1
        h.protocol.resume_writing()
        await settle()
        assert control.credits == 3 and not control.stopped

    run(loop, test)


def test_a_client_that_reads_nothing_for_too_long_is_given_up(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        h.dataplane.settings = h.dataplane.settings.model_copy(update={"stream_stall_timeout_s": 0.05})
        reader, control = started(h)
        reader.chunk(Chunk(0, 0, b"a", 200, "text/plain"), control)
        h.protocol.pause_writing()
        reader.chunk(Chunk(0, 0, b"b"), control)
        await asyncio.sleep(0.2)
        assert control.stopped and h.transport.aborted and control.credits == 1
        h.protocol.connection_lost(None)
        from dms.worker.streaming import GONE

        h.answer(0, GONE)  # what the worker answers once it has stopped
        await settle()
        assert h.in_flight() == 0

    run(loop, test)


def test_a_model_that_fails_midway_breaks_the_answer_off(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        reader, control = started(h)
        reader.chunk(Chunk(0, 0, b"a", 200, "text/plain"), control)
        h.transport.take()
        from dms.messages import ErrorInfo

        h.answer(0, ResponseItem(0, b"", "", error=ErrorInfo("HandlerError", "handler raised")))
        await settle()
        assert h.transport.take() == b"" and h.transport.aborted  # no last piece: the client sees it broken
        assert h.in_flight() == 0

    run(loop, test)


def test_a_client_that_leaves_stops_the_model(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        reader, control = started(h)
        reader.chunk(Chunk(0, 0, b"a", 200, "text/plain"), control)
        h.protocol.connection_lost(None)
        await settle()
        assert control.stopped and h.in_flight() == 0
        assert h.dataplane.submitted[0][3].cancelled()

    run(loop, test)


def test_a_first_chunk_with_a_header_http_cannot_carry_is_a_500(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        reader, control = started(h)
        reader.chunk(Chunk(0, 0, b"a", 200, "text/plain", [("X-Bad", "a\r\nb")]), control)
        await settle()
        written = h.transport.take()
        assert written.startswith(b"HTTP/1.1 500 ") and b"malformed header" in written
        assert control.stopped and h.in_flight() == 0

    run(loop, test)
