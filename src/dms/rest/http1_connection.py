"""The HTTP/1.1 connection every DMS port runs: uvicorn's httptools protocol reading only what it is
ready to answer (``dms.rest.paced_reading``), with the idle and read deadlines of
``dms.httputil.connection_deadlines`` on one timer per connection.

A request whose head passes ``max_header_bytes`` gets ``431`` the moment it does, and its connection
is closed: nothing more of it is read (httptools gathers a header in memory until it ends, so the bytes
are counted as they arrive, not per header). One with more than ``max_header_count`` headers gets the
same as its head ends.
A request still arriving when its read deadline passes, or arriving slower than the body-rate floor,
gets ``408`` with the JSON error body every endpoint uses (``RequestReadTimeoutError``), and its
connection is closed; where the connection is still answering an earlier request, that answer is sent
first and the connection closed after it.
The inference port's protocol (``dms.rest.http1``) subclasses this one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from dms.errors import DMSError, HeadersTooLargeError, RequestReadTimeoutError, ServerBusyError
from dms.httputil.connection_deadlines import ConnectionDeadlines, ReadLimits, too_slow_message
from dms.rest.errors import error_response
from dms.rest.forwarding import Reply
from dms.rest.paced_reading import PacedHttpToolsProtocol

log = logging.getLogger("dms.http")
SHUTDOWN_LINGER_S = 0.25
"""How long a connection between requests (or before its first) may still bring one once the server stops."""


def _status_line(status: int) -> bytes:
    return STATUS_LINE.get(status) or b"HTTP/1.1 %d \r\n" % status


class Http1Protocol(ConnectionDeadlines, PacedHttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with paced reading, closing idle connections and slow requests."""

    stopping = False
    """The server is stopping: the request being answered, or one arriving within ``SHUTDOWN_LINGER_S``, is the
    connection's last."""
    too_slow = False
    """The request being refused arrived slower than ``min_body_rate`` (rather than pausing too long)."""
    max_header_bytes: ClassVar[int] = 64 * 1024
    """Largest request head (``max_header_bytes``): request line, headers and their line ends."""
    max_header_count: ClassVar[int] = 100
    """Most headers a request may have (``max_header_count``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answering_before: Any = None
        """The request in progress when the one being read began (uvicorn's ``cycle``), if any."""
        self.head_bytes = 0
        """Bytes received while the head of the request being read was not complete."""
        self.head_complete = False
        """The head of the request being read has been parsed (until the next request begins)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
        super().connection_made(transport)
        if not self.admitted():
            limit = self.connection_budget.limit
            log.warning("a connection was refused: %s are open, max_connections", limit)
            self.send_error_and_close(
                ServerBusyError(f"the server has max_connections ({limit}) connections open; try again shortly")
            )
            return
        self.went_idle()  # a connection that never sends a request is closed as an idle one is

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.stop_timer()
        self.released()

    def data_received(self, data: bytes) -> None:
        # Bytes read while a head is incomplete count against the limit: an upper bound of the head's size
        # (a read may also carry its body), looked at closely only when past the limit (``head_arrived``).
        counted = not self.head_complete
        if counted:
            self.head_bytes += len(data)
        HttpToolsProtocol.data_received(self, data)  # (no class between defines it: a direct call costs less)
        if not self.head_complete:
            if not counted:  # the read that ended one request and began the next
                self.head_bytes += len(data)
            if self.head_bytes > self.max_header_bytes and not self.transport.is_closing():
                self.refuse_head(self.head_too_large())

    def head_too_large(self) -> str:
        return f"the request's head passed max_header_bytes ({self.max_header_bytes} bytes)"

    def refuse_head(self, why: str) -> None:
        """Answer 431 naming the limit, and close: the rest of the request is never read."""
        client = "{}:{}".format(*self.client) if self.client else "a client"
        log.warning("%s: %s; closing", client, why)
        self.send_error_and_close(HeadersTooLargeError(why))

    def send_400_response(self, msg: str) -> None:
        if self.transport.is_closing():  # refused by a limit from a parser callback, which stopped the parser
            return
        super().send_400_response(msg)

    # -- parser callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.answering_before = self.cycle
        self.request_began()
        self.head_complete = False  # what arrives now is a head

    def on_headers_complete(self) -> None:
        self.head_arrived()
        super().on_headers_complete()
        self.last_if_stopping()

    def last_if_stopping(self) -> None:
        """Once the server is stopping, the request whose head just arrived is the connection's last."""
        if self.stopping and self.cycle is not None:
            self.cycle.keep_alive = False

    def head_arrived(self) -> None:
        """The head is parsed: refuse it if it has too many headers, or if the bytes read with it passed the size
        limit and the head itself does. (Headers are counted here rather than one by one as they are parsed: the
        size limit already bounds how many can arrive.)"""
        if self.head_bytes > self.max_header_bytes or len(self.headers) > self.max_header_count:
            self._check_head()
        self.head_complete = True
        self.head_bytes = 0

    def _check_head(self) -> None:
        if len(self.headers) > self.max_header_count:
            self.refuse_head(f"the request has more than max_header_count ({self.max_header_count}) headers")
            raise HeadersTooLargeError("too many headers")  # httptools stops; uvicorn's 400 is not sent
        if self._head_size() > self.max_header_bytes:
            self.refuse_head(self.head_too_large())
            raise HeadersTooLargeError("head too large")

    def _head_size(self) -> int:
        """The head's size as parsed: request line and headers, with their separators and line ends."""
        return len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self.reading_since = self.loop.time()
        self.body_bytes += len(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.reading_since = None

    def _too_slow_at(self) -> float | None:
        if self.flow.read_paused and self.request_since is not None:  # the server is not reading: the clock waits
            self.request_since, self.body_bytes = self.loop.time(), 0
        return super()._too_slow_at()

    def reading_resumed(self) -> None:
        """The server paused reading (requests queued, answers unread, a body the app had not taken): a request
        then arriving is held to the body-rate floor afresh, from now, since its client could not send."""
        if self.reading_since is not None and self.request_since is not None:
            self.request_since, self.body_bytes = self.loop.time(), 0

    # -- the connection's end --------------------------------------------------------------------
    def on_response_complete(self) -> None:
        # uvicorn's, except that the connection going idle is noted (ConnectionDeadlines), not given a new timer.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()  # paced: not while requests are queued or answers go unread
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self.went_idle()

    def close_idle(self) -> None:
        HttpToolsProtocol.timeout_keep_alive_handler(self)

    def shutdown(self) -> None:
        """The server is stopping (uvicorn's call). A request being answered finishes, and its connection closes
        after it, as in uvicorn. A connection between requests, or before its first, is closed only after
        ``SHUTDOWN_LINGER_S``, not at once: a request its client already sent, whose bytes are in the socket but
        not read yet, would be reset unread. One that arrives in time is answered, and its connection closed."""
        self.stopping = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
        else:
            self.loop.call_later(SHUTDOWN_LINGER_S, self._close_if_idle)

    def _close_if_idle(self) -> None:
        cycle = self.cycle
        if self.transport.is_closing() or self.head_bytes or (cycle is not None and not cycle.response_complete):
            return  # a request is arriving or being answered: it is the last, and its answer closes the connection
        self.transport.close()

    def read_timed_out(self) -> None:
        self._refuse_arriving(f"still arriving after {self.request_read_timeout:g} s (request_read_timeout_s)")

    def body_too_slow(self) -> None:
        self.too_slow = True
        self._refuse_arriving(f"arriving slower than {self.min_body_rate:g} bytes/s (min_request_body_rate_bytes_s)")

    def _refuse_arriving(self, how: str) -> None:
        if self.transport.is_closing():
            return
        client = "{}:{}".format(*self.client) if self.client else "a client"
        log.warning("%s: a request %s; closing", client, how)
        self.refuse_slow_request()

    def refuse_slow_request(self) -> None:
        """The request being read overran the read timeout: 408 where nothing else is being answered."""
        earlier, cycle = self.answering_before, self.cycle
        if earlier is not None and not earlier.response_complete:
            earlier.keep_alive = False  # its answer goes out, then the connection closes (uvicorn's own way)
            self.flow.pause_reading()
            return
        if cycle is not earlier:  # its head arrived and the ASGI app has it, waiting for the body
            if cycle.response_started:
                self.transport.close()
                return
            cycle.disconnected = True  # the app's next receive() sees the client gone, its send() nothing
            cycle.message_event.set()
        self.send_read_timeout()

    def send_read_timeout(self) -> None:
        """Answer 408 with the JSON error body, and close."""
        self.send_error_and_close(self.read_timeout_error())

    def send_error_and_close(self, error: DMSError) -> None:
        """Answer ``error``'s status with the JSON error body, and close the connection."""
        reply = Reply.of(error_response(error))
        self.transport.write(b"".join([*self._head(reply, keep_alive=False), reply.body]))
        self.transport.close()

    def _head(self, reply: Reply, keep_alive: bool) -> list[bytes]:
        """The status line and headers, ending in the blank line.

        Every header is already fit to send: a model's headers and content type are checked by the
        ``Forwarder`` (``malformed_header``), a client's ``X-Request-ID`` came through httptools, which
        refuses control characters in header values, and the rest are the server's own.
        """
        parts = [_status_line(reply.status)]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        has_length = False
        for name, value in reply.headers:
            has_length = has_length or name == b"content-length"
            parts += (name, b": ", value, b"\r\n")
        if not has_length and reply.status >= 200 and reply.status not in (204, 304):
            parts += (b"content-length: ", str(len(reply.body)).encode(), b"\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return parts

    def read_timeout_error(self) -> RequestReadTimeoutError:
        if self.too_slow:
            return RequestReadTimeoutError(too_slow_message(self.min_body_rate, self.body_rate_grace))
        return RequestReadTimeoutError(
            f"the request was still arriving when request_read_timeout_s ({self.request_read_timeout:g} s) "
            "passed: its head must arrive within it, and its body may not pause for longer"
        )


def http1_protocol(limits: ReadLimits) -> type[Http1Protocol]:
    """The HTTP/1.1 protocol class for one server (uvicorn's ``http=``), with its read limits."""
    return type("Http1Protocol", (Http1Protocol,), limits.attributes())
