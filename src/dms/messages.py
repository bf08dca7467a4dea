"""Typed messages between the server and its worker processes.

Every frame on a worker's socket is a 4-byte big-endian length and one msgpack-encoded
message below. Request payloads travel as untouched bytes; nothing is ever pickled, and errors
cross as (class name, message), never as exception objects.
"""

from __future__ import annotations

import struct
from typing import Any, TypeVar

import msgspec


class ErrorInfo(msgspec.Struct, frozen=True):
    type_name: str
    """Name of a ``dms.errors`` class, e.g. ``InputError``."""
    message: str


class RequestLimits(msgspec.Struct, array_like=True, frozen=True):
    """Caps the worker applies while decoding requests; each refusal names its limit."""

    max_json_depth: int = 64
    max_tensor_elements: int = 50_000_000
    max_image_pixels: int = 40_000_000
    max_multipart_parts: int = 100
    allow_pickle: bool = False
    """The operator's --allow-pickle: pickled request bodies may be unpickled (wrapper workflow)."""
    max_response_bytes: int = 0
    """The largest answer body a worker sends back; a larger one becomes a 500 naming the limit. 0: none."""


class LoadModel(msgspec.Struct, tag="load", array_like=True):
    model_name: str
    model_version: str
    model_dir: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    batch_size: int
    gpu_id: int | None
    worker_id: str
    cpu_threads: int
    limits: RequestLimits = RequestLimits()
    service_envelope: str = "none"
    """``ServerSettings.service_envelope``: how KServe requests reach a handler without a runtime."""


class TensorMeta(msgspec.Struct, array_like=True, frozen=True):
    name: str
    datatype: str
    """Protocol datatype, e.g. ``FP32``."""
    shape: list[int]
    """-1 for a variable dimension."""


class ModelLoaded(msgspec.Struct, tag="loaded", array_like=True):
    pid: int
    inputs: list[TensorMeta] = []
    outputs: list[TensorMeta] = []
    platform: str = "python"


class LoadFailed(msgspec.Struct, tag="load_failed", array_like=True):
    error: ErrorInfo


PROTOCOL_RAW = "raw"
"""TorchServe's ``/predictions``: the handler gets the body as it came."""
PROTOCOL_FIELDS = "fields"
"""TorchServe's gRPC ``Predictions``: the body is a msgpack map of field name to bytes (its ``input`` map), each
field reaching the handler under its own name; answered as ``/predictions`` answers."""
PROTOCOL_GENERATE = "generate"
"""A generative model's text generation (the OIP generate extension, the OpenAI-compatible endpoints): the body is
the generation request as JSON (``prompt``, ``messages``, ``max_tokens``, ``stop``...), handed to the handler as
``/predictions`` hands a JSON body; its answer is text, under the request's ``max_tokens`` and ``stop``."""
PROTOCOL_V2_REST = "v2-rest"
PROTOCOL_V2_GRPC = "v2-grpc"
PROTOCOL_V1 = "v1"
TENSOR_PROTOCOLS = frozenset({PROTOCOL_V2_REST, PROTOCOL_V2_GRPC, PROTOCOL_V1})


class RequestItem(msgspec.Struct, array_like=True):
    request_id: str
    body: bytes
    content_type: str
    headers: list[tuple[str, str]]
    query: list[tuple[str, str]]
    protocol: str = PROTOCOL_RAW
    stream: bool = False
    """The client reads the answer as it is made: chunks a handler streams go out as ``Chunk`` frames, each as it
    comes. Else they are joined into the one answer."""


class Batch(msgspec.Struct, tag="batch", array_like=True):
    batch_id: int
    items: list[RequestItem]
    queued: bool = False
    """Sent while the worker was busy with the batch before it: a ``Withdraw`` may follow it in the socket."""


class Withdraw(msgspec.Struct, tag="withdraw", array_like=True):
    """Requests whose clients went away: the worker skips them if it has not started their batch, and stops
    streaming their answers (within one chunk) if it has."""

    batch_id: int
    indices: list[int]


class StreamCredit(msgspec.Struct, tag="credit", array_like=True):
    """The server wrote ``chunks`` more of a streamed request's chunks to its client: the worker may send as many
    more (``STREAM_WINDOW`` at most are ever unwritten)."""

    batch_id: int
    index: int
    chunks: int = 1


STREAM_WINDOW = 8
"""How many of one request's chunks a worker sends ahead of what its client has taken; then its handler waits."""


class ResponseItem(msgspec.Struct, array_like=True):
    status: int
    body: bytes
    content_type: str
    headers: list[tuple[str, str]] = []
    error: ErrorInfo | None = None
    batch_size: int = 0
    """How many requests shared this one's batch (set by the server's batcher, for logs and metrics)."""


class BatchTimings(msgspec.Struct, array_like=True):
    """Where the worker spent a batch's time: decoding inputs, running the model, encoding outputs."""

    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0


class BatchResult(msgspec.Struct, tag="result", array_like=True):
    batch_id: int
    items: list[ResponseItem]
    timings: BatchTimings = msgspec.field(default_factory=BatchTimings)


class Chunk(msgspec.Struct, tag="chunk", array_like=True):
    """A piece of one request's answer, sent while its batch runs (the request asked for ``stream``).

    The first chunk's ``status``, ``content_type`` and ``headers`` are the answer's; the request's last word (an
    empty body when a generator ended, or an error) comes in a ``StreamEnd`` when its generator ends, or in the
    ``BatchResult`` that ends the batch."""

    batch_id: int
    index: int
    """The request's place in its batch."""
    body: bytes
    status: int = 200
    content_type: str = ""
    headers: list[tuple[str, str]] = []


class StreamEnd(msgspec.Struct, tag="stream_end", array_like=True):
    """A streamed request's last word, sent as soon as its generator ends, before the rest of its batch has: its
    client's answer ends now, not with the batch's longest. The ``BatchResult`` that ends the batch repeats it."""

    batch_id: int
    index: int
    item: ResponseItem


ToWorker = LoadModel | Batch | Withdraw | StreamCredit
FromWorker = ModelLoaded | LoadFailed | BatchResult | Chunk | StreamEnd

M = TypeVar("M")

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 2**31 - 1

_encoder = msgspec.msgpack.Encoder()
to_worker_decoder = msgspec.msgpack.Decoder(ToWorker)
from_worker_decoder = msgspec.msgpack.Decoder(FromWorker)


def encode_frame(message: ToWorker | FromWorker) -> bytes:
    payload = _encoder.encode(message)
    return HEADER.pack(len(payload)) + payload


def frame_end(data: bytes | bytearray, start: int = 0) -> int:
    """Where the frame that begins at ``start`` ends; past ``len(data)`` while it has not all arrived."""
    if len(data) - start < HEADER.size:
        return start + HEADER.size
    (length,) = HEADER.unpack_from(data, start)
    end: int = start + HEADER.size + length
    return end


def decode_frame(decoder: msgspec.msgpack.Decoder[M], data: bytes | bytearray, start: int, end: int) -> M:
    """The message of the whole frame at ``data[start:end]``, read in place (no copy of the payload)."""
    with memoryview(data) as view, view[start + HEADER.size : end] as payload:
        return decoder.decode(payload)
