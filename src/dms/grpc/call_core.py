"""gRPC's rules for one call, without sockets: each written here once, for DMS's own gRPC connections
(``dms.grpc.connection``).

gRPC is a convention over HTTP/2: a call is a POST to ``/<package>.<Service>/<Method>`` with
``content-type: application/grpc``; each message in either direction is a flag byte (1: compressed
with the call's ``grpc-encoding``), a 4-byte big-endian length and the protobuf bytes; the answer's
status travels in the trailers (``grpc-status``, and ``grpc-message`` percent-encoded).

Here: a call's headers read once (``read_call_headers``: transport headers apart, metadata with ``-bin``
values decoded), ``grpc-timeout`` (``parse_timeout``), the framing of messages with their size limit and
decompression (``take_message``), a unary call's one message (``unary_message``, refused as early as a second
one or an oversized one shows: ``check_arriving``), the read deadline and body-rate floor of a unary call's
request (``GrpcCall.overdue``), and how any failure becomes a status (``status_of``, ``status_trailers``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import grpc
from google.protobuf.message import DecodeError

from dms.errors import DMSError
from dms.grpc.errors import GRPC_STATUS
from dms.grpc.servicer import InferCall, Metadata, RpcMethod
from dms.httputil.compression import inflate
from dms.httputil.connection_deadlines import ReadLimits, too_slow_at, too_slow_message
from dms.messages import ResponseItem

log = logging.getLogger("dms.grpc")

ONE_MESSAGE = "a unary call takes exactly one request message"
ANSWER_HEADERS = [(b"content-type", b"application/grpc"), (b"grpc-accept-encoding", b"identity,deflate,gzip")]
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_ZLIB_WINDOW = {"gzip": 31, "deflate": 15}


class CallAborted(Exception):
    """Ends a call with a gRPC status (what ``context.abort`` raises)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class ClientGone(Exception):
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


def status_of(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """How a call that raised ends: its own status (``CallAborted``), its kind's (``DMSError``), or, for a bug on
    the way, UNKNOWN naming the exception (logged)."""
    if isinstance(exc, CallAborted):
        return exc.code, exc.details
    if isinstance(exc, DMSError):
        return GRPC_STATUS[exc.kind], exc.message
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"
    log.error("gRPC call %s failed", method, exc_info=exc)
    return grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}"


def encode_answer(method: RpcMethod, answer: Any) -> bytes:
    """A handler's answer on the wire: raw methods answer bytes already."""
    if method.response_type is None:
        return bytes(answer)
    encoded: bytes = answer.SerializeToString()
    return encoded


def decode_request(method: RpcMethod, payload: bytes) -> Any:
    if method.request_type is None:
        return payload
    try:
        return method.request_type.FromString(payload)
    except DecodeError:
        raise CallAborted(
            grpc.StatusCode.INTERNAL, f"the request is not a valid {method.request_type.__name__}"
        ) from None


class GrpcCall:
    """One call on a connection, from its request head to its status (its state; the connection acts on it)."""

    __slots__ = (
        "began",
        "began_bytes",
        "buffer",
        "ended",
        "expired",
        "finished",
        "future",
        "gone",
        "headers",
        "heard",
        "inbox",
        "infer",
        "method",
        "receiving",
        "started",
        "stream_id",
        "task",
        "timer",
    )

    def __init__(self, stream_id: int, headers: CallHeaders, method: RpcMethod | None) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.method = method
        self.buffer = bytearray()
        self.ended = False
        """Its request ended (END_STREAM)."""
        self.finished = False
        """Its status was written (or its client left): nothing more is sent."""
        self.gone = False
        """Its client reset the stream or left."""
        self.started = False
        """Its answer's headers were sent (a stream's first answer)."""
        self.expired = False
        self.receiving = False
        """Its unary request has begun and not ended (held to the read deadline)."""
        self.heard = 0.0
        """When its request last brought bytes, while ``receiving``."""
        self.began = 0.0
        """When its request was first heard arriving (or reading last resumed): its body rate counts from then."""
        self.began_bytes = 0
        self.future: asyncio.Future[ResponseItem] | None = None
        self.infer: InferCall | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.inbox: asyncio.Queue[bytes | None] | None = None
        """A streaming call's requests, as they arrive (None: the client ended its stream)."""

    @property
    def name(self) -> str:
        return self.method.name if self.method is not None else "?"

    def check_arriving(self, max_bytes: int) -> None:
        """A unary request still arriving is refused as soon as its message is over the limit or a second follows."""
        length = declared_length(self.buffer, max_bytes)
        if length is not None and len(self.buffer) > 5 + length:
            raise CallAborted(grpc.StatusCode.INTERNAL, ONE_MESSAGE)

    def unary_message(self, max_bytes: int) -> bytes:
        """The one message of a unary request that ended."""
        buffer = self.buffer
        payload = take_message(buffer, max_bytes, self.headers.encoding)
        if payload is None:
            details = "the request ended inside a message" if buffer else f"{self.name} takes a request message"
            raise CallAborted(grpc.StatusCode.INTERNAL, details)
        if buffer:
            raise CallAborted(grpc.StatusCode.INTERNAL, ONE_MESSAGE)
        return payload

    def stream_messages(self, max_bytes: int) -> list[bytes]:
        """The whole messages a streaming request brought so far, taken out of its buffer."""
        messages = []
        while (message := take_message(self.buffer, max_bytes, self.headers.encoding)) is not None:
            messages.append(message)
        return messages

    def overdue(self, now: float, limits: ReadLimits, paused: bool) -> tuple[CallAborted | None, float]:
        """Whether a unary request still arriving overran its read deadline or the body-rate floor (the way it
        ends), and when to look again otherwise. Time the connection was not reading is not held against it."""
        due = self.heard + limits.timeout_s
        if self.heard + limits.timeout_s <= now:
            return stalled_request(limits.timeout_s), now
        if not limits.min_body_rate:
            return None, due
        if paused or not self.began:  # the client could not send meanwhile: its rate counts afresh from now
            self.began, self.began_bytes = now, len(self.buffer)
        slow_at = too_slow_at(
            self.began, len(self.buffer) - self.began_bytes, limits.min_body_rate, limits.body_rate_grace_s
        )
        if slow_at <= now:
            return slow_request(limits.min_body_rate, limits.body_rate_grace_s), now
        return None, min(due, slow_at)
