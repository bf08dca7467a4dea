"""One gRPC client connection: an ``asyncio.Protocol`` over zttp's sans-IO HTTP/2 (``zttp.H2Connection``, through
its documented API), with the call rules of ``dms.grpc.call_core`` and the answering of ``dms.grpc.answering``.

- A read's frames are handled in one loop: a new stream becomes a call (refused with REFUSED_STREAM past
  ``grpc_max_concurrent_streams``; its key checked and its ``grpc-timeout`` armed from its headers, before any of
  its message is read); DATA gathers into the call (a unary call is refused as soon as its message passes the
  limit or a second begins; a stream's whole messages go to its task); the end of a unary request hands its one
  message to be answered. zttp answers PING and SETTINGS itself.
- What a loop turn writes to the connection leaves in one socket write (``write_coalescing``), or at once for the
  answer of a connection's only call.
- It reads nothing more while the transport holds more unsent bytes than its high-water mark (a client that
  does not read what it is sent, PING acknowledgements included: ``tests/e2e/test_unread_answers.py``), or
  while a stream's requests wait unread by its task past ``STREAM_READ_AHEAD``. A stream's task writes no more
  while its client's window holds it back (``StreamWindows``), and gives it up after ``stream_stall_timeout_s``.
- One timer per connection: an idle connection is closed (with a GOAWAY) after its idle timeout; a unary call
  whose request stops arriving for ``request_read_timeout_s``, or arrives slower than the body-rate floor once
  its grace has passed, ends with DEADLINE_EXCEEDED and a reset of its stream, and the connection serves on.
- zttp bounds the streams a connection may ever open, and the resets its client may send; before a cap is
  reached a graceful GOAWAY names the last stream answered, the calls in flight finish, and the connection
  closes. A connection past ``max_connections`` is sent GOAWAY ENHANCE_YOUR_CALM at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
import zttp

from dms.errors import DMSError
from dms.grpc.answer_writer import NO_ERROR, AnswerWriter
from dms.grpc.answering import CallAnswers
from dms.grpc.call_core import CallAborted, CallHeaders, GrpcCall, parse_timeout, read_call_headers
from dms.grpc.errors import GRPC_STATUS
from dms.grpc.write_coalescing import CoalescedWrites, StreamWindows
from dms.httputil.port import WriteFlow

if TYPE_CHECKING:
    from dms.grpc.server import GrpcServer

log = logging.getLogger("dms.grpc")

REFUSED_STREAM, ENHANCE_YOUR_CALM = 0x7, 0xB
"""HTTP/2 error codes (RFC 9113, section 7)."""
STREAMS_PER_CONNECTION = 3840
"""New streams a connection takes before it is asked to close; zttp ends a connection with an error
(GOAWAY ENHANCE_YOUR_CALM, failing the calls in flight) once a client opened 4096 streams on it."""
RESETS_PER_CONNECTION = 192
"""Likewise for streams the client reset (zttp's cap: 256)."""
STREAM_READ_AHEAD = 128
"""Requests of one streaming call read and not yet taken by its task, at most, before the connection pauses."""


class GrpcConnection(asyncio.Protocol):
    """One client connection (see the module's docstring)."""

    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.conn = zttp.Connection(zttp.SERVER, protocol=zttp.HTTP2)
        self.answers = CallAnswers(self, server.servicer, server.tasks)
        self.calls: dict[int, GrpcCall] = {}
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.writes: CoalescedWrites = None  # type: ignore[assignment]
        self.writer: AnswerWriter = None  # type: ignore[assignment]
        self.opened = self.resets = self.last_stream_id = 0
        self.closing = False
        """A GOAWAY was sent: the connection closes once its calls are done. The calls its client sent before it
        saw the GOAWAY are still answered (a retired connection's), unless the server is ``stopping``."""
        self.stopping = False
        self.read_paused = False
        self.flow = WriteFlow()
        self.windows = StreamWindows(self.conn)
        self.arriving: list[GrpcCall] = []
        """Unary calls whose requests are still arriving (held to the read deadlines)."""
        self.fresh: list[GrpcCall] = []
        """Calls whose requests brought bytes in the read being handled."""
        self.idle_since: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_due = 0.0
        self.last_headers: Any = None
        self.last_call = CallHeaders()
        """The last call's request headers and what ``read_call_headers`` made of them (a channel sends the same)."""

    # -- asyncio's calls -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not asyncio's class
        self.writes = CoalescedWrites(self.transport, self.loop)
        self.writer = AnswerWriter(self.conn, self.writes)
        if not self.server.admit(self):
            budget = self.server.budget
            log.warning("a gRPC connection was refused: %s are open, max_connections", budget.limit)
            self.conn.close(ENHANCE_YOUR_CALM, 0)
            self.transport.write(self.conn.data_to_send())
            self.transport.close()
            return
        self.conn.initiate_connection()
        self.flush()
        self._went_idle()

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        try:
            self.conn.receive_data(data)
            self._handle_events()
        except zttp.ProtocolError as exc:
            log.warning("a gRPC connection broke HTTP/2 (%s); closing", exc)
            self.flush()
            self.close()
            return
        self.flush()
        if self.fresh:
            self._heard()
        if not self.calls and not self.closing:
            self._went_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.server.release(self)
        for call in list(self.calls.values()):
            self.answers.abandon(call)
        self.flow.wake()
        self.windows.opened()

    def pause_writing(self) -> None:
        self.flow.pause()
        self._pause_reading()

    def resume_writing(self) -> None:
        self.flow.resume()
        self._resume_reading()

    # -- the frames of a read --------------------------------------------------------------------
    def _handle_events(self) -> None:
        next_event: Callable[[], Any] = self.conn.next_event  # (``type(event) is`` is what mypy cannot narrow)
        calls = self.calls
        while (event := next_event()) is not zttp.NEED_DATA:
            kind = type(event)
            if kind is zttp.Data:
                call = calls.get(event.stream_id)
                if call is not None and not call.finished:
                    call.buffer += event.data
                    self.fresh.append(call)
            elif kind is zttp.EndOfMessage:
                call = calls.get(event.stream_id)
                if call is not None:
                    self._request_ended(call)
            elif kind is zttp.Request:
                self._begin(event)
            elif kind is zttp.RstStream:
                self._reset(event.stream_id)
                self.windows.opened()
            elif kind is zttp.WindowUpdate:
                self.windows.opened()
            elif kind is zttp.GoAway:
                self.shutdown()  # the client is leaving: its calls in flight finish
            elif kind is zttp.ConnectionClosed:
                self.close()
                return

    def _begin(self, event: Any) -> None:
        stream_id = event.stream_id
        if self.stopping or len(self.calls) >= self.server.max_concurrent_streams:
            self.conn.stream(stream_id).reset(REFUSED_STREAM)  # refused before anything is kept for it
            return
        self.opened += 1
        self.last_stream_id = max(self.last_stream_id, stream_id)
        headers = event.headers  # HTTP/2 names come lower-case (zttp resets a stream whose names do not)
        if type(headers) is not list:
            headers = headers.to_list()
        if headers != self.last_headers:
            self.last_call = read_call_headers(headers)
            self.last_headers = headers
        path: bytes = event.path
        method = self.server.methods.get(path)
        call = self.calls[stream_id] = GrpcCall(stream_id, self.last_call, method)
        if self.opened >= STREAMS_PER_CONNECTION:
            self._retire()
        if event.method != b"POST" or not call.headers.content_type.startswith(b"application/grpc"):
            self._forget(call)
            self.writer.not_grpc(call)
            return
        try:
            if method is None:
                raise CallAborted(grpc.StatusCode.UNIMPLEMENTED, f"method {path.decode('latin-1')} is not served here")
            if method.authorize is not None:
                method.authorize(call.headers.metadata)  # before any of its message is read or inflated
            if call.headers.timeout:
                seconds = parse_timeout(call.headers.timeout.decode("latin-1"))
                call.timer = self.loop.call_later(seconds, self.answers.expire, call)
        except CallAborted as exc:
            self.finish(call, exc.code, exc.details)
            return
        except DMSError as exc:
            self.finish(call, GRPC_STATUS[exc.kind], exc.message)
            return
        if method.streaming:
            self.answers.stream(call)
        if event.end_stream:
            self._request_ended(call)
        elif not method.streaming:
            call.receiving = True
            self.arriving.append(call)
            self.fresh.append(call)

    def _request_ended(self, call: GrpcCall) -> None:
        call.ended = True
        if call.receiving:
            call.receiving = False
            self.arriving.remove(call)
        if call.finished:
            return
        try:
            if call.inbox is not None:
                self._to_stream(call)
                call.inbox.put_nowait(None)
            else:
                self.answers.unary(call, call.unary_message(self.server.max_message_bytes))
        except CallAborted as exc:
            self.finish(call, exc.code, exc.details)

    def _heard(self) -> None:
        """After a read: the calls it brought bytes to are heard now; a unary one still arriving is refused as soon
        as it carries too much, and a stream's whole messages go to its task."""
        fresh, self.fresh = self.fresh, []
        now = self.loop.time()
        for call in fresh:
            if call.finished:
                continue
            try:
                if call.inbox is not None:
                    self._to_stream(call)
                elif call.receiving:
                    call.heard = now
                    if not call.began:  # its first read: its rate counts from now, with what it brought
                        call.began = now
                    call.check_arriving(self.server.max_message_bytes)
            except CallAborted as exc:
                self.finish(call, exc.code, exc.details)
        if self.arriving:
            self._arm(min(call.heard for call in self.arriving) + self.server.first_look)

    def _to_stream(self, call: GrpcCall) -> None:
        inbox = call.inbox
        assert inbox is not None
        for message in call.stream_messages(self.server.max_message_bytes):
            inbox.put_nowait(message)
        if inbox.qsize() > STREAM_READ_AHEAD:
            self._pause_reading()  # its task reads again (``stream_read``)

    def stream_read(self, call: GrpcCall) -> None:
        """A stream's task took a request: the connection reads on when no stream has too many waiting."""
        if self.read_paused and call.inbox is not None and call.inbox.qsize() <= STREAM_READ_AHEAD:
            self._resume_reading()

    def _reset(self, stream_id: int) -> None:
        call = self.calls.get(stream_id)
        if call is not None:
            self.answers.abandon(call)
        self.resets += 1
        if self.resets >= RESETS_PER_CONNECTION:
            self._retire()

    # -- writing answers -------------------------------------------------------------------------
    def send_message(self, call: GrpcCall, message: bytes) -> None:
        """One message of a streaming call's answer (its headers first)."""
        if not (call.finished or call.gone or self.transport.is_closing()):
            self.writer.message(call, message)

    async def drain(self, call: GrpcCall) -> None:
        """Wait while the client reads ``call``'s answer slower than it is written (``StreamWindows``)."""
        await self.flow.drain(self.transport)
        await self.windows.drain(call, self.transport)

    def finish(
        self, call: GrpcCall, code: grpc.StatusCode, details: str, message: bytes | None = None, reset: bool = False
    ) -> None:
        """End the call: its message (a unary call's, when OK) and its status, in one write; with ``reset``, its
        request, still arriving, is reset too (RFC 9113 8.1: the answer is complete, the rest is not wanted)."""
        if call.finished:
            return
        self._forget(call)
        if call.gone or self.transport.is_closing():
            self._after_call()
            return
        self.writer.status(call, code, details, message, reset, alone=not self.calls)
        self._after_call()

    def _forget(self, call: GrpcCall) -> None:
        call.finished = True
        self.calls.pop(call.stream_id, None)
        if call.receiving:
            call.receiving = False
            self.arriving.remove(call)
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None

    def _after_call(self) -> None:
        if self.calls or self.transport.is_closing():
            return
        if self.closing:
            self.close()
        else:
            self._went_idle()

    def flush(self) -> None:
        if data := self.conn.data_to_send():
            self.writes.write(data)

    # -- reading paced -----------------------------------------------------------------------------
    def _pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if not self.read_paused or self.flow.paused or self.transport.is_closing():
            return
        if any(c.inbox is not None and c.inbox.qsize() > STREAM_READ_AHEAD for c in self.calls.values()):
            return
        self.read_paused = False
        now = self.loop.time()
        for call in self.arriving:  # its client could not send meanwhile: held to the deadlines afresh
            call.heard, call.began, call.began_bytes = now, now, len(call.buffer)
        with contextlib.suppress(RuntimeError):
            self.transport.resume_reading()

    # -- the timer -------------------------------------------------------------------------------
    def _went_idle(self) -> None:
        now = self.idle_since = self.loop.time()
        due = now + self.server.idle_timeout_s
        if self.timer is None or self.timer_due > due:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self.timer is not None:
            if self.timer_due <= due:
                return
            self.timer.cancel()
        self.timer_due = due
        self.timer = self.loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.idle_since is not None and not self.calls:
            if self.idle_since + self.server.idle_timeout_s <= now:
                self.conn.close(NO_ERROR, self.last_stream_id)
                self.flush()
                self.close()
                return
            self._arm(self.idle_since + self.server.idle_timeout_s)
            return
        due: float | None = None
        for call in list(self.arriving):
            ended, next_look = call.overdue(now, self.server.limits, self.read_paused)
            if ended is not None:
                log.warning(
                    "gRPC call %s on stream %d: its request %s; ended", call.name, call.stream_id, ended.details
                )
                self.finish(call, ended.code, ended.details, reset=True)
            else:
                due = next_look if due is None else min(due, next_look)
        if due is not None:
            self._arm(due)

    # -- the connection's end --------------------------------------------------------------------
    def _retire(self) -> None:
        """Ask the client to move to a new connection: the calls in flight finish here, then it closes."""
        if self.closing or self.transport.is_closing():
            return
        self.closing = True
        self.conn.close(NO_ERROR, self.last_stream_id)
        self.flush()

    def shutdown(self) -> None:
        """The server is stopping (or the client said GOAWAY): the calls in flight finish, then it closes."""
        self.stopping = True
        self._retire()
        if not self.calls:
            self.close()

    def close(self) -> None:
        if not self.transport.is_closing():
            self.writes.flush()
            self.transport.close()
