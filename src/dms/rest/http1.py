"""HTTP/1.1 for the inference port, with the forwarding routes answered from the parser's callbacks.

uvicorn's httptools protocol runs every request as an ASGI task: a scope, a request-response cycle
with its event, a task, ``receive``, and two ``send`` calls that check every header again. For a
tiny request that was most of the frontend's HTTP cost (docs/performance.md). This subclass keeps
uvicorn's connection handling (parsing, keep-alive timer, flow control, graceful shutdown) and its
ASGI path for every other request, and takes the routes ``InferenceFastPath.match`` finds itself:
the body is gathered in ``on_body``, handed to the route's ``Forwarder`` in ``on_message_complete``,
and the answer is written by a callback on the model's future, in one write. The ``Forwarder``
builds the answer, so it is the same as the ASGI path's (tests/e2e/test_fast_path_parity.py).

Requests left to the ASGI path (and so to ``InferenceFastPath`` there): one that arrives while
another on the same connection is still being answered (pipelining, which uvicorn queues), one that
sends ``Expect: 100-continue``, one whose path is percent-encoded, and upgrades.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dms.dataplane.outcomes import Outcome, outcome_of
from dms.errors import DMSError, InternalError
from dms.httputil.connection_deadlines import ReadLimits
from dms.messages import ResponseItem
from dms.rest.common import refuse_declared_size, refuse_read_size
from dms.rest.fastpath import InferenceFastPath
from dms.rest.forwarding import Forwarder, Reply
from dms.rest.http1_connection import Http1Protocol

log = logging.getLogger("dms.http")


class _NoEvent:
    """What uvicorn's ``connection_lost`` sets on the request in flight; a lean request waits on no event."""

    def set(self) -> None:
        pass


class _Exchange:
    """One request the lean path took, from its headers to its answer.

    uvicorn's protocol code sees it as ``cycle`` (the request in flight on the connection) and reads
    ``response_complete`` (pipelining), ``keep_alive`` (graceful shutdown) and ``message_event``.
    """

    message_event = _NoEvent()
    __slots__ = (
        "chunks",
        "disconnected",
        "forwarder",
        "future",
        "headers",
        "keep_alive",
        "lookup",
        "name",
        "query",
        "request_id",
        "response_complete",
        "size",
        "started_ns",
        "version",
    )

    def __init__(
        self,
        forwarder: Forwarder,
        name: str,
        version: str | None,
        headers: list[tuple[str, str]],
        query: bytes,
        keep_alive: bool,
    ) -> None:
        self.forwarder = forwarder
        self.name = name
        self.version = version
        self.headers = headers
        self.lookup = dict(headers)
        self.query = query
        self.keep_alive = keep_alive
        self.request_id = ""
        self.started_ns = 0
        self.chunks: list[bytes] = []
        self.size = 0
        self.future: asyncio.Future[ResponseItem] | None = None
        self.response_complete = False
        self.disconnected = False

    def reply(self, outcome: Outcome) -> Reply:
        """Its answer for an outcome, reported to metrics and the access log (``Forwarder.conclude``)."""
        return self.forwarder.conclude(self.name, self.version, self.lookup, self.request_id, self.started_ns, outcome)


class InferenceHttpProtocol(Http1Protocol):
    """uvicorn's HTTP/1.1 protocol as every DMS port runs it (``Http1Protocol``: paced reading, idle and read
    deadlines), answering the forwarding routes without ASGI. Made per server by ``inference_protocol``,
    which sets ``fast_path`` and the read deadline."""

    fast_path: ClassVar[InferenceFastPath]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exchange: _Exchange | None = None
        """The request being read, when the lean path took it."""
        self.unanswered: _Exchange | None = None
        """The lean request not answered yet (being read, or waiting for its model)."""

    # -- parser callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        # uvicorn's scope is built only for requests that go to the ASGI app (``_asgi_headers_complete``).
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.exchange = None
        self.answering_before = self.cycle
        self.request_began()
        self.head_complete = False  # what arrives now is a head (Http1Protocol.data_received counts it)

    def on_headers_complete(self) -> None:
        self.head_arrived()
        exchange = self._take()
        if exchange is None:
            self._asgi_headers_complete()
            return
        self.exchange = self.unanswered = exchange
        self.cycle = exchange  # type: ignore[assignment]  # uvicorn reads the attributes it needs
        try:
            refusal = self.fast_path.refusal(exchange.headers)
            if refusal is not None:
                self._write(exchange, refusal)  # as on the ASGI path: refused before it counts as a request
                return
            exchange.started_ns, exchange.request_id = exchange.forwarder.arrived(exchange.lookup)
            refuse_declared_size(exchange.lookup.get("content-length"), self._max_bytes(exchange))
        except DMSError as exc:
            self._conclude(exchange, exc)
        except Exception as exc:
            self._conclude_unexpected(exchange, exc)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            super().on_body(body)
            return
        self.reading_since = self.loop.time()
        self.body_bytes += len(body)
        if exchange.response_complete:
            return  # answered early (refused); the rest of the body is read and dropped
        exchange.size += len(body)
        try:
            refuse_read_size(exchange.size, self._max_bytes(exchange))
        except DMSError as exc:
            self._conclude(exchange, exc)
            return
        exchange.chunks.append(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            super().on_message_complete()
            return
        self.reading_since = None
        if exchange.response_complete:
            return
        chunks = exchange.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        exchange.chunks = []
        try:
            future = exchange.forwarder.submit(
                exchange.name,
                exchange.version,
                exchange.headers,
                exchange.lookup,
                exchange.query,
                exchange.request_id,
                body,
            )
        except DMSError as exc:
            self._conclude(exchange, exc)
            return
        except Exception as exc:
            self._conclude_unexpected(exchange, exc)
            return
        exchange.future = future
        future.add_done_callback(functools.partial(self._on_answer, exchange))

    # -- connection events -----------------------------------------------------------------------
    def connection_lost(self, exc: Exception | None) -> None:
        exchange = self.unanswered
        if exchange is not None:
            exchange.disconnected = True
            if exchange.future is None:
                self._conclude(exchange, None)  # left while sending the body
            else:
                exchange.future.cancel()  # dropped from the model's queue; ``_on_answer`` reports it
        super().connection_lost(exc)

    def refuse_slow_request(self) -> None:
        exchange = self.exchange
        if exchange is None:
            super().refuse_slow_request()  # its head had not arrived whole, or the ASGI path has it
        elif exchange is self.unanswered and exchange.future is None:  # its body was still arriving
            exchange.keep_alive = False
            self._conclude(exchange, self.read_timeout_error())
        else:  # answered already (refused early) while the rest of its body was being read and dropped
            self.transport.close()

    # -- the lean path ---------------------------------------------------------------------------
    def _take(self) -> _Exchange | None:
        """An exchange for this request when the lean path can answer it, else None (the ASGI path will)."""
        cycle = self.cycle
        if self.expect_100_continue or self.limit_concurrency is not None or self.root_path:
            return None
        if cycle is not None and not cycle.response_complete:
            return None  # pipelined behind a request not answered yet: uvicorn queues it
        parser = self.parser
        method = parser.get_method()
        if (method != b"POST" and method != b"PUT") or parser.should_upgrade():
            return None
        try:
            url = httptools.parse_url(self.url)
            path = url.path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            return None  # uvicorn answers these as it always does
        if "%" in path:
            return None
        found = self.fast_path.match(method.decode("ascii"), path)
        if found is None:
            return None
        forwarder, name, version = found
        headers = [(key.decode("latin-1"), value.decode("latin-1")) for key, value in self.headers]
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive() and not self.stopping
        return _Exchange(forwarder, name, version, headers, url.query or b"", keep_alive)

    def _asgi_headers_complete(self) -> None:
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)  # uvicorn's scope for this request, then its ASGI path
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers
        HttpToolsProtocol.on_headers_complete(self)  # the head was looked at already (``head_arrived`` above)
        self.last_if_stopping()

    @staticmethod
    def _max_bytes(exchange: _Exchange) -> int:
        return exchange.forwarder.dataplane.settings.max_request_size_bytes

    def _on_answer(self, exchange: _Exchange, future: asyncio.Future[ResponseItem]) -> None:
        try:
            outcome = outcome_of(future, gone=exchange.disconnected)
        except Exception as exc:
            self._conclude_unexpected(exchange, exc)
            return
        self._conclude(exchange, outcome)

    def _conclude(self, exchange: _Exchange, outcome: Outcome) -> None:
        """Report the request and write its answer (unless the client has gone)."""
        try:
            reply = exchange.reply(outcome)
        except Exception as exc:
            self._conclude_unexpected(exchange, exc)
            return
        self._write(exchange, reply)

    def _conclude_unexpected(self, exchange: _Exchange, exc: BaseException) -> None:
        """A bug on the way: log it, answer 500 as the ASGI path would, and close the connection."""
        log.error("request %s to model %s failed unexpectedly", exchange.request_id, exchange.name, exc_info=exc)
        exchange.keep_alive = False
        try:
            reply = exchange.reply(InternalError(f"{type(exc).__name__} while answering the request"))
        except Exception:
            log.exception("request %s: could not even answer 500", exchange.request_id)
            self._answered(exchange)
            self.transport.close()
            return
        self._write(exchange, reply)

    def _answered(self, exchange: _Exchange) -> None:
        exchange.response_complete = True
        if self.unanswered is exchange:
            self.unanswered = None

    def _write(self, exchange: _Exchange, reply: Reply) -> None:
        self._answered(exchange)
        transport = self.transport
        if exchange.disconnected or transport.is_closing():
            return
        parts = self._head(reply, exchange.keep_alive)
        parts.append(reply.body)
        transport.write(b"".join(parts))
        if not exchange.keep_alive:
            transport.close()
        self.on_response_complete()


def inference_protocol(fast_path: InferenceFastPath, limits: ReadLimits) -> type[InferenceHttpProtocol]:
    """The HTTP/1.1 protocol class for one inference server (uvicorn's ``http=``)."""
    attributes = {"fast_path": fast_path, **limits.attributes()}
    return type("InferenceHttpProtocol", (InferenceHttpProtocol,), attributes)
