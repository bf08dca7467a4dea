"""How a gRPC connection answers the ``ModelInfer`` calls it takes itself (``GrpcH2Protocol``'s lean path).

A call whose request has ended goes to the servicer in its three steps (``infer_arrived``, ``infer_submit``,
``infer_concluded``): the model's future answers it from a callback, with its headers, message and status
trailers written in one go (``_finish``). A call may also end by its ``grpc-timeout`` (``_expire``) or its
client's reset (``_abandon``), and a bug on the way ends it as INTERNAL (``_fail``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any, ClassVar, cast

import grpc
import zttp

from dms.dataplane.outcomes import Outcome, outcome_of
from dms.errors import DMSError, InternalError, RequestTimeoutError
from dms.grpc.h2 import frame, status_trailers
from dms.grpc.lean_call import LeanCall
from dms.grpc.servicer import InferCall, InferenceServicer
from dms.grpc.write_coalescing import CoalescedWrites
from dms.messages import ResponseItem

log = logging.getLogger("dms.grpc")

_OK = grpc.StatusCode.OK
_OK_TRAILERS = status_trailers(_OK, "")


class LeanAnswers:
    """Mixed into ``GrpcH2Protocol`` first; the protocol gives the connection's state, ``_received``
    (``RequestArrival``) and uvicorn's ``on_response_complete``."""

    servicer: ClassVar[InferenceServicer | None]
    cycles: dict[int, Any]
    conn: zttp.H2Connection
    transport: asyncio.Transport
    _writes: CoalescedWrites
    _answer_headers: list[tuple[bytes, bytes]]

    def _submit(self, unary: LeanCall, payload: bytes) -> None:
        servicer = cast(InferenceServicer, self.servicer)
        try:
            unary.call = call = servicer.infer_arrived(payload, unary.headers.metadata)
        except Exception as exc:
            self._fail(unary, exc)
            return
        try:
            future = servicer.infer_submit(call, payload, unary.headers.metadata)
        except DMSError as exc:
            self._conclude(unary, exc)
            return
        except Exception as exc:
            self._fail(unary, exc)
            return
        unary.future = future
        future.add_done_callback(functools.partial(self._on_answer, unary))

    def _on_answer(self, unary: LeanCall, future: asyncio.Future[ResponseItem]) -> None:
        outcome: Outcome
        if unary.expired and future.cancelled():
            outcome = RequestTimeoutError("deadline exceeded")
        else:
            try:
                outcome = outcome_of(future, gone=unary.disconnected)
            except Exception as exc:
                self._fail(unary, exc)
                return
        self._conclude(unary, outcome)

    def _conclude(self, unary: LeanCall, outcome: Outcome) -> None:
        """Report the call (``infer_concluded``) and answer it."""
        call, unary.call = unary.call, None
        servicer = cast(InferenceServicer, self.servicer)
        try:
            code, details, answer = servicer.infer_concluded(cast(InferCall, call), outcome)
        except Exception as exc:
            self._fail(unary, exc)
            return
        self._finish(unary, code, details, answer)

    def _fail(self, unary: LeanCall, exc: BaseException) -> None:
        """A bug on the way: log it; a call counted in flight ends as INTERNAL, one not counted with UNKNOWN."""
        log.error("gRPC call ModelInfer failed", exc_info=exc)
        details = f"{type(exc).__name__}: {exc}"
        if unary.call is not None:
            self._conclude(unary, InternalError(details))
        else:
            self._finish(unary, grpc.StatusCode.UNKNOWN, details)

    def _expire(self, unary: LeanCall) -> None:
        """The call's ``grpc-timeout`` ran out."""
        unary.timer = None
        if unary.response_complete:
            return
        if unary.future is None:
            self._finish(unary, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        else:
            unary.expired = True
            unary.future.cancel()  # dropped from the model's queue; ``_on_answer`` reports and answers it

    def _abandon(self, unary: LeanCall) -> None:
        """uvicorn saw the client reset the stream or leave: nothing is sent; a call with its model is cancelled."""
        if unary.response_complete or not unary.disconnected:
            return
        if unary.future is not None:
            unary.future.cancel()  # ``_on_answer`` reports it as cancelled
            return
        unary.response_complete = True
        self._received(unary)
        if unary.timer is not None:
            unary.timer.cancel()

    def _finish(self, unary: LeanCall, code: grpc.StatusCode, details: str, answer: bytes = b"") -> None:
        """Write the call's answer (the message when OK) and its status, in one write; then close the stream."""
        unary.response_complete = True
        self._received(unary)
        if unary.timer is not None:
            unary.timer.cancel()
        if unary.disconnected or self.transport.is_closing():
            return
        try:
            stream = self.conn.stream(unary.stream_id)
            stream.send_response(200, self._answer_headers)
            if code is _OK:
                stream.send_data(frame(answer))
                stream.end_message(_OK_TRAILERS)
            else:
                stream.end_message(status_trailers(code, details))
        except zttp.LocalProtocolError as exc:  # the stream cannot take an answer now: it ends with a reset
            log.warning("gRPC call ModelInfer on stream %d could not be answered: %s", unary.stream_id, exc)
        if len(self.cycles) > 1:  # other calls may be answered in this turn: one socket write for all
            self._writes.write(self.conn.data_to_send())
        else:
            self._writes.write_now(self.conn.data_to_send())
        self.on_response_complete(unary.stream_id)

    if TYPE_CHECKING:  # given by RequestArrival and uvicorn's protocol

        def _received(self, unary: LeanCall) -> None: ...
        def on_response_complete(self, stream_id: int) -> None: ...
