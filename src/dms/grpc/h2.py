"""The gRPC service on uvicorn's HTTP/2 (``grpc_server = "uvicorn"``): the same servicer, a lighter server.

gRPC is a convention over HTTP/2: a call is a POST to ``/<package>.<Service>/<Method>`` with
``content-type: application/grpc``; each message in either direction is a flag byte (1: compressed
with the call's ``grpc-encoding``), a 4-byte big-endian length and the protobuf bytes; the answer's
status travels in the trailers (``grpc-status``, and ``grpc-message`` percent-encoded). uvicorn (0.54+)
speaks HTTP/2 with trailers through zttp, a sans-IO HTTP parser with a compiled core, and on this
project's benchmark a bare unary call costs about a third of the CPU it costs on grpcio's asyncio
server, and a DMS inference call about half (``docs/performance.md``). This module is the ASGI
application that turns those requests into calls of ``InferenceServicer``, with the framing and status
helpers it shares with the connection protocol (``dms.grpc.h2_connection``), which answers
``ModelInfer`` calls without ASGI.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import grpc
from google.protobuf.message import DecodeError
from starlette.types import Message, Receive, Scope, Send

from dms.errors import DMSError
from dms.grpc.errors import GRPC_STATUS
from dms.grpc.servicer import SERVICE, Metadata, RpcMethod
from dms.httputil.compression import inflate
from dms.httputil.connection_deadlines import ReadLimits, too_slow_at, too_slow_message

log = logging.getLogger("dms.grpc")

_PREFIX = f"/{SERVICE}/"
ANSWER_HEADERS = [(b"content-type", b"application/grpc"), (b"grpc-accept-encoding", b"identity,deflate,gzip")]
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_ZLIB_WINDOW = {"gzip": 31, "deflate": 15}


class CallAborted(Exception):
    """Ends a call with a gRPC status (what ``context.abort`` raises)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _ClientGone(Exception):
    """The client reset the stream or closed the connection."""


class CallContext:
    """The part of ``grpc.aio.ServicerContext`` the servicer uses: request metadata and ``abort``."""

    __slots__ = ("_metadata",)

    def __init__(self, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise CallAborted(code, details)


@dataclass(slots=True)
class CallHeaders:
    """A call's request headers, read in one pass: what gRPC's transport uses, and the rest as metadata.

    Read-only once made: a gRPC connection shares one among its calls that came with the same headers.
    """

    content_type: bytes = b""
    te: bytes = b""
    timeout: bytes = b""
    """The ``grpc-timeout`` value, or empty."""
    encoding: str = "identity"
    metadata: Metadata = field(default_factory=dict)
    """Custom metadata: no pseudo-headers, no transport headers; ``-bin`` values decoded."""


def read_call_headers(headers: list[tuple[bytes, bytes]]) -> CallHeaders:
    """``headers`` (lower-case names) as a ``CallHeaders``."""
    call = CallHeaders()
    metadata = call.metadata
    for name, value in headers:
        if name == b"content-type":
            call.content_type = value
        elif name == b"te":
            call.te = value
        elif name == b"grpc-timeout":
            call.timeout = value
        elif name == b"grpc-encoding":
            call.encoding = value.decode("latin-1")
        elif name == b"grpc-accept-encoding" or name[:1] == b":":
            continue
        elif name.endswith(b"-bin"):
            metadata[name.decode("latin-1")] = decode_binary(value)
        else:
            metadata[name.decode("latin-1")] = value.decode("latin-1")
    return call


def decode_binary(value: bytes) -> bytes:
    """A ``-bin`` metadata value: base64, padded or not."""
    return base64.b64decode(value + b"=" * (-len(value) % 4))


def parse_timeout(value: str) -> float:
    """Seconds from a ``grpc-timeout`` header (1 to 8 digits and a unit: H, M, S, m, u, n)."""
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or len(digits) > 8 or unit not in _TIMEOUT_UNITS:
        raise CallAborted(grpc.StatusCode.INTERNAL, f"malformed grpc-timeout {value!r}")
    return int(digits) * _TIMEOUT_UNITS[unit]


def frame(message: bytes) -> bytes:
    """One uncompressed length-prefixed message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def declared_length(buffer: bytearray, max_bytes: int) -> int | None:
    """The length the first message in ``buffer`` declares, None until its prefix is in; refused over ``max_bytes``."""
    if len(buffer) < 5:
        return None
    length = int.from_bytes(buffer[1:5], "big")
    if length > max_bytes:
        raise CallAborted(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"received a message of {length} bytes, over grpc_max_message_bytes ({max_bytes})",
        )
    return length


def take_message(buffer: bytearray, max_bytes: int, encoding: str | None) -> bytes | None:
    """The first whole message in ``buffer``, removed from it and decompressed; None until one is whole.

    A message declared over ``max_bytes`` is refused as soon as its length prefix is in.
    """
    length = declared_length(buffer, max_bytes)
    if length is None or len(buffer) < 5 + length:
        return None
    compressed = buffer[0] == 1
    message = bytes(buffer[5 : 5 + length])
    del buffer[: 5 + length]
    return _decompress(message, max_bytes, encoding) if compressed else message


def _decompress(message: bytes, max_bytes: int, encoding: str | None) -> bytes:
    window = _ZLIB_WINDOW.get(encoding or "")
    if window is None:
        raise CallAborted(
            grpc.StatusCode.UNIMPLEMENTED, f"compressed message with unsupported grpc-encoding {encoding!r}"
        )
    try:
        data = inflate(message, window, max_bytes)
    except zlib.error as exc:
        raise CallAborted(grpc.StatusCode.INTERNAL, f"the {encoding} message cannot be decompressed") from exc
    if data is None:
        raise CallAborted(
            grpc.StatusCode.RESOURCE_EXHAUSTED, f"decompressed message is over grpc_max_message_bytes ({max_bytes})"
        )
    return data


def stalled_request(read_timeout_s: float) -> CallAborted:
    """How a unary call ends whose request brought nothing for ``request_read_timeout_s``."""
    return CallAborted(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f"the request stopped arriving: nothing of it came for request_read_timeout_s ({read_timeout_s:g} s)",
    )


def slow_request(min_rate: float, grace_s: float) -> CallAborted:
    """How a unary call ends whose request arrived slower than ``min_request_body_rate_bytes_s``."""
    return CallAborted(grpc.StatusCode.DEADLINE_EXCEEDED, too_slow_message(min_rate, grace_s))


def status_trailers(code: grpc.StatusCode, details: str) -> list[tuple[bytes, bytes]]:
    """A call's status as trailers: ``grpc-status``, and ``grpc-message`` percent-encoded when there are details."""
    trailers = [(b"grpc-status", str(code.value[0]).encode())]
    if details:
        trailers.append((b"grpc-message", quote(details, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode()))
    return trailers


class MessageReader:
    """Length-prefixed messages out of a request body that arrives in ASGI chunks."""

    def __init__(
        self, receive: Receive, max_bytes: int, encoding: str | None, limits: ReadLimits | None = None
    ) -> None:
        self._receive = receive
        self._max_bytes = max_bytes
        self._encoding = encoding
        self._limits = limits
        """How the request must keep arriving: no pause over the read timeout, and (with a floor) on average at
        least ``min_body_rate`` once the grace has passed. A unary call's; None: a stream's, as it likes."""
        self._buffer = bytearray()
        self._ended = False
        self._began = 0.0
        self._received = 0

    async def next(self) -> bytes | None:
        """The next message, or None once the client has sent them all."""
        while True:
            message = take_message(self._buffer, self._max_bytes, self._encoding)
            if message is not None:
                return message
            if self._ended:
                if self._buffer:
                    raise CallAborted(grpc.StatusCode.INTERNAL, "the request ended inside a message")
                return None
            await self._fill()

    async def _fill(self) -> None:
        limits = self._limits
        if limits is None:
            event: Message = await self._receive()
        else:
            now = asyncio.get_running_loop().time()
            self._began = self._began or now
            due = now + limits.timeout_s
            slow_at = None
            if limits.min_body_rate:
                slow_at = too_slow_at(self._began, self._received, limits.min_body_rate, limits.body_rate_grace_s)
            try:
                async with asyncio.timeout_at(due if slow_at is None else min(due, slow_at)):
                    event = await self._receive()
            except TimeoutError:
                if slow_at is not None and slow_at < due:  # nothing came meanwhile: under the floor
                    raise slow_request(limits.min_body_rate, limits.body_rate_grace_s) from None
                raise stalled_request(limits.timeout_s) from None
        if event["type"] != "http.request":
            raise _ClientGone
        body = event.get("body", b"")
        self._received += len(body)
        self._buffer += body
        self._ended = not event.get("more_body", False)


class GrpcApp:
    """ASGI application serving ``inference.GRPCInferenceService`` calls over HTTP/2."""

    def __init__(self, methods: dict[str, RpcMethod], max_message_bytes: int, limits: ReadLimits | None = None) -> None:
        self.methods = methods
        self.max_message_bytes = max_message_bytes
        self.limits = limits or ReadLimits()
        """How a unary call's request must keep arriving (``request_read_timeout_s``, the body-rate floor); a
        stream's may pause for ever."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = read_call_headers(scope["headers"])
        if scope["method"] != "POST" or not headers.content_type.startswith(b"application/grpc"):
            await _plain(send, 415, b"this port speaks gRPC: POST with content-type application/grpc\n")
            return
        responder = _Responder(send)
        try:
            path = scope["path"]
            method = self.methods.get(path[len(_PREFIX) :]) if path.startswith(_PREFIX) else None
            if method is None:
                raise CallAborted(grpc.StatusCode.UNIMPLEMENTED, f"method {path} is not served here")
            if method.authorize is not None:
                method.authorize(headers.metadata)  # before any of the message is read or inflated
            deadline_s = parse_timeout(headers.timeout.decode("latin-1")) if headers.timeout else None
            limits = None if method.streaming else self.limits
            reader = MessageReader(receive, self.max_message_bytes, headers.encoding, limits)
            context = CallContext(tuple(headers.metadata.items()))
            call = (self._stream if method.streaming else self._unary)(method, reader, context, responder)
            if deadline_s is None:
                await call  # no deadline: no timer (asyncio.timeout costs ~5 µs a call even when None)
            else:
                async with asyncio.timeout(deadline_s):
                    await call
        except _ClientGone:
            return
        except TimeoutError:
            await responder.finish(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        except CallAborted as exc:
            await responder.finish(exc.code, exc.details)
        except DMSError as exc:
            await responder.finish(GRPC_STATUS[exc.kind], exc.message)
        except Exception as exc:
            log.exception("gRPC call %s failed", scope["path"])
            await responder.finish(grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")
        else:
            await responder.finish(grpc.StatusCode.OK, "")

    async def _unary(self, method: RpcMethod, reader: MessageReader, context: CallContext, out: _Responder) -> None:
        payload = await reader.next()
        if payload is None or await reader.next() is not None:
            raise CallAborted(grpc.StatusCode.INTERNAL, f"{method.name} takes exactly one request message")
        answer = await method.handler(_decode(method, payload), context)
        await out.message(_encode(method, answer), last=True)

    async def _stream(self, method: RpcMethod, reader: MessageReader, context: CallContext, out: _Responder) -> None:
        async def requests() -> AsyncIterator[Any]:
            while (payload := await reader.next()) is not None:
                yield _decode(method, payload)

        answers = method.handler(requests(), context)
        async for answer in answers:
            await out.message(_encode(method, answer))


def _encode(method: RpcMethod, answer: Any) -> bytes:
    """A handler's answer on the wire: raw methods answer bytes already."""
    if method.response_type is None:
        return bytes(answer)
    encoded: bytes = answer.SerializeToString()
    return encoded


def _decode(method: RpcMethod, payload: bytes) -> Any:
    if method.request_type is None:
        return payload
    try:
        return method.request_type.FromString(payload)
    except DecodeError:
        raise CallAborted(
            grpc.StatusCode.INTERNAL, f"the request is not a valid {method.request_type.__name__}"
        ) from None


class _Responder:
    """Writes one call's answer: headers once, then messages, then the status in the trailers."""

    __slots__ = ("_body_ended", "_send", "_started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._started = False
        self._body_ended = False

    async def message(self, data: bytes, last: bool = False) -> None:
        """One message; ``last`` ends the body with it (a unary answer: one ASGI send fewer)."""
        await self._start()
        self._body_ended = last
        await self._send({"type": "http.response.body", "body": frame(data), "more_body": not last})

    async def finish(self, code: grpc.StatusCode, details: str) -> None:
        await self._start()
        if not self._body_ended:
            self._body_ended = True
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
        trailers = status_trailers(code, details)
        await self._send({"type": "http.response.trailers", "headers": trailers, "more_trailers": False})

    async def _start(self) -> None:
        if not self._started:
            self._started = True
            start = {"type": "http.response.start", "status": 200, "headers": ANSWER_HEADERS, "trailers": True}
            await self._send(start)


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
