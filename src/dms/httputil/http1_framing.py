"""HTTP/1.1 answers as bytes: the status line, the headers (the server's own, such as ``date``, first), the length
where the answer needs one, and ``connection: close`` on a connection's last answer (for ``dms.rest.http1_server``,
with the sans-IO ``dms.httputil.http1_wire``)."""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

_STATUS_LINES = {int(status): b"HTTP/1.1 %d %s\r\n" % (status, status.phrase.encode()) for status in HTTPStatus}


def status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status


def encode_head(
    status: int,
    headers: list[tuple[bytes, bytes]],
    extra: list[tuple[bytes, bytes]],
    keep_alive: bool,
    body_length: int | None = None,
) -> list[bytes]:
    """An answer's status line and headers, ending in the blank line (``extra``: the server's own, such as date).

    Every header is fit to send as it comes: a model's headers are checked where its answer is built
    (``dms.rest.forwarding.malformed_header``), the ASGI bridge checks an app's, and httptools refused a
    client's control characters. With ``body_length``, a ``content-length`` is added where the answer needs one
    and has none."""
    parts = [status_line(status)]
    for name, value in extra:
        parts += (name, b": ", value, b"\r\n")
    length_given = False
    for name, value in headers:
        length_given = length_given or name == b"content-length"
        parts += (name, b": ", value, b"\r\n")
    if body_length is not None and not length_given and status >= 200 and status not in (204, 304):
        parts += (b"content-length: ", str(body_length).encode(), b"\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return parts


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ServerDate:
    """The ``date`` header every answer carries, made once a second."""

    def __init__(self) -> None:
        self.second = 0
        self.headers: list[tuple[bytes, bytes]] = []

    def __call__(self) -> list[tuple[bytes, bytes]]:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.headers = [(b"date", formatdate(now, usegmt=True).encode())]
        return self.headers
