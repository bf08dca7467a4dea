"""TorchServe's gRPC inference API, ``org.pytorch.serve.grpc.inference.InferenceAPIsService``, beside the Open
Inference Protocol's service on the gRPC port (``grpc_address``, TorchServe's 7070).

- ``Ping``: ``{"status": "Healthy"}`` (or ``Unhealthy``) as the answer's ``health``, as ``GET /ping``.
- ``Predictions``: the request's ``input`` map reaches the handler as one request whose fields are its entries
  (``PROTOCOL_FIELDS``: ``data["data"]``, as a form field would), batched with the model's other requests; the
  answer's ``prediction`` is the body ``/predictions`` would answer.
- ``StreamPredictions``: the same, answered as a stream: a message per piece of a streamed answer (a handler's
  ``send_intermediate_predict_response`` calls, or its generator), each as it is made; one for a whole answer.
- ``StreamPredictions2``: a stream of requests, each answered in turn (``dms.grpc.streams``); a request's own
  failure is told in its answer's ``status`` and the stream goes on.

The calls need the inference key when inference token auth is on, as the Open Inference Protocol's.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import grpc
import msgspec
from google.protobuf.empty_pb2 import Empty

from dms._generated import torchserve_inference_pb2 as ts
from dms.engine.chunk_streams import ChunkQueue
from dms.errors import DMSError, InputError, PayloadTooLargeError, error_from_wire
from dms.grpc.errors import GRPC_STATUS
from dms.grpc.servicer import Context, InferenceServicer, Metadata, RpcMethod
from dms.grpc.streams import Replies, StreamMessages, answer_stream, one_reply
from dms.messages import PROTOCOL_FIELDS
from dms.observability.request_ids import new_request_id

SERVICE = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
_fields = msgspec.msgpack.Encoder()


def _health(healthy: bool) -> str:
    return json.dumps({"status": "Healthy" if healthy else "Unhealthy"}, indent=2)


def _response(request: Any, **fields: Any) -> bytes:
    """A serialized ``PredictionResponse`` to ``request``, carrying its sequence id when it had one."""
    answer = ts.PredictionResponse(**fields)
    if request.HasField("sequence_id"):
        answer.sequence_id = request.sequence_id
    encoded: bytes = answer.SerializeToString()
    return encoded


def _answer(request: Any, body: bytes) -> bytes:
    return _response(request, prediction=body)


def _failure(request: Any, exc: DMSError) -> bytes:
    return _response(request, status=ts.CallStatus(code=GRPC_STATUS[exc.kind].value[0], message=exc.message))


def _routing(payload: bytes) -> tuple[Any, str]:
    return ts.PredictionsRequest.FromString(payload), new_request_id()


STREAM = StreamMessages(routing=_routing, failure=_failure, request_name="PredictionsRequest")


class TorchServeInference:
    """``InferenceAPIsService`` over the data plane of an ``InferenceServicer`` (its keys, settings and metrics)."""

    def __init__(self, servicer: InferenceServicer) -> None:
        self.servicer = servicer
        self.dataplane = servicer.dataplane
        self.metrics = servicer.metrics

    async def ping(self, request: Any, context: Context) -> Any:
        return ts.TorchServeHealthResponse(health=_health(self.dataplane.healthy()))

    async def predictions(self, request: Any, context: Context) -> Any:
        metadata = dict(context.invocation_metadata() or ())
        request_id = str(metadata.get("x-request-id") or new_request_id())
        body, _ = await self._predict(request, request_id, metadata)
        return ts.PredictionResponse(prediction=body)

    async def stream_predictions(self, requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
        """The answer to the call's one request as a stream: a message for each piece a streaming handler sends
        (``send_intermediate_predict_response``, or a generator), as it is made; one message for a whole answer."""
        metadata = dict(context.invocation_metadata() or ())
        taken = False
        async for payload in requests:
            if taken:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "StreamPredictions takes one request")
            taken = True
            request, request_id = _routing(payload)
            request_id = str(metadata.get("x-request-id") or request_id)
            async for body, _ in self._pieces(request, request_id, metadata, stream=True):
                yield _answer(request, body)

    async def stream_predictions2(self, requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
        metadata = dict(context.invocation_metadata() or ())
        start = functools.partial(self._start_in_stream, metadata=metadata)
        idle_s = self.dataplane.settings.grpc_stream_idle_timeout_s
        async for answer in answer_stream(requests, start, idle_s, STREAM):
            yield answer

    def _start_in_stream(self, payload: bytes, request: Any, request_id: str, metadata: Metadata) -> Replies:
        if not request.sequence_id:
            raise InputError("parameter sequence_id is required by StreamPredictions2")
        return one_reply(self._predict(request, request_id, metadata), functools.partial(_answer, request))

    async def _predict(self, request: Any, request_id: str, metadata: Metadata) -> tuple[bytes, int]:
        """Hand one request to its model and wait for the answer's body (and its batch's size)."""
        pieces = self._pieces(request, request_id, metadata, stream=False)
        try:
            async for body, batch_size in pieces:
                return body, batch_size
        finally:
            await pieces.aclose()  # its metrics are written now, not when the generator is collected
        raise AssertionError("an answer without a body")  # pragma: no cover - _pieces always yields

    async def _pieces(
        self, request: Any, request_id: str, metadata: Metadata, stream: bool
    ) -> AsyncGenerator[tuple[bytes, int], None]:
        """The answer's pieces as the model makes them (with ``stream``; else, and for a whole answer, its one body),
        each with its batch's size once known; counted in the server's metrics and access log as ``fields``."""
        started_ns = self.metrics.started(PROTOCOL_FIELDS)
        name, version = request.model_name, request.model_version or None
        code, batch_size = grpc.StatusCode.CANCELLED, 0
        try:
            if not name:
                raise InputError("parameter model_name is required")
            limit = self.dataplane.settings.max_multipart_parts
            if len(request.input) > limit:
                raise PayloadTooLargeError(f"the request has more than max_multipart_parts ({limit}) input fields")
            fields = _fields.encode(dict(request.input))
            queue = ChunkQueue() if stream else None
            future = self.servicer.submit(fields, name, version, request_id, metadata, PROTOCOL_FIELDS, queue)
            pieces = 0
            if queue is not None:
                async for chunk in queue.until(future):
                    if not pieces:
                        self.metrics.first_chunk(
                            PROTOCOL_FIELDS, name, self.dataplane.version_of(name, version), started_ns
                        )
                    pieces += 1
                    yield chunk.body, 0
            result = await future
            batch_size = result.batch_size
            if result.error is not None:
                raise error_from_wire(result.error.type_name, result.error.message)
            if pieces:
                self.metrics.chunk_count(name, self.dataplane.version_of(name, version)).inc(pieces)
            code = grpc.StatusCode.OK
            if result.body or not pieces:
                yield result.body, batch_size
        except DMSError as exc:
            code = GRPC_STATUS[exc.kind]
            raise
        finally:
            self.metrics.finished(
                transport=PROTOCOL_FIELDS,
                model=name,
                version=self.dataplane.version_of(name, version),
                code=code.name,
                started_ns=started_ns,
                request_id=request_id,
                batch_size=batch_size,
            )


def torchserve_inference_methods(servicer: InferenceServicer) -> list[RpcMethod]:
    """``InferenceAPIsService``'s methods, with the key checks of the Open Inference Protocol's inference calls."""
    service = TorchServeInference(servicer)
    inference: Callable[[Metadata], None] | None = None
    if servicer.key_required("inference"):
        inference = functools.partial(servicer.authorize, kind="inference")
    return [
        RpcMethod("Ping", service.ping, Empty, ts.TorchServeHealthResponse, service=SERVICE),
        RpcMethod(
            "Predictions",
            service.predictions,
            ts.PredictionsRequest,
            ts.PredictionResponse,
            authorize=inference,
            service=SERVICE,
        ),
        RpcMethod(
            "StreamPredictions", service.stream_predictions, None, None, True, authorize=inference, service=SERVICE
        ),
        RpcMethod(
            "StreamPredictions2", service.stream_predictions2, None, None, True, authorize=inference, service=SERVICE
        ),
    ]
