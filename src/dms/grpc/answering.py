"""How a gRPC connection's calls are answered, once the connection has read what each needs
(``dms.grpc.connection``).

- **``ModelInfer``**, the hot one, in the servicer's three steps (``infer_arrived``, ``infer_submit``,
  ``infer_concluded``) as soon as its one message is in: the model's future answers it from a callback, with
  headers, message and status written in one go; no task.
- **Any other unary call**: a task runs its handler on the decoded message, and its answer or failure is
  written the same way.
- **A streaming call** (``ModelStreamInfer``): a task from its head on, fed its requests as they arrive
  (``GrpcCall.inbox``), writing each answer as it comes and waiting while the client reads slower than it is
  written.

A call may also end by its ``grpc-timeout`` (``expire``) or its client's reset (``abandon``); a bug on the way
ends it as INTERNAL (``ModelInfer``, counted) or UNKNOWN (the rest), logged. How any failure becomes a status
is ``call_core.status_of``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from dms.dataplane.outcomes import Outcome, outcome_of
from dms.errors import DMSError, InternalError, RequestTimeoutError
from dms.grpc.call_core import CallContext, ClientGone, GrpcCall, decode_request, encode_answer, status_of
from dms.grpc.servicer import InferenceServicer
from dms.messages import ResponseItem

if TYPE_CHECKING:
    from dms.grpc.connection import GrpcConnection

log = logging.getLogger("dms.grpc")
INFER = "ModelInfer"


class CallAnswers:
    """One connection's way of answering its calls (see the module's docstring)."""

    def __init__(self, connection: GrpcConnection, servicer: InferenceServicer, tasks: set[asyncio.Task[None]]) -> None:
        self.connection = connection
        self.servicer = servicer
        self.tasks = tasks
        """The port's call tasks (cancelled when it stops)."""

    def _task(self, call: GrpcCall, work: Any) -> None:
        call.task = task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- a unary call's one message is in ------------------------------------------------------------
    def unary(self, call: GrpcCall, payload: bytes) -> None:
        if call.name == INFER:
            self._infer(call, payload)
        else:
            self._task(call, self._run_unary(call, payload))

    def _infer(self, call: GrpcCall, payload: bytes) -> None:
        servicer = self.servicer
        metadata = call.headers.metadata
        try:
            call.infer = servicer.infer_arrived(payload, metadata)
        except Exception as exc:
            self._failed(call, exc)
            return
        try:
            future = servicer.infer_submit(call.infer, payload, metadata)
        except DMSError as exc:
            self._conclude(call, exc)
            return
        except Exception as exc:
            self._failed(call, exc)
            return
        call.future = future
        future.add_done_callback(lambda done: self._answered(call, done))

    def _answered(self, call: GrpcCall, future: asyncio.Future[ResponseItem]) -> None:
        outcome: Outcome
        if call.expired and future.cancelled():
            outcome = RequestTimeoutError("deadline exceeded")
        else:
            try:
                outcome = outcome_of(future, gone=call.gone)
            except Exception as exc:
                self._failed(call, exc)
                return
        self._conclude(call, outcome)

    def _conclude(self, call: GrpcCall, outcome: Outcome) -> None:
        """Report the call (``infer_concluded``) and answer it."""
        infer, call.infer = call.infer, None
        if infer is None:
            return
        try:
            code, details, answer = self.servicer.infer_concluded(infer, outcome)
        except Exception as exc:
            self._failed(call, exc)
            return
        self.connection.finish(call, code, details, answer)

    def _failed(self, call: GrpcCall, exc: BaseException) -> None:
        """A bug on the way: a call counted in flight ends as INTERNAL (counted), one not counted as UNKNOWN."""
        log.error("gRPC call %s failed", call.name, exc_info=exc)
        details = f"{type(exc).__name__}: {exc}"
        if call.infer is not None:
            self._conclude(call, InternalError(details))
        else:
            self.connection.finish(call, grpc.StatusCode.UNKNOWN, details)

    async def _run_unary(self, call: GrpcCall, payload: bytes) -> None:
        method = call.method
        assert method is not None
        try:
            context = CallContext(tuple(call.headers.metadata.items()))
            answer = await method.handler(decode_request(method, payload), context)
            message = encode_answer(method, answer)
        except asyncio.CancelledError:
            self.connection.finish(call, grpc.StatusCode.CANCELLED, "the call was cancelled")
            raise
        except Exception as exc:
            code, details = status_of(exc, method.name)
            self.connection.finish(call, code, details)
            return
        self.connection.finish(call, grpc.StatusCode.OK, "", message)

    # -- a streaming call ----------------------------------------------------------------------------
    def stream(self, call: GrpcCall) -> None:
        call.inbox = asyncio.Queue()
        self._task(call, self._run_stream(call))

    async def _requests(self, call: GrpcCall) -> AsyncIterator[Any]:
        method, inbox = call.method, call.inbox
        assert method is not None and inbox is not None
        while True:
            payload = await inbox.get()
            self.connection.stream_read(call)
            if payload is None:
                if call.gone:
                    raise ClientGone
                return
            yield decode_request(method, payload)

    async def _run_stream(self, call: GrpcCall) -> None:
        method = call.method
        assert method is not None
        connection = self.connection
        try:
            context = CallContext(tuple(call.headers.metadata.items()))
            stall_s = self.servicer.dataplane.settings.stream_stall_timeout_s
            async with contextlib.aclosing(method.handler(self._requests(call), context)) as answers:
                async for answer in answers:
                    connection.send_message(call, encode_answer(method, answer))
                    try:
                        async with asyncio.timeout(stall_s):
                            await connection.drain(call)
                    except TimeoutError:  # its models stop as ``answers`` closes
                        details = f"the client took none of the answer for {stall_s:g} s (stream_stall_timeout_s)"
                        connection.finish(call, grpc.StatusCode.DEADLINE_EXCEEDED, details)
                        connection.writer.drop(call)
                        return
        except ClientGone:
            return
        except asyncio.CancelledError:
            connection.finish(call, grpc.StatusCode.CANCELLED, "the call was cancelled")
            raise
        except Exception as exc:
            code, details = status_of(exc, method.name)
            connection.finish(call, code, details)
            return
        connection.finish(call, grpc.StatusCode.OK, "")

    # -- a call ending early ---------------------------------------------------------------------------
    def expire(self, call: GrpcCall) -> None:
        """The call's ``grpc-timeout`` ran out."""
        call.timer = None
        if call.finished:
            return
        if call.future is not None:
            call.expired = True
            call.future.cancel()  # dropped from the model's queue; ``_answered`` reports and answers it
            return
        if call.task is not None:
            call.task.cancel()
            call.task = None
        self.connection.finish(call, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")

    def abandon(self, call: GrpcCall) -> None:
        """The client reset the stream or left: nothing more is sent, and what the call waits for is cancelled."""
        call.gone = True
        if call.future is not None:
            call.future.cancel()  # ``_answered`` reports it as cancelled
        elif call.inbox is not None:
            call.inbox.put_nowait(None)
        elif call.task is not None:
            call.task.cancel()
        if call.future is None:
            self.connection.finish(call, grpc.StatusCode.CANCELLED, "the client left")
