"""Every DMS HTTP port's connections: an ``asyncio.Protocol`` moving bytes between a socket and the sans-IO
``Http1Wire`` (``dms.httputil.http1_wire``), and handing each whole request to the port's ``CallRouter``
(``dms.rest.calls``), which answers it from a model or through the port's ASGI app.

A connection answers its requests in the order they came, one at a time. It reads on only while it is ready
for more: a request that arrived whole behind one being answered pauses reading until its turn, and so does
a transport holding more unsent bytes than its high-water mark (a client that does not read its answers),
so the kernel's socket buffers, not the server's memory, hold back a client that sends and never reads
(``tests/e2e/test_unread_answers.py``). One timer per connection follows the wire's deadlines.

``Http1Server`` runs one port: it accepts connections (a TCP socket or, for a frontend's control API, a Unix
socket), holds the process's connection budget (``max_connections``: one over it is answered 503 and closed),
and stops gracefully: a request being answered finishes and its connection closes after it; a connection
between requests may still bring one for ``LINGER_S``; connections the kernel had accepted but
nobody had taken are served too; what is left after the grace period is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from dms.errors import DMSError, ServerBusyError
from dms.httputil.connection_deadlines import ConnectionBudget, ReadLimits
from dms.httputil.http1_framing import CONTINUE, ServerDate, encode_head
from dms.httputil.http1_wire import Expiry, Http1Wire, WireRequest
from dms.httputil.port import LINGER_S, Port, WriteFlow
from dms.rest.errors import error_response
from dms.rest.exchange import Exchange
from dms.rest.forwarding import Reply

if TYPE_CHECKING:
    from dms.rest.calls import CallRouter

log = logging.getLogger("dms.http")
IDLE_TIMEOUT_S = 5.0
"""How long a connection may sit between requests (or before its first) before it is closed."""


class Http1Connection(asyncio.Protocol):
    """One client connection (see the module's docstring)."""

    def __init__(self, server: Http1Server) -> None:
        self.server = server
        self.router = server.router
        self.date = server.date
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.wire = Http1Wire(self, server.limits, server.idle_timeout_s, server.max_body_bytes, self.loop.time)
        self.queue: deque[Exchange] = deque()
        """Requests arrived whole and not answered yet; the first is being answered."""
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self.read_paused = False
        self.flow = WriteFlow()
        self.continue_owed: WireRequest | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_due = 0.0

    # -- asyncio's calls -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not asyncio's class
        self.client = _address(transport.get_extra_info("peername"))
        self.local = _address(transport.get_extra_info("sockname"))
        if not self.server.admit(self):
            budget = self.server.budget
            log.warning("a connection was refused: %s are open, max_connections", budget.limit)
            error = ServerBusyError(
                f"the server has max_connections ({budget.limit}) connections open; try again shortly"
            )
            self.refuse(error)
            return
        self._arm(self.wire.deadline())

    def data_received(self, data: bytes) -> None:
        wire = self.wire
        wire.receive(data)
        since = wire.reading_since
        if since is not None and (self.timer is None or self.timer_due > since + wire.first_look):
            self._arm(wire.first_deadline())  # a request began: its first look is sooner than the timer

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.server.release(self)
        for exchange in self.queue:
            exchange.gone = True
            if exchange.on_gone is not None:
                exchange.on_gone()
        self.flow.wake()

    def pause_writing(self) -> None:
        self.flow.pause()
        self._pause_reading()

    def resume_writing(self) -> None:
        self.flow.resume()
        if self.queue and not self.queue[0].running:
            self._run(self.queue[0])  # it waited for the client to read the answers before it
        self._resume_reading()

    async def drain(self) -> None:
        """Wait until the transport takes writes again (a streamed answer's flow control)."""
        await self.flow.drain(self.transport)

    # -- the wire's calls ------------------------------------------------------------------------
    def head_arrived(self, request: WireRequest) -> None:
        if request.refusal is None:
            denial = self.router.denial(request.path, request.headers)
            if denial is not None:
                request.refusal, request.denied = denial, True
        if request.refusal is not None:
            self.refused_early(request)
        elif request.expect_continue:
            if self.queue:
                self.continue_owed = request  # sent when the requests before it are answered
            else:
                self.transport.write(CONTINUE)

    def refused_early(self, request: WireRequest) -> None:
        """Answer a refused request before its body is in (dropped as it comes), unless others wait before it."""
        if self.queue:
            return  # answered in its turn, once it arrived whole
        request.answered_early = True
        if request.expect_continue:
            request.keep_alive = False  # its client waits for 100 Continue, and will send no body
        exchange = Exchange(self, request)
        self.queue.append(exchange)
        self._run(exchange)

    def request_arrived(self, request: WireRequest) -> None:
        if request.answered_early:
            return
        exchange = Exchange(self, request)
        self.queue.append(exchange)
        if len(self.queue) == 1:
            self._run(exchange)
        else:
            self._pause_reading()  # one waits its turn: read no further until it comes

    def wire_refused(self, error: DMSError) -> None:
        client = "{}:{}".format(*self.client) if self.client else "a client"
        log.warning("%s: %s; closing", client, error.message)
        if self.queue:  # answer what came before, then close
            self.queue[-1].keep_alive = False
            self._pause_reading()
            return
        self.refuse(error)

    # -- answers ---------------------------------------------------------------------------------
    def _run(self, exchange: Exchange) -> None:
        exchange.running = True
        try:
            self.router.run(exchange)
        except Exception:
            log.exception("%s %s failed unexpectedly", exchange.request.method, exchange.request.path)
            exchange.keep_alive = False
            if not exchange.started:
                from dms.errors import InternalError

                exchange.reply(Reply.of(error_response(InternalError("the request could not be answered"))))

    def write_reply(self, exchange: Exchange, reply: Reply) -> None:
        if not exchange.gone and not self.transport.is_closing():
            body = reply.body
            parts = encode_head(reply.status, reply.headers, self.date(), exchange.keep_alive, len(body))
            if exchange.request.method != "HEAD":
                parts.append(body)
            self.transport.write(b"".join(parts))
        self.answered(exchange)

    def write(self, exchange: Exchange, parts: list[bytes]) -> None:
        if not exchange.gone and not self.transport.is_closing():
            self.transport.write(b"".join(parts))

    def answered(self, exchange: Exchange) -> None:
        """``exchange``'s answer is written: close after it if it was the last, else take the next request."""
        if not self.queue or self.queue[0] is not exchange:
            return  # already done (the connection closed under it)
        self.queue.popleft()
        self.server.answered += 1
        if not exchange.keep_alive:
            self.queue.clear()
            self.close()
            return
        if self.transport.is_closing():
            return
        owed = self.continue_owed
        if self.queue:
            if not self.flow.paused:  # else the next runs once the client reads (``resume_writing``)
                self._run(self.queue[0])
                self._resume_reading()  # when the one now answered was the last waiting
            return
        if owed is not None:
            self.continue_owed = None
            if owed is self.wire.request:
                self.transport.write(CONTINUE)
        if self.read_paused:
            self._resume_reading()
        due = self.wire.went_idle()
        if due is not None and (self.timer is None or self.timer_due > due):
            self._arm(due)

    def refuse(self, error: DMSError) -> None:
        """Answer ``error`` with the JSON error body, and close."""
        reply = Reply.of(error_response(error))
        if not self.transport.is_closing():
            head = encode_head(reply.status, reply.headers, self.date(), False, len(reply.body))
            self.transport.write(b"".join([*head, reply.body]))
        self.close()

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection now, with whatever it still had to send."""
        self.transport.abort()

    # -- reading paced -----------------------------------------------------------------------------
    def _pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.wire.reading_paused()
            with contextlib.suppress(RuntimeError):  # a closed transport
                self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and not self.flow.paused and len(self.queue) <= 1 and not self.wire.closed:
            self.read_paused = False
            self.wire.reading_resumed()
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()
            due = self.wire.deadline()
            if due is not None and (self.timer is None or self.timer_due > due):
                self._arm(due)

    # -- the deadlines ---------------------------------------------------------------------------
    def _arm(self, due: float | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if due is not None:
            self.timer_due = due
            self.timer = self.loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        expiry = self.wire.expired()
        if expiry is Expiry.IDLE:
            self.close()
        elif expiry is not None:
            self._read_timed_out(expiry)
        else:
            self._arm(self.wire.deadline())

    def _read_timed_out(self, expiry: Expiry) -> None:
        """The request arriving overran a read deadline: 408, and the connection closes; an answer in progress
        goes out first (and then the connection closes), one whose head is in is answered by its route."""
        wire = self.wire
        client = "{}:{}".format(*self.client) if self.client else "a client"
        log.warning("%s: a request %s; closing", client, _how(expiry, wire.limits))
        request = wire.request if wire.head_complete else None
        wire.closed = True  # nothing more is read
        wire.reading_since = None
        self._pause_reading()
        if self.queue:
            self.queue[-1].keep_alive = False
        elif request is not None and not request.answered_early:
            request.refusal, request.keep_alive = wire.read_timeout_error(expiry), False
            self.refused_early(request)
        else:
            self.refuse(wire.read_timeout_error(expiry))

    # -- stopping ----------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """The server is stopping: the request being answered, or one arriving within ``LINGER_S``, is
        the connection's last. (A request already sent but not read yet would be reset unread by closing now.)"""
        self.wire.stop_taking()
        if self.queue:
            self.queue[0].keep_alive = False
        else:
            self.loop.call_later(LINGER_S, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if not self.queue and not self.wire.arriving():
            self.close()


def _how(expiry: Expiry, limits: ReadLimits) -> str:
    if expiry is Expiry.TOO_SLOW:
        return f"arriving slower than {limits.min_body_rate:g} bytes/s (min_request_body_rate_bytes_s)"
    return f"still arriving after {limits.timeout_s:g} s (request_read_timeout_s)"


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None


class Http1Server(Port):
    """One HTTP port (see the module's docstring and ``dms.httputil.port``)."""

    def __init__(
        self,
        router: CallRouter,
        limits: ReadLimits,
        max_body_bytes: int,
        budget: ConnectionBudget | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        super().__init__(budget or limits.connections)
        self.router = router
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_s = idle_timeout_s
        self.date = ServerDate()
        self.answered = 0

    def connection(self) -> Http1Connection:
        return Http1Connection(self)

    def cancel_work(self) -> None:
        self.router.cancel_calls()
