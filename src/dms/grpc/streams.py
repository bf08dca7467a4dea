"""A bidirectional stream's requests answered in order, and how a stream ends: the Open Inference Protocol's
``ModelStreamInfer`` (``InferenceServicer.model_stream_infer``) and TorchServe's ``StreamPredictions2``
(``dms.grpc.torchserve_inference``), each described by a ``StreamMessages``.

Each request goes to its model as it is read; its answer is sent when every answer before it has been.
The stream ends when its client ends it or leaves (the requests it sent and that are not answered yet are
withdrawn from their models), at its first message that is not a request of its protocol (INVALID_ARGUMENT),
and when it has brought nothing for ``grpc_stream_idle_timeout_s`` with nothing in flight (DEADLINE_EXCEEDED).
At most ``STREAM_IN_FLIGHT`` requests wait for their answers: past that, no more is read until one is sent,
so a client that sends without reading is held back by HTTP/2's flow control.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import DecodeError

from dms._generated import inference_pb2 as pb
from dms.errors import DMSError, InputError, RequestTimeoutError
from dms.observability.request_ids import new_request_id
from dms.oip.protobuf_wire import length_delimited

_T = TypeVar("_T")
Infer = Callable[[bytes, Any, str], Awaitable[tuple[bytes, int]]]
"""One request to its model: (serialized request, its routing fields, request id) -> (serialized answer, batch size)."""


@dataclass(frozen=True, slots=True)
class StreamMessages:
    """What a protocol's stream messages are: how a request's routing fields are read, and how an answer and a
    request's own failure are written."""

    routing: Callable[[bytes], tuple[Any, str]]
    """A serialized request's routing fields and request id; raises ``DecodeError`` when it is not a request."""
    answer: Callable[[Any, bytes], bytes]
    """The stream message around a request's serialized answer, from its routing fields."""
    failure: Callable[[Any, DMSError], bytes]
    """The stream message that tells a request's own failure (the stream goes on)."""
    request_name: str


def _oip_routing(payload: bytes) -> tuple[Any, str]:
    routing = pb.ModelInferRequestRouting.FromString(payload)
    return routing, str(routing.id or new_request_id())


OIP_STREAM = StreamMessages(
    routing=_oip_routing,
    answer=lambda routing, answer: stream_answer(answer),
    failure=lambda routing, exc: pb.ModelStreamInferResponse(error_message=exc.message).SerializeToString(),
    request_name="ModelInferRequest",
)

STREAM_IN_FLIGHT = 64
"""Requests of one ``ModelStreamInfer`` stream read and not yet answered, at most: the stream is read no
further until one is (so a client that sends without reading answers is held back by HTTP/2 flow control)."""


def stream_idle_error(idle_s: float) -> RequestTimeoutError:
    """How a stream that brought nothing for ``grpc_stream_idle_timeout_s`` ends (DEADLINE_EXCEEDED)."""
    return RequestTimeoutError(
        f"the stream sent no request for {idle_s:g} s with none in flight (grpc_stream_idle_timeout_s)"
    )


async def _unless_ended(awaited: asyncio.Future[_T], reader: asyncio.Future[None], timeout_s: float | None) -> _T:
    """``awaited``'s result; but the exception that ended ``reader`` if it ends the stream first (the client gone,
    a bad message), and ``TimeoutError`` after ``timeout_s``. ``awaited`` is cancelled if its result is not taken
    (a request's own future is cancelled that way when its client leaves)."""
    try:
        if not reader.done():
            await asyncio.wait((awaited, reader), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if not awaited.done():
            failure = reader.exception() if reader.done() else None
            if failure is not None:
                raise failure
            if reader.done():  # every request read: only this one is left to wait for
                await asyncio.wait((awaited,), timeout=timeout_s)
            if not awaited.done():
                raise TimeoutError
        return awaited.result()
    finally:
        if not awaited.done():
            awaited.cancel()


def stream_answer(infer_response: bytes) -> bytes:
    """A serialized ModelStreamInferResponse around a serialized ModelInferResponse (field 2)."""
    return length_delimited(2, infer_response)


async def answer_stream(
    requests: AsyncIterator[bytes], infer: Infer, idle_s: float, messages: StreamMessages = OIP_STREAM
) -> AsyncIterator[bytes]:
    """Each request's answer (serialized; for the Open Inference Protocol a ``ModelStreamInferResponse``), in
    order; a request's own error is told in its answer (``messages.failure``). Raises the ``DMSError`` that ends
    the stream, and what ended ``requests``."""
    Pending = tuple[Any, asyncio.Future[tuple[bytes, int]]]
    pending: asyncio.Queue[Pending | None] = asyncio.Queue(maxsize=STREAM_IN_FLIGHT)

    async def read_all() -> None:
        """Read the requests, each handed to its model as it comes; raises what ends the stream (the client
        gone, a message that is not a request)."""
        async for payload in requests:
            try:
                routing, request_id = messages.routing(payload)
            except DecodeError:
                raise InputError(f"a message of the stream is not a {messages.request_name}") from None
            await pending.put((routing, asyncio.ensure_future(infer(payload, routing, request_id))))
        await pending.put(None)

    reader = asyncio.ensure_future(read_all())
    try:
        while True:
            try:
                next_one = await _unless_ended(asyncio.ensure_future(pending.get()), reader, idle_s)
            except TimeoutError:
                raise stream_idle_error(idle_s) from None
            if next_one is None:
                return
            routing, task = next_one
            try:
                answer, _ = await _unless_ended(task, reader, None)
                yield messages.answer(routing, answer)
            except DMSError as exc:
                if reader.done() and reader.exception() is exc:
                    raise
                yield messages.failure(routing, exc)
    finally:
        reader.cancel()
        while not pending.empty():  # requests read and not answered: their clients are gone
            left = pending.get_nowait()
            if left is not None:
                left[1].cancel()
