"""One gRPC client connection on uvicorn's HTTP/2 (``grpc_server = "uvicorn"``).

``GrpcH2Protocol`` is uvicorn's zttp HTTP/2 protocol with five changes:

- it sends what one loop turn writes to a connection in one socket write (``write_coalescing``), or a lean
  answer at once when no other call is in flight on its connection;
- it reads nothing more from a client while the transport holds more unsent bytes than its high-water
  mark. uvicorn read on, and zttp answers every PING and SETTINGS frame (which HTTP/2's flow control
  does not cover), so a client that sent them in a stream and never read grew the frontend by as much
  as it sent (~400 MiB in 15 s; ``tests/e2e/test_unread_answers.py``); now the kernel's socket
  buffers hold it back;
- it keeps one timer per connection rather than arming one after every call (``ConnectionDeadlines``), for
  two deadlines: an idle connection is closed, and a ``ModelInfer`` call whose request stops arriving for
  ``request_read_timeout_s`` ends with DEADLINE_EXCEEDED (uvicorn sets neither limit on a stream, so a
  client could hold calls open for ever by never ending their requests);
- it asks a client to move to a new connection before zttp's lifetime caps end this one with an error, refuses
  a stream past ``grpc_max_concurrent_streams`` and a connection past ``max_connections``;
- with a servicer (``grpc_protocol``; on unless ``inference_fast_path`` is off), it answers unary
  ``ModelInfer`` calls from the connection's events, without ASGI. The request's DATA frames are
  gathered as they arrive, the message goes to ``InferenceServicer.infer_submit`` when the stream
  ends, and a callback on the model's future writes the answer: headers, message and status
  trailers in one write (``lean_answers``). uvicorn's ASGI cycle (a scope, a task, an ``asyncio.Event``, ``receive``
  and three ``send`` calls) was the largest cost of a call in the frontend (docs/performance.md).
  A read's events are handled in one loop (``_take_events``): new streams, a lean call's DATA and end of
  request, and the frames that need nothing; uvicorn's dispatch runs only from the first event that needs
  it (a reset, a GOAWAY, an ASGI call's body). The request headers are read once for a run of calls that
  send the same ones, as a channel does (``read_call_headers``). A lean call's read deadline and early
  refusal are looked at after a read only if its request is still arriving (seldom: most come whole;
  ``request_arrival``).

Every other call (the other methods, ``ModelStreamInfer``, a request without ``te: trailers``, calls
that arrive while the connection is closing) goes through uvicorn's ASGI cycle to ``GrpcApp``, which
answers ``ModelInfer`` the same way through the same servicer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator
from typing import Any, ClassVar, cast

import grpc
import zttp
from uvicorn.protocols.http.zttp_h2_impl import FORBIDDEN_HEADERS, ZttpH2Protocol

from dms.errors import DMSError
from dms.grpc.errors import GRPC_STATUS
from dms.grpc.h2 import (
    ANSWER_HEADERS,
    CallAborted,
    CallHeaders,
    parse_timeout,
    read_call_headers,
    take_message,
)
from dms.grpc.lean_answers import LeanAnswers
from dms.grpc.lean_call import FRESH, LeanCall
from dms.grpc.request_arrival import ONE_MESSAGE, RequestArrival
from dms.grpc.servicer import SERVICE, InferenceServicer
from dms.grpc.write_coalescing import CoalescedWrites
from dms.httputil.connection_deadlines import ConnectionDeadlines, ReadLimits

log = logging.getLogger("dms.grpc")

INFER_PATH = f"/{SERVICE}/ModelInfer".encode()

_REFUSED_STREAM = 0x7
_ENHANCE_YOUR_CALM = 0xB
"""HTTP/2 error codes (RFC 9113, section 7)."""
STREAMS_PER_CONNECTION = 3840
"""New streams a connection takes before it is asked to close; zttp ends a connection with an error
(GOAWAY ENHANCE_YOUR_CALM, failing the calls in flight) once a client opened 4096 streams on it."""
RESETS_PER_CONNECTION = 192
"""Likewise for streams the client reset (zttp's cap: 256)."""


class GrpcH2Protocol(LeanAnswers, RequestArrival, ConnectionDeadlines, ZttpH2Protocol):
    """uvicorn's HTTP/2 protocol for gRPC: coalesced writes, reads paused while writes are, lifetime caps
    kept, one idle timer per connection (``ConnectionDeadlines``), and (with a servicer) ``ModelInfer`` answered
    without ASGI.
    ``grpc_protocol`` makes the class a server uses.

    zttp bounds the streams one connection may ever open, and the resets its client may send, against
    rapid-reset floods; a gRPC channel lives for many thousands of calls. Before a cap is reached this
    sends a graceful GOAWAY (NO_ERROR, naming the last stream it will answer): the client opens a new
    connection for its next calls while the calls in flight finish here, and the connection closes.
    """

    servicer: ClassVar[InferenceServicer | None] = None
    """Answers ``ModelInfer`` calls on the lean path; None sends every call to the ASGI app."""
    max_message_bytes: ClassVar[int] = 4 * 1024 * 1024
    max_concurrent_streams: ClassVar[int] = 128
    """Calls one connection may have open at once (``grpc_max_concurrent_streams``); a stream past it is reset
    with REFUSED_STREAM at once, so a client cannot make the server keep thousands of calls for it."""
    _writes: CoalescedWrites

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._streams = 0
        self._resets = 0
        self._last_stream_id = 0
        self._init_arrival()
        self._answer_headers: list[tuple[bytes, bytes]] = []
        self._other: Any = None
        """The event ``_take_events`` left to uvicorn's dispatch, while it runs."""
        self._last_headers: list[tuple[bytes, bytes]] = []
        self._last_call = CallHeaders()
        """The last lean call's request headers, and what ``read_call_headers`` made of them (read-only, shared)."""
        self._lean = self.servicer is not None and self.limit_concurrency is None and not self.root_path
        """``ModelInfer`` calls may be answered on the lean path (while the connection is not closing)."""
        self._keyed = self.servicer is not None and self.servicer.key_required("inference")
        """Lean calls need the inference key: checked from their headers, before their message is read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # An answer is three writes (headers, data, trailers): one socket write instead (write_coalescing).
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self._writes = CoalescedWrites(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(self._writes)
        defaults = [(name.lower(), value) for name, value in self.server_state.default_headers]
        self._answer_headers = [(n, v) for n, v in defaults if n not in FORBIDDEN_HEADERS] + ANSWER_HEADERS
        if not self.admitted():  # over max_connections: told to go away (ENHANCE_YOUR_CALM) before any call
            log.warning("a gRPC connection was refused: %s are open, max_connections", self.connection_budget.limit)
            self.conn.close(_ENHANCE_YOUR_CALM, 0)
            self.flush()
            self.transport.close()
            return
        self.went_idle()  # a connection that never sends a call is closed as an idle one is

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.stop_timer()
        self.released()

    def data_received(self, data: bytes) -> None:
        # uvicorn's (read, handle the events, write what zttp queued), in one method: a lean call's events are
        # taken in one loop here, and uvicorn's dispatch runs only from the first event it has to look at.
        self._unset_keepalive_if_required()  # busy (ConnectionDeadlines)
        try:
            self.conn.receive_data(data)
            other = self._take_events()
            if other is not None:
                self._other = other
                self.handle_events()  # uvicorn's, over ``events``: ``other``, then the rest of this read
        except zttp.RemoteProtocolError as exc:
            self.logger.warning("Invalid HTTP/2 frame received: %s", exc)
            self.flush()
            self.transport.close()
            return
        self.flush()
        self._after_read()
        if not self.cycles and not self.transport.is_closing():  # frames of no stream (PING, SETTINGS, ...)
            self.went_idle()

    def _take_events(self) -> Any:
        """Handle this read's events up to the first that uvicorn's dispatch must see (returned; None: all done).

        New streams go to ``handle_request`` (as uvicorn's dispatch would send them); a lean call's DATA and end
        of request are taken here (uvicorn's dispatch would test the event's kind, then set the call's event to
        have it looked at); SETTINGS, PING and WINDOW_UPDATE need nothing (zttp answers and applies them, and
        ``flush`` writes what they release).
        """
        next_event: Callable[[], Any] = self.conn.next_event
        cycles: dict[int, Any] = self.cycles
        while (event := next_event()) is not zttp.NEED_DATA:
            kind = type(event)
            if kind is zttp.Request:
                self.handle_request(event)
            elif kind is zttp.Data or kind is zttp.EndOfMessage:
                unary = cycles.get(event.stream_id)
                if type(unary) is not LeanCall:
                    return event
                if unary.response_complete:
                    continue
                if kind is zttp.EndOfMessage:
                    self._received(unary)
                    self._take_request(unary)
                else:
                    unary.buffer += event.data
                    if unary.heard != FRESH:
                        unary.heard = FRESH
                        self._fresh.append(unary)
            elif kind is not zttp.WindowUpdate and kind is not zttp.Settings and kind is not zttp.Ping:
                return event
        return None

    def events(self) -> Generator[zttp.Event]:
        """What uvicorn's dispatch (``handle_events``) handles of a read: the event ``_take_events`` stopped at, then
        each next one it stops at."""
        event, self._other = self._other, None
        while event is not None:
            yield event
            event = self._take_events()

    def on_stream_closed(self) -> None:
        # uvicorn's, except that the connection going idle is noted (ConnectionDeadlines), not given a new timer.
        if self.transport.is_closing():
            return
        self.resume_reading_if_idle()
        if not self.cycles:
            if self.shutdown_requested:
                self._close_connection()
                return
            self.went_idle()

    def close_idle(self) -> None:
        ZttpH2Protocol.timeout_keep_alive_handler(self)

    def pause_writing(self) -> None:
        """The transport holds more unsent bytes than its high-water mark: the client is not reading."""
        super().pause_writing()
        self.flow.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.resume_reading_if_idle()

    def resume_reading_if_idle(self) -> None:
        # uvicorn's (no stream's body over its buffer limit), and the client reading what is sent to it. Called
        # as each call ends: uvicorn's looks at every stream's body, so only when reading is paused.
        if self.flow.read_paused and not self.flow.write_paused:
            super().resume_reading_if_idle()

    def handle_request(self, event: Any) -> None:
        stream_id = event.stream_id
        if len(self.cycles) >= self.max_concurrent_streams:  # refused before anything is kept for it
            self.conn.stream(stream_id).reset(_REFUSED_STREAM)
            return
        unary = self._take(event)
        if unary is None:
            super().handle_request(event)
        else:
            self.cycles[stream_id] = unary  # uvicorn reads what it needs of a cycle
        self._streams += 1
        if stream_id > self._last_stream_id:
            self._last_stream_id = stream_id
        if self._streams >= STREAMS_PER_CONNECTION:
            self._retire()
        if unary is not None:
            try:
                if self._keyed:
                    cast(InferenceServicer, self.servicer).authorize(unary.headers.metadata, "inference")
                if unary.headers.timeout:
                    seconds = parse_timeout(unary.headers.timeout.decode("latin-1"))
                    unary.timer = self.loop.call_later(seconds, self._expire, unary)
            except CallAborted as exc:
                self._finish(unary, exc.code, exc.details)
                return
            except DMSError as exc:  # no key, or a wrong one: refused before any of its message is read
                self._finish(unary, GRPC_STATUS[exc.kind], exc.message)
                return
            if event.end_stream:
                self._take_request(unary)
            else:
                self._began_arriving(unary)

    def handle_rst_stream(self, event: Any) -> None:
        super().handle_rst_stream(event)
        self._resets += 1
        if self._resets >= RESETS_PER_CONNECTION:
            self._retire()

    def _retire(self) -> None:
        if self.shutdown_requested or self.transport.is_closing():
            return
        self.shutdown_requested = True
        self.conn.close(0, self._last_stream_id)
        self.flush()
        if not self.cycles:
            self._close_connection()

    # -- the lean ModelInfer path --------------------------------------------------------------------
    def _take(self, event: Any) -> LeanCall | None:
        """A lean call for this request when it is a plain unary ``ModelInfer``, else None (ASGI answers it)."""
        if not self._lean or self.shutdown_requested:
            return None
        if event.path != INFER_PATH or event.method != b"POST":
            return None
        headers = event.headers  # HTTP/2 names come lower-case (zttp resets a stream whose names do not)
        if type(headers) is not list:
            headers = headers.to_list()
        if headers == self._last_headers:  # a channel sends the same headers call after call, most often
            call = self._last_call
        else:
            call = self._last_call = read_call_headers(headers)
            self._last_headers = headers
        if not call.content_type.startswith(b"application/grpc") or call.te != b"trailers":
            return None
        return LeanCall(event.stream_id, call, self._abandon)

    def _take_request(self, unary: LeanCall) -> None:
        """The request ended: its one message goes to the model."""
        buffer = unary.buffer
        try:
            payload = take_message(buffer, self.max_message_bytes, unary.headers.encoding)
            if payload is None:
                details = "the request ended inside a message" if buffer else "ModelInfer takes a request message"
                raise CallAborted(grpc.StatusCode.INTERNAL, details)
            if buffer:
                raise CallAborted(grpc.StatusCode.INTERNAL, ONE_MESSAGE)
        except CallAborted as exc:
            self._finish(unary, exc.code, exc.details)
            return
        self._submit(unary, payload)


def grpc_protocol(
    servicer: InferenceServicer | None,
    max_message_bytes: int,
    limits: ReadLimits | None = None,
    max_concurrent_streams: int = 128,
) -> type[GrpcH2Protocol]:
    """The HTTP/2 protocol class for one gRPC server (uvicorn's ``http=``); None: every call goes to ASGI."""
    attributes = {
        "servicer": servicer,
        "max_message_bytes": max_message_bytes,
        "max_concurrent_streams": max_concurrent_streams,
        **(limits or ReadLimits()).attributes(),
    }
    return type("GrpcH2Protocol", (GrpcH2Protocol,), attributes)
