"""HTTP/1.1 without sockets: bytes in, whole requests out, and the bytes of their answers.

``Http1Wire`` is one connection's protocol state. It parses what the client sent with httptools (through
its documented callbacks), keeps every limit on how a request arrives, and turns answers into bytes; it
never touches a socket or the event loop, so a test drives it by feeding bytes and reading a clock it
gives. Its owner (``dms.rest.http1_server.Http1Connection``) moves bytes and runs the requests.

The rules it owns, each written here once:

- **Head size.** A request whose head passes ``max_header_bytes`` is refused with ``431``: while it is still
  arriving, the moment the reads it came in pass the limit (httptools gathers a header in memory until it
  ends, so a head that never ends is caught by the bytes that brought it); as it ends, by its size as parsed
  (request target and headers with their separators), looked at only when those reads could hold more.
  One with more than ``max_header_count`` headers is refused as its head ends (the size limit bounds how
  many can arrive). Either closes the connection: nothing more is read.
- **Body size.** A body declared larger than ``max_body_bytes``, or growing past it, is refused with ``413``
  as a request of its own (answered in turn); the rest of it is read and dropped, so the client, still
  sending, sees the answer rather than a reset, and the connection goes on.
- **Deadlines** (one clock per connection; its owner keeps one timer on ``deadline()``). An idle connection
  (no request arriving or being answered) is closed after ``idle_timeout_s``. A request's head must arrive
  within ``read_timeout_s`` of its first byte and its body may not pause longer than that; with a body-rate
  floor, a request must also average ``min_body_rate`` bytes a second from its first byte once
  ``body_rate_grace_s`` has passed. Time the owner was not reading (``reading_paused``) is not held against
  a request. Overruns are ``408`` with a closed connection.
- **The connection's last request.** (The answers' bytes are ``dms.httputil.http1_framing``'s.) A request is the
  connection's last when its client says so, it is HTTP/1.0 without keep-alive, it asks for an upgrade, or
  the server is stopping. A malformed request is ``400`` naming what the parser found, and the connection
  closes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum
from typing import Protocol
from urllib.parse import unquote

import httptools

from dms.errors import DMSError, HeadersTooLargeError, InputError, PayloadTooLargeError, RequestReadTimeoutError
from dms.httputil.connection_deadlines import ReadLimits, too_slow_at, too_slow_message

HEAD_LINE_SLACK = 16
"""Bytes of a head besides its target and headers: method, version and line ends, at most."""


class Expiry(Enum):
    """Which of the connection's deadlines passed."""

    IDLE = "idle"
    READ_TIMEOUT = "read timeout"
    TOO_SLOW = "too slow"


class WireRequest:
    """One request as its client sent it: method, target, headers (names in lower case) and whole body."""

    __slots__ = (
        "answered_early",
        "body",
        "chunks",
        "denied",
        "expect_continue",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query",
        "raw_path",
        "refusal",
        "size",
    )

    def __init__(self) -> None:
        self.method = ""
        self.path = ""
        """Percent-decoded (ASGI's ``path``)."""
        self.raw_path = b""
        self.query = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.http_version = "1.1"
        self.keep_alive = True
        self.expect_continue = False
        self.body = b""
        self.chunks: list[bytes] = []
        self.size = 0
        self.refusal: DMSError | None = None
        """Why it is refused (its body is too large, it stopped arriving, its key is wrong): it is answered this
        way, never run, as soon as it is its turn; the rest of its body is read and dropped."""
        self.denied = False
        """Refused before it counts as a request (its key)."""
        self.answered_early = False
        """Its refusal was answered before it arrived whole."""

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class WireOwner(Protocol):
    """What the connection holding an ``Http1Wire`` is told."""

    def head_arrived(self, request: WireRequest) -> None:
        """A request's head is parsed (its body may follow): the time to send ``100 Continue``."""

    def refused_early(self, request: WireRequest) -> None:
        """The request being read got a ``refusal`` (its body grew too large): it may be answered now."""

    def request_arrived(self, request: WireRequest) -> None:
        """A request arrived whole (or was refused: ``request.refusal``); it is answered in turn."""

    def wire_refused(self, error: DMSError) -> None:
        """The connection broke a rule that ends it (head too large, malformed): answer ``error`` and close."""


class _Stop(Exception):
    """Raised from a parser callback to stop parsing (the refusal is already recorded)."""


class Http1Wire:
    """One HTTP/1.1 server connection's protocol state (see the module's docstring)."""

    def __init__(
        self,
        owner: WireOwner,
        limits: ReadLimits,
        idle_timeout_s: float,
        max_body_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.owner = owner
        self.limits = limits
        self.idle_timeout_s = idle_timeout_s
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self.parser = httptools.HttpRequestParser(self)
        self.request: WireRequest | None = None
        """The request being read, from its first byte to its last."""
        self.url = b""
        self.head_bytes = 0
        self.read_bytes = 0
        self.head_complete = True
        self.refused: DMSError | None = None
        self.stopping = False
        """The server is stopping: the request being read, or the next to come, is the connection's last."""
        self.closed = False
        """The wire refused the connection, or a request was its last: nothing more is parsed."""
        # The clock: when the connection went idle (None: busy), when the request being read began or last
        # brought bytes (None: none is arriving), and, with a body-rate floor, its start and bytes so far.
        self.idle_since: float | None = clock()
        self.reading_since: float | None = None
        self.request_since: float | None = None
        self.body_bytes = 0
        self.paused = False
        rate = limits.min_body_rate
        self.first_look = min(limits.timeout_s, limits.body_rate_grace_s) if rate else limits.timeout_s

    # -- bytes in --------------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Parse what arrived; the owner hears of each head and whole request as it is parsed."""
        if self.closed:
            return
        self.idle_since = None
        self.read_bytes = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.closed = True  # the upgrade's request was the last (``on_message_complete``); no protocol follows
            return
        except httptools.HttpParserError as exc:
            if self.closed:
                return  # bytes after the connection's last request: not read
            self.closed = True
            self.owner.wire_refused(self.refused or InputError(f"malformed HTTP request: {exc}"))
            return
        if not self.head_complete:
            # An upper bound of the bytes of a head still arriving: every read it came in, whole.
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_header_bytes:
                self.closed = True
                self.owner.wire_refused(HeadersTooLargeError(self._head_too_large()))

    def _head_too_large(self) -> str:
        return f"the request's head passed max_header_bytes ({self.limits.max_header_bytes} bytes)"

    def on_message_begin(self) -> None:
        if self.closed:
            raise _Stop  # nothing after the connection's last request is read
        self.request = WireRequest()
        self.url = b""
        self.head_bytes = 0
        self.head_complete = False
        now = self.clock()
        self.reading_since = now
        if self.limits.min_body_rate:
            self.request_since, self.body_bytes = now, 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.request
        assert request is not None
        request.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        request = self.request
        assert request is not None
        self.head_complete = True
        limits = self.limits
        if len(request.headers) > limits.max_header_count:  # (the size limit bounds how many can arrive)
            count = limits.max_header_count
            self.refused = HeadersTooLargeError(f"the request has more than max_header_count ({count}) headers")
            raise _Stop
        if self.head_bytes + self.read_bytes > limits.max_header_bytes:  # the reads it came in could hold more
            size = len(self.url) + HEAD_LINE_SLACK + sum(len(k) + len(v) + 4 for k, v in request.headers)
            if size > limits.max_header_bytes:
                self.refused = HeadersTooLargeError(self._head_too_large())
                raise _Stop
        parser = self.parser
        request.method = parser.get_method().decode("ascii")
        request.http_version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive() and not self.stopping
        url = self.url
        if url[:1] == b"/":  # origin form (the usual), split by hand: httptools' parse_url costs more
            path, _, request.query = url.partition(b"?")
            path = path.partition(b"#")[0]
        else:
            parsed = httptools.parse_url(url)
            path, request.query = parsed.path or b"/", parsed.query or b""
        request.raw_path = path
        text = path.decode("latin-1")
        request.path = unquote(text) if "%" in text else text
        for name, value in request.headers:
            if name == b"content-length":
                declared = value.decode("latin-1")
                if declared.isdigit() and int(declared) > self.max_body_bytes:
                    request.refusal = self._too_large(f"of {declared} bytes ")
            elif name == b"expect" and value.lower() == b"100-continue":
                request.expect_continue = True
        self.owner.head_arrived(request)

    def _too_large(self, size: str) -> PayloadTooLargeError:
        return PayloadTooLargeError(f"request body {size}is over max_request_size_bytes ({self.max_body_bytes})")

    def on_body(self, body: bytes) -> None:
        request = self.request
        assert request is not None
        self.reading_since = self.clock()
        self.body_bytes += len(body)
        if request.refusal is not None:
            return  # refused: the rest is read and dropped
        request.size += len(body)
        if request.size > self.max_body_bytes:
            request.refusal = self._too_large("")
            request.chunks = []
            self.owner.refused_early(request)
            return
        request.chunks.append(body)

    def on_message_complete(self) -> None:
        request = self.request
        assert request is not None
        self.request = None
        self.reading_since = self.request_since = None
        chunks = request.chunks
        request.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        request.chunks = []
        if self.parser.should_upgrade():
            request.keep_alive = False
        if not request.keep_alive:
            self.closed = True
        self.owner.request_arrived(request)

    # -- the clock -------------------------------------------------------------------------------
    def went_idle(self) -> float | None:
        """Every request is answered: unless one is arriving, the idle deadline runs from now (and is returned)."""
        if self.reading_since is not None:
            return None
        now = self.idle_since = self.clock()
        return now + self.idle_timeout_s

    def reading_paused(self) -> None:
        self.paused = True

    def reading_resumed(self) -> None:
        """The owner reads again: a request arriving is held to its deadlines afresh, as its client could not send."""
        self.paused = False
        if self.reading_since is not None:
            now = self.clock()
            self.reading_since = now
            if self.request_since is not None:
                self.request_since, self.body_bytes = now, 0

    def arriving(self) -> bool:
        """Some of a request has arrived and not all of it."""
        return self.reading_since is not None

    def deadline(self) -> float | None:
        """When to look again (``expired``); None: no deadline runs (a request is being answered)."""
        if self.reading_since is not None:
            if self.paused:
                return None
            due = self.reading_since + self.limits.timeout_s
            if self.request_since is not None:
                due = min(due, self._too_slow_at(self.request_since))
            return due
        if self.idle_since is not None:
            return self.idle_since + self.idle_timeout_s
        return None

    def first_deadline(self) -> float | None:
        """As ``deadline``, but for a request just begun: its first look (the sooner of timeout and grace)."""
        if self.reading_since is not None and not self.paused:
            return self.reading_since + self.first_look
        return self.deadline()

    def _too_slow_at(self, since: float) -> float:
        return too_slow_at(since, self.body_bytes, self.limits.min_body_rate, self.limits.body_rate_grace_s)

    def expired(self) -> Expiry | None:
        """The deadline that has passed, if one has."""
        now = self.clock()
        if self.reading_since is not None:
            if self.paused:
                return None
            if self.reading_since + self.limits.timeout_s <= now:
                return Expiry.READ_TIMEOUT
            if self.request_since is not None and self._too_slow_at(self.request_since) <= now:
                return Expiry.TOO_SLOW
            return None
        if self.idle_since is not None and self.idle_since + self.idle_timeout_s <= now:
            return Expiry.IDLE
        return None

    def read_timeout_error(self, expiry: Expiry) -> RequestReadTimeoutError:
        limits = self.limits
        if expiry is Expiry.TOO_SLOW:
            return RequestReadTimeoutError(too_slow_message(limits.min_body_rate, limits.body_rate_grace_s))
        return RequestReadTimeoutError(
            f"the request was still arriving when request_read_timeout_s ({limits.timeout_s:g} s) "
            "passed: its head must arrive within it, and its body may not pause for longer"
        )

    def stop_taking(self) -> None:
        """The server is stopping: a request arriving now is the connection's last, and none after it is read."""
        if self.request is not None and self.head_complete:
            self.request.keep_alive = False
        self.stopping = True
