"""The read deadline of an HTTP/1.1 connection (``request_read_timeout_s``): a request must keep arriving,
or it gets 408 and its connection is closed; a slow body that keeps coming is served; an earlier answer
in progress goes out first. Driven byte by byte on DMS's HTTP/1.1 connection, with short timeouts."""

from __future__ import annotations

import asyncio
import json

import pytest

from dms.messages import ResponseItem
from tests.unit.grpc.test_connection import Harness as H2Harness
from tests.unit.protocol_support import run
from tests.unit.rest.test_http1_server import Harness, post, settle

TIMEOUT_S = 0.1


def error_body(written: bytes) -> dict[str, object]:
    head, _, body = written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert b"\r\ncontent-type: application/json" in head and b"\r\nconnection: close" in head
    answer = json.loads(body)
    assert isinstance(answer, dict)
    return answer


def test_a_head_that_stops_arriving_is_answered_408_and_closed(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness(read_timeout_s=TIMEOUT_S)
        h.feed(b"POST /predictions/m HTTP/1.1\r\nHost: x\r\nContent-")
        await asyncio.sleep(TIMEOUT_S / 2)
        assert not h.transport.closed and h.transport.take() == b""
        await asyncio.sleep(TIMEOUT_S)
        answer = error_body(h.transport.take())
        assert answer["code"] == 408 and answer["type"] == "RequestReadTimeoutError"
        assert "request_read_timeout_s (0.1 s)" in str(answer["message"])
        assert h.transport.closed and h.dataplane.submitted == [] and h.in_flight() == 0

    run(loop, test)


def test_a_body_that_stops_arriving_is_answered_408_as_a_request(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness(read_timeout_s=TIMEOUT_S)
        h.feed(post("/predictions/m", b"0123456789", b"X-Request-ID: slow")[:-7])  # 3 of its 10 bytes
        assert h.in_flight() == 0  # in flight once it arrived whole (or is refused)
        await asyncio.sleep(TIMEOUT_S * 1.5)
        written = h.transport.take()
        assert error_body(written)["type"] == "RequestReadTimeoutError"
        assert b"\r\nx-request-id: slow\r\n" in written  # answered by its route, as any of its errors
        assert h.transport.closed and h.dataplane.submitted == [] and h.in_flight() == 0
        assert [(labels["code"], count.value) for labels, count in h.metrics.requests.samples()] == [("408", 1)]

    run(loop, test)


@pytest.mark.parametrize(
    ("limits", "body", "piece", "interval_s"),
    [
        ({"read_timeout_s": TIMEOUT_S}, b"0123456789", 1, TIMEOUT_S / 2),  # a byte every half timeout: 5 timeouts
        ({"read_timeout_s": 1.0, "min_body_rate": 100.0, "body_rate_grace_s": TIMEOUT_S}, b"y" * 60, 10, 0.03),
    ],
    ids=["pausing-under-the-timeout", "above-the-rate-floor"],  # the second: 333 bytes/s over three graces
)
def test_a_slow_body_that_keeps_coming_is_served(
    loop: asyncio.AbstractEventLoop, limits: dict[str, float], body: bytes, piece: int, interval_s: float
):
    async def test() -> None:
        h = Harness(**limits)
        request = post("/predictions/m", body)
        h.feed(request[: -len(body)])
        for start in range(0, len(body), piece):
            await asyncio.sleep(interval_s)
            h.feed(body[start : start + piece])
        [(_, _, item, _)] = h.dataplane.submitted
        assert item.body == body and not h.transport.closed
        await asyncio.sleep(TIMEOUT_S * 2)  # waiting for its model is not reading: no deadline, no floor
        assert not h.transport.closed
        h.answer(0, ResponseItem(200, b"ok", "text/plain"))
        await settle()
        assert h.transport.take().endswith(b"\r\n\r\nok") and not h.transport.closed

    run(loop, test)


def test_a_body_for_the_asgi_app_that_stops_arriving_is_answered_408(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness(read_timeout_s=TIMEOUT_S)
        h.feed(post("/elsewhere", b"0123456789")[:-7])
        await settle()
        assert h.app.paths == []  # an app gets a request once its body is in
        await asyncio.sleep(TIMEOUT_S * 1.5)
        assert error_body(h.transport.take())["type"] == "RequestReadTimeoutError"
        assert h.transport.closed and not h.router.tasks

    run(loop, test)


def test_a_request_stalled_behind_an_answer_in_progress_closes_the_connection_after_it(
    loop: asyncio.AbstractEventLoop,
):
    async def test() -> None:
        h = Harness(read_timeout_s=TIMEOUT_S)
        h.feed(post("/predictions/m") + b"POST /predictions/m HTTP/1.1\r\nHo")
        await asyncio.sleep(TIMEOUT_S * 1.5)
        assert not h.transport.closed and h.transport.take() == b""  # the first request's answer comes first
        assert not h.transport.reading
        h.answer(0, ResponseItem(200, b"ok", "text/plain"))
        await settle()
        written = h.transport.take()
        assert written.startswith(b"HTTP/1.1 200 ") and b"\r\nconnection: close\r\n" in written
        assert written.endswith(b"\r\n\r\nok") and h.transport.closed

    run(loop, test)


def test_a_connection_that_never_sends_is_closed_after_the_keep_alive_timeout(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness(keep_alive_s=TIMEOUT_S)
        await asyncio.sleep(TIMEOUT_S * 1.5)
        assert h.transport.closed and h.transport.take() == b""

    run(loop, test)


def test_an_http2_connection_that_never_sends_is_closed_after_its_idle_timeout(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = H2Harness(keep_alive_s=TIMEOUT_S)  # type: ignore[arg-type]
        await asyncio.sleep(TIMEOUT_S * 1.5)
        assert h.transport.closed

    run(loop, test)


def test_a_body_that_trickles_under_the_rate_floor_is_answered_408(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness(read_timeout_s=1.0, min_body_rate=100.0, body_rate_grace_s=TIMEOUT_S)
        request = post("/predictions/m", b"x" * 50, b"X-Request-ID: trickle")
        h.feed(request[:-50])
        sent = 0
        while sent < 10 and not h.transport.closed:  # a byte every 0.03 s: 33 bytes/s, pauses far inside 1 s
            await asyncio.sleep(0.03)
            h.feed(b"x")
            sent += 1
        written = h.transport.take()
        answer = error_body(written)
        assert answer["type"] == "RequestReadTimeoutError"
        assert "min_request_body_rate_bytes_s (100 bytes/s" in str(answer["message"])
        assert b"\r\nx-request-id: trickle\r\n" in written  # answered by its route, as any of its errors
        assert h.transport.closed and h.dataplane.submitted == [] and h.in_flight() == 0
        assert sent < 10  # refused soon after the grace, not at the end of the body

    run(loop, test)


def test_a_head_still_arriving_after_the_grace_is_too_slow(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness(read_timeout_s=1.0, min_body_rate=100.0, body_rate_grace_s=TIMEOUT_S)
        for piece in (b"POST /predictions/m HTTP/1.1\r\n", b"Host: x\r\n", b"Content-Length: 2\r\n", b"X-A: 1\r\n"):
            h.feed(piece)
            await asyncio.sleep(0.04)
        await asyncio.sleep(TIMEOUT_S)
        assert "min_request_body_rate_bytes_s" in str(error_body(h.transport.take())["message"])
        assert h.transport.closed and h.dataplane.submitted == []

    run(loop, test)


def test_a_body_for_the_asgi_app_is_held_to_the_rate_floor(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness(read_timeout_s=1.0, min_body_rate=100.0, body_rate_grace_s=TIMEOUT_S)
        h.feed(post("/elsewhere", b"z" * 40)[:-39])
        for _ in range(8):
            await asyncio.sleep(0.03)
            if h.transport.closed:
                break
            h.feed(b"z")
        assert "min_request_body_rate_bytes_s" in str(error_body(h.transport.take())["message"])
        assert h.transport.closed and h.app.paths == [] and not h.router.tasks

    run(loop, test)


def test_with_no_floor_a_trickle_is_held_only_to_its_pauses(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness(read_timeout_s=TIMEOUT_S)  # min_body_rate 0: the floor is off
        request = post("/predictions/m", b"w" * 8)
        h.feed(request[:-8])
        for _ in range(8):  # 8 bytes over ~0.4 s: 20 bytes/s
            await asyncio.sleep(TIMEOUT_S / 2)
            h.feed(b"w")
        [(_, _, item, _)] = h.dataplane.submitted
        assert item.body == b"w" * 8 and not h.transport.closed

    run(loop, test)


def test_time_the_server_does_not_read_is_not_held_against_the_floor(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness(read_timeout_s=1.0, min_body_rate=1_000.0, body_rate_grace_s=TIMEOUT_S)
        request = post("/elsewhere", b"q" * 90)
        h.feed(request[:-80])  # 10 bytes of body
        h.protocol.pause_writing()  # the client does not read what it is sent: the server stops reading it
        assert not h.transport.reading
        await asyncio.sleep(TIMEOUT_S * 3)  # three graces, at 10 bytes where the floor asks 100 each
        assert not h.transport.closed and h.transport.take() == b""
        resumed_at = asyncio.get_running_loop().time()
        h.protocol.resume_writing()  # reading resumes, and the floor counts from now
        assert h.transport.reading
        wire = h.protocol.wire
        assert wire.request_since is not None and wire.request_since >= resumed_at and wire.body_bytes == 0
        h.feed(request[-80:])
        await settle()
        written = h.transport.take()
        assert written.startswith(b"HTTP/1.1 200 ") and written.endswith(b"asgi") and not h.transport.closed

    run(loop, test)
