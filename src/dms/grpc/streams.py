"""A bidirectional stream's requests answered in order, and how a stream ends: the Open Inference Protocol's
``ModelStreamInfer`` (``InferenceServicer.model_stream_infer``) and TorchServe's ``StreamPredictions2``
(``dms.grpc.torchserve_inference``), each described by a ``StreamMessages``.

Each request goes to its model as it is read; its answers are sent when every answer before them has been: a
request may have none, one or several (a model that streams, ``dms.worker.tensor_streams``).
The stream ends when its client ends it or leaves (the requests it sent and that are not answered yet are
withdrawn from their models), at its first message that is not a request of its protocol (INVALID_ARGUMENT),
and when it has brought nothing for ``grpc_stream_idle_timeout_s`` with nothing in flight (DEADLINE_EXCEEDED).
At most ``STREAM_IN_FLIGHT`` requests wait for their answers: past that, no more is read until one is sent,
so a client that sends without reading is held back by HTTP/2's flow control.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import DecodeError

from dms._generated import inference_pb2 as pb
from dms.errors import DMSError, InputError, RequestTimeoutError
from dms.observability.request_ids import new_request_id
from dms.oip.grpc_codec import empty_final_response
from dms.oip.protobuf_wire import length_delimited

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Replies:
    """What one request of a stream is answered with: its stream messages as they come, and the work that makes
    them (cancelled when they will not be read)."""

    messages: AsyncGenerator[bytes, None]
    work: asyncio.Future[Any]


Start = Callable[[bytes, Any, str], Replies]
"""One request handed to its model: (serialized request, its routing fields, request id) -> its replies. Raises
the ``DMSError`` of a request that cannot go (told in its answer; the stream goes on)."""


def one_reply(work: Awaitable[tuple[bytes, int]], answer: Callable[[bytes], bytes]) -> Replies:
    """The replies of a request answered once: ``answer`` around the body ``work`` comes to."""
    task = asyncio.ensure_future(work)

    async def messages() -> AsyncGenerator[bytes, None]:
        body, _ = await task
        yield answer(body)

    return Replies(messages(), task)


@dataclass(frozen=True, slots=True)
class StreamMessages:
    """What a protocol's stream messages are: how a request's routing fields are read, and how a request's own
    failure is written (its answers are its ``Replies``)."""

    routing: Callable[[bytes], tuple[Any, str]]
    """A serialized request's routing fields and request id; raises ``DecodeError`` when it is not a request."""
    failure: Callable[[Any, DMSError], bytes]
    """The stream message that tells a request's own failure (the stream goes on)."""
    request_name: str


def _oip_routing(payload: bytes) -> tuple[Any, str]:
    routing = pb.ModelInferRequestRouting.FromString(payload)
    return routing, str(routing.id or new_request_id())


def _oip_failure(routing: Any, exc: DMSError) -> bytes:
    """A request's failure, as Triton tells it: the error, and its request's final response (empty)."""
    error: bytes = pb.ModelStreamInferResponse(error_message=exc.message).SerializeToString()
    return error + stream_answer(empty_final_response(routing.model_name, routing.model_version, routing.id))


OIP_STREAM = StreamMessages(
    routing=_oip_routing,
    failure=_oip_failure,
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
    requests: AsyncIterator[bytes], start: Start, idle_s: float, messages: StreamMessages = OIP_STREAM
) -> AsyncIterator[bytes]:
    """Each request's answers (serialized stream messages: for the Open Inference Protocol
    ``ModelStreamInferResponse``), in order; a request's own error is told in its answer (``messages.failure``).
    Raises the ``DMSError`` that ends the stream, and what ended ``requests``."""
    Pending = tuple[Any, Replies | DMSError]
    pending: asyncio.Queue[Pending | None] = asyncio.Queue(maxsize=STREAM_IN_FLIGHT)

    async def read_all() -> None:
        """Read the requests, each handed to its model as it comes; raises what ends the stream (the client
        gone, a message that is not a request)."""
        async for payload in requests:
            try:
                routing, request_id = messages.routing(payload)
            except DecodeError:
                raise InputError(f"a message of the stream is not a {messages.request_name}") from None
            try:
                replies: Replies | DMSError = start(payload, routing, request_id)
            except DMSError as exc:
                replies = exc
            await pending.put((routing, replies))
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
            routing, replies = next_one
            try:
                if isinstance(replies, DMSError):
                    raise replies
                async for message in _each_unless_ended(replies, reader):
                    yield message
            except DMSError as exc:
                if reader.done() and reader.exception() is exc:
                    raise
                yield messages.failure(routing, exc)
    finally:
        reader.cancel()
        while not pending.empty():  # requests read and not answered: their clients are gone
            left = pending.get_nowait()
            if left is not None and isinstance(left[1], Replies):
                left[1].work.cancel()


async def _each_unless_ended(replies: Replies, reader: asyncio.Future[None]) -> AsyncIterator[bytes]:
    """Each of a request's messages as it comes (``_unless_ended``: while the stream lasts)."""
    piece: asyncio.Future[bytes | None] | None = None
    try:
        while True:
            if replies.work.done():  # the rest is at hand: nothing to race
                next_message = await anext(replies.messages, None)
            else:
                piece = asyncio.ensure_future(anext(replies.messages, None))
                next_message = await _unless_ended(piece, reader, None)
            if next_message is None:
                return
            yield next_message
    finally:
        if piece is not None and not piece.done():  # cancelled by _unless_ended: let it unwind first
            await asyncio.wait((piece,))
        await replies.messages.aclose()  # a request left unfinished stops its worker's generator
        replies.work.cancel()
