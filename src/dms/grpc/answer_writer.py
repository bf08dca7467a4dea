"""How a gRPC connection's answers go onto its HTTP/2 stream (``dms.grpc.connection``): headers once, messages,
status trailers, through zttp's stream API, into the connection's coalesced writes."""

from __future__ import annotations

import contextlib
import logging

import grpc
import zttp

from dms.grpc.call_core import ANSWER_HEADERS, GrpcCall, frame, status_trailers
from dms.grpc.write_coalescing import CoalescedWrites

log = logging.getLogger("dms.grpc")

NO_ERROR = 0x0
"""HTTP/2's error code for a reset that is no error (RFC 9113, section 7)."""
_OK = grpc.StatusCode.OK
_OK_TRAILERS = status_trailers(_OK, "")


class AnswerWriter:
    def __init__(self, conn: zttp.H2Connection, writes: CoalescedWrites) -> None:
        self.conn = conn
        self.writes = writes

    def message(self, call: GrpcCall, message: bytes) -> None:
        """One message of a streamed answer, its headers first."""
        try:
            stream = self.conn.stream(call.stream_id)
            if not call.started:
                call.started = True
                stream.send_response(200, ANSWER_HEADERS)
            stream.send_data(frame(message))
        except zttp.LocalProtocolError as exc:
            log.warning("gRPC call %s on stream %d could not be answered: %s", call.name, call.stream_id, exc)
        self.writes.write(self.conn.data_to_send())

    def status(
        self, call: GrpcCall, code: grpc.StatusCode, details: str, message: bytes | None, reset: bool, alone: bool
    ) -> None:
        """The call's last message (a unary answer, when OK) and its status, in one write (at once when the call was
        its connection's ``alone``, else with what the loop turn writes); with ``reset``, its request, still
        arriving, is reset too (RFC 9113 8.1: the answer is complete, the rest is not wanted)."""
        try:
            stream = self.conn.stream(call.stream_id)
            if not call.started:
                stream.send_response(200, ANSWER_HEADERS)
            if code is _OK:
                if message is not None:
                    stream.send_data(frame(message))
                stream.end_message(_OK_TRAILERS)
            else:
                stream.end_message(status_trailers(code, details))
            if reset and not call.ended:
                stream.reset(NO_ERROR)
        except zttp.LocalProtocolError as exc:  # the stream cannot take an answer now: it ends with a reset
            log.warning("gRPC call %s on stream %d could not be answered: %s", call.name, call.stream_id, exc)
        if alone:
            self.writes.write_now(self.conn.data_to_send())
        else:
            self.writes.write(self.conn.data_to_send())

    def drop(self, call: GrpcCall) -> None:
        """Reset a call's stream whose client does not read its answer: what flow control holds of it is dropped."""
        with contextlib.suppress(zttp.LocalProtocolError):
            self.conn.stream(call.stream_id).reset()
        self.writes.write(self.conn.data_to_send())

    def not_grpc(self, call: GrpcCall) -> None:
        """Not a gRPC request (another method or content type): 415 in plain text, as a gRPC server answers."""
        with contextlib.suppress(zttp.LocalProtocolError):
            stream = self.conn.stream(call.stream_id)
            stream.send_response(415, [(b"content-type", b"text/plain")])
            stream.send_data(b"this port speaks gRPC: POST with content-type application/grpc\n")
            stream.end_message()
        self.writes.write(self.conn.data_to_send())
