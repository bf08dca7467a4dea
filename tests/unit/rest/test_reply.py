"""A forwarder's ``Reply`` carries exactly the status, headers and body a Starlette ``Response`` would."""

from __future__ import annotations

import asyncio

import pytest
from starlette.responses import Response

from dms.rest.forwarding import Reply


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, b"[[1.0]]", "application/json"),
        (200, b"hello", "text/plain"),
        (200, b"hello", "text/plain; charset=latin-1"),
        (200, b"", "application/octet-stream"),
        (201, b"x", "image/png"),
        (204, b"", "application/json"),
        (304, b"", "text/html"),
        (507, b"{}", ""),
    ],
)
def test_content_reply_matches_starlette(status: int, body: bytes, content_type: str):
    reply = Reply.content(status, body, content_type)
    response = Response(body, status_code=status, media_type=content_type)
    for key, value in (("X-Custom", "1"), ("Content-Type", "text/csv"), ("x-custom", "2"), ("X-Request-ID", "r-1")):
        reply.set_header(key, value)
        response.headers[key] = value
    assert (reply.status, reply.headers, reply.body) == (response.status_code, response.raw_headers, response.body)
    assert Reply.of(response) == reply


def test_set_header_replaces_every_duplicate_in_place():
    reply = Reply(200, [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")], b"")
    reply.set_header("A", "9")
    assert reply.headers == [(b"a", b"9"), (b"b", b"2")]


def test_sending_and_converting_keep_the_answer():
    reply = Reply.content(200, b'{"ok": true}', "application/json")
    reply.set_header("x-request-id", "r-2")
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(reply.send(send))
    assert sent == [
        {"type": "http.response.start", "status": 200, "headers": reply.headers},
        {"type": "http.response.body", "body": b'{"ok": true}'},
    ]
    response = reply.response()
    assert (response.status_code, response.raw_headers, response.body) == (200, reply.headers, reply.body)
