"""Lean ``ModelInfer`` calls whose requests are still arriving on a gRPC connection.

Most requests come whole in one read and never count here. One that spans reads is counted as
arriving from its head to its end (``_began_arriving`` / ``_received``). After each read that brought it
bytes (``_still_arriving``) it is timed (``heard``) and refused early if its buffer already shows a
message over the limit or a second message; the connection's one timer (``ConnectionDeadlines``) is
due by its read deadline. When the timer fires, each call whose request brought nothing for
``request_read_timeout_s``, or (with a floor, ``min_body_rate``) whose bytes since it began no longer cover
the time at that rate once ``body_rate_grace`` has passed, ends with DEADLINE_EXCEEDED and its stream is
reset (``_sweep``). Time in which the connection does not read (the client is not reading its answers)
is not held against a call's rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, ClassVar

import grpc
import zttp
from uvicorn.protocols.http.flow_control import FlowControl

from dms.grpc.h2 import CallAborted, declared_length, slow_request, stalled_request
from dms.grpc.lean_call import FRESH, LeanCall
from dms.httputil.connection_deadlines import too_slow_at

log = logging.getLogger("dms.grpc")

ONE_MESSAGE = "ModelInfer takes exactly one request message"


class RequestArrival:
    """Mixed into ``GrpcH2Protocol`` before ``ConnectionDeadlines``; the protocol gives the connection's state
    and ``_finish`` (answer a call with a status)."""

    loop: asyncio.AbstractEventLoop
    cycles: dict[int, Any]
    conn: zttp.H2Connection
    max_message_bytes: ClassVar[int]
    request_read_timeout: ClassVar[float]
    reading_since: float | None
    min_body_rate: ClassVar[float]
    body_rate_grace: ClassVar[float]
    flow: FlowControl
    timeout_keep_alive_task: asyncio.TimerHandle | None
    _timer_due: float

    def _init_arrival(self) -> None:
        self._receiving = 0
        """Lean calls whose requests are still arriving."""
        self._fresh: list[LeanCall] = []
        """Lean calls whose requests began or brought bytes in the read being handled (``heard`` is FRESH)."""

    def _began_arriving(self, unary: LeanCall) -> None:
        """The call's head came without the end of its request: the rest is awaited."""
        unary.receiving = True
        self._receiving += 1
        unary.heard = FRESH
        self._fresh.append(unary)

    def _after_read(self) -> None:
        """A read was handled: calls still arriving are timed and looked at; with none, nothing is."""
        if self._receiving:
            self._still_arriving()
        if not self._receiving:  # the usual case: a call comes whole in one read
            self._fresh.clear()
            self.reading_since = None

    def _still_arriving(self) -> None:
        """Each call whose request began or brought bytes in the read and goes on is heard now, and refused
        early for a message over the limit or a second message; the timer is due by their read deadline."""
        fresh, self._fresh = self._fresh, []
        now = self.loop.time()
        for unary in fresh:
            unary.heard = now
            if not unary.receiving or unary.response_complete:
                continue
            if not unary.began:  # its first read: with a floor, the timer looks at it by the end of its grace
                unary.began = now
                due = now + self.body_rate_grace
                if self.min_body_rate and (self.timeout_keep_alive_task is None or self._timer_due > due):
                    self._wake_by(due)
            buffer = unary.buffer
            try:
                length = declared_length(buffer, self.max_message_bytes)
                if length is not None and len(buffer) > 5 + length:
                    raise CallAborted(grpc.StatusCode.INTERNAL, ONE_MESSAGE)
            except CallAborted as exc:
                self._finish(unary, exc.code, exc.details)
        if self._receiving and self.reading_since is None:
            self.request_began()  # the connection's timer is due by this call's read deadline at the latest

    def _received(self, unary: LeanCall) -> None:
        """The call's request ended, or the call did: it no longer counts as arriving."""
        if unary.receiving:
            unary.receiving = False
            self._receiving -= 1

    def read_timed_out(self) -> None:
        self._sweep()

    def body_too_slow(self) -> None:
        self._sweep()

    def _too_slow_at(self) -> float | None:
        """The soonest a call's request stops keeping up with ``min_body_rate``; None with no floor or no call."""
        if not self.min_body_rate:
            return None
        now, earliest = self.loop.time(), None
        for cycle in self.cycles.values():
            if type(cycle) is LeanCall and cycle.receiving:
                at = self._call_too_slow_at(cycle, now)
                earliest = at if earliest is None else min(earliest, at)
        return earliest

    def _call_too_slow_at(self, unary: LeanCall, now: float) -> float:
        # While the connection is not reading (its client cannot send), the call's rate counts afresh from now.
        if self.flow.read_paused or not unary.began:
            unary.began, unary.began_bytes = now, len(unary.buffer)
        return too_slow_at(unary.began, len(unary.buffer) - unary.began_bytes, self.min_body_rate, self.body_rate_grace)

    def _sweep(self) -> None:
        """The connection's timer found a call's deadline passed: each call whose request brought nothing for
        ``request_read_timeout_s``, or arrived slower than the floor, ends with DEADLINE_EXCEEDED and a reset
        of its stream (RFC 9113 8.1: the answer is complete, the rest of the request is not wanted). The
        connection serves on; the timer comes round by the next deadline of the calls still arriving."""
        now, limit = self.loop.time(), self.request_read_timeout
        earliest: float | None = None
        due: float | None = None
        for cycle in list(self.cycles.values()):
            if not isinstance(cycle, LeanCall) or not cycle.receiving:
                continue
            slow_at = self._call_too_slow_at(cycle, now) if self.min_body_rate else None
            if cycle.heard + limit <= now:
                ended, why = stalled_request(limit), "stopped arriving"
            elif slow_at is not None and slow_at <= now:
                ended, why = slow_request(self.min_body_rate, self.body_rate_grace), "arrived too slowly"
            else:
                earliest = cycle.heard if earliest is None else min(earliest, cycle.heard)
                next_look = cycle.heard + limit if slow_at is None else min(cycle.heard + limit, slow_at)
                due = next_look if due is None else min(due, next_look)
                continue
            log.warning("gRPC call ModelInfer on stream %d: its request %s; ended", cycle.stream_id, why)
            self._finish(cycle, ended.code, ended.details)
            with contextlib.suppress(zttp.LocalProtocolError):  # the stream is already closed
                self.conn.stream(cycle.stream_id).reset(0)  # NO_ERROR
            self.flush()
        self.reading_since = earliest
        if due is not None:  # else the connection is idle (went_idle armed the timer) or busy answering
            self._wake_by(due)

    if TYPE_CHECKING:  # given by the protocol (``_finish``), ConnectionDeadlines and uvicorn's protocol

        def _finish(self, unary: LeanCall, code: grpc.StatusCode, details: str, answer: bytes = b"") -> None: ...
        def flush(self) -> None: ...
        def request_began(self) -> None: ...
        def _wake_by(self, due: float) -> None: ...
