"""``inference.GRPCInferenceService`` over the data plane.

``ModelInfer`` and ``ModelStreamInfer`` take and return raw bytes: the servicer reads only the
routing fields of a request and forwards it untouched; workers decode tensors and encode the
response. Repository calls need the management key when token auth is on (they change what the
server runs); inference calls need the inference key when inference auth is on. A ``DMSError`` a method
raises ends its call with its kind's status: both servers map it (``call_core.status_of``,
``grpcio_server``'s handlers).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from dms._generated import inference_pb2 as pb
from dms.auth import KeyKind, KeyStore
from dms.dataplane import DataPlane
from dms.dataplane.outcomes import Outcome
from dms.dataplane.queries import (
    model_metadata,
    model_ready,
    repository_index,
    repository_load,
    repository_unload,
    server_metadata,
)
from dms.dataplane.queries import statistics as model_statistics
from dms.engine.chunk_streams import ChunkQueue, ChunkReader
from dms.errors import (
    DMSError,
    InputError,
    InternalError,
    ModelNotFoundError,
    error_from_wire,
)
from dms.grpc.errors import GRPC_STATUS
from dms.grpc.streams import Replies, answer_stream, stream_answer
from dms.messages import PROTOCOL_V2_GRPC, RequestItem, ResponseItem
from dms.observability.metrics import ServerMetrics
from dms.observability.request_ids import new_request_id

log = logging.getLogger("dms.grpc")

Context: TypeAlias = Any  # grpc.aio.ServicerContext (grpc ships no type hints)
Metadata: TypeAlias = dict[str, str | bytes]
"""A call's custom metadata by name (``-bin`` values are bytes)."""


@dataclass(slots=True)
class InferCall:
    """One ``ModelInfer`` call between ``infer_arrived`` and ``infer_concluded``."""

    started_ns: int
    model: str
    version: str | None
    request_id: str
    valid: bool = True
    """Its routing fields could be read (the request is protobuf)."""


class RepositoryChanges(Protocol):
    """Makes the model-repository calls' changes (with several frontends: ``dms.frontends.repository``)."""

    async def load(self, name: str) -> None: ...

    async def unload(self, name: str) -> None: ...


class _OwnRepository:
    """One frontend: the change in this process's data plane."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def load(self, name: str) -> None:
        await repository_load(self.dataplane, name)

    async def unload(self, name: str) -> None:
        await repository_unload(self.dataplane, name)


class InferenceServicer:
    def __init__(
        self,
        dataplane: DataPlane,
        metrics: ServerMetrics,
        keys: KeyStore | None,
        repository: RepositoryChanges | None = None,
    ) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.keys = keys
        self.repository = repository or _OwnRepository(dataplane)

    # -- helpers ----------------------------------------------------------------------------------
    def _check_key(self, context: Context, kind: KeyKind) -> None:
        self.authorize(dict(context.invocation_metadata() or ()), kind)

    def key_required(self, kind: KeyKind) -> bool:
        """Calls of this kind need a key (token auth on for it, and keys kept)."""
        settings = self.dataplane.settings
        required = settings.token_auth if kind == "management" else settings.inference_token_auth
        return self.keys is not None and required

    def authorize(self, metadata: Metadata, kind: KeyKind) -> None:
        """Raise ``UnauthorizedError``/``ForbiddenError`` unless the call's metadata carries the key ``kind`` needs.

        The transports call it with a call's headers, before any of its message is read or inflated."""
        if self.keys is None or not self.key_required(kind):
            return
        key = metadata.get("authorization")
        self.keys.check(kind, key if isinstance(key, str) else None)

    def submit(
        self,
        payload: bytes,
        name: str,
        version: str | None,
        request_id: str,
        metadata: Metadata,
        protocol: str = PROTOCOL_V2_GRPC,
        reader: ChunkReader | None = None,
    ) -> asyncio.Future[ResponseItem]:
        """Hand a call's request to its model (the text metadata as its headers), as ``protocol``'s; with a
        ``reader``, the chunks of a streamed answer reach it as they are made."""
        item = RequestItem(
            request_id=request_id,
            body=payload,
            content_type="application/grpc",
            headers=[(k, v) for k, v in metadata.items() if isinstance(v, str)],
            query=[],
            protocol=protocol,
            stream=reader is not None,
        )
        return self.dataplane.submit(name, version, item, reader)

    def _start_streamed(self, payload: bytes, routing: Any, request_id: str, metadata: Metadata) -> Replies:
        """A ``ModelStreamInfer`` request handed to its model: its answers, one per response the model makes."""
        name, version = routing.model_name, routing.model_version or None
        queue, started_ns = ChunkQueue(), time.perf_counter_ns()
        future = self.submit(payload, name, version, request_id, metadata, reader=queue)
        future.add_done_callback(queue.given_up)  # a request given up on before its turn stops its generator too
        return Replies(self._replies(queue, future, name, version, started_ns), future)

    async def _replies(
        self, queue: ChunkQueue, future: asyncio.Future[ResponseItem], name: str, version: str | None, started_ns: int
    ) -> AsyncGenerator[bytes, None]:
        pieces = 0
        async for chunk in queue.until(future):
            if not pieces:
                self.metrics.first_chunk(PROTOCOL_V2_GRPC, name, self.dataplane.version_of(name, version), started_ns)
            pieces += 1
            yield stream_answer(chunk.body)
        result = future.result()
        if pieces:
            self.metrics.chunk_count(name, self.dataplane.version_of(name, version)).inc(pieces)
        if result.error is not None:
            raise error_from_wire(result.error.type_name, result.error.message)
        if result.body:  # empty after pieces, unless the request asked for an empty final response
            yield stream_answer(result.body)

    # -- health and metadata --------------------------------------------------------------------------
    async def server_live(self, request: Any, context: Context) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: Context) -> Any:
        return pb.ServerReadyResponse(ready=self.dataplane.healthy())

    async def model_ready(self, request: Any, context: Context) -> Any:
        try:
            ready = model_ready(self.dataplane, request.name, request.version or None)
        except ModelNotFoundError:
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    async def server_metadata(self, request: Any, context: Context) -> Any:
        return pb.ServerMetadataResponse(**server_metadata())

    async def model_metadata(self, request: Any, context: Context) -> Any:
        self._check_key(context, "inference")
        described = model_metadata(self.dataplane, request.name, request.version or None)
        return pb.ModelMetadataResponse(
            name=described["name"],
            versions=described["versions"],
            platform=described["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in described["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in described["outputs"]],
        )

    # -- inference ------------------------------------------------------------------------------------
    async def model_infer(self, payload: bytes, context: Context) -> bytes:
        metadata = dict(context.invocation_metadata() or ())
        call = self.infer_arrived(payload, metadata)
        outcome: Outcome = None
        try:
            self.authorize(metadata, "inference")  # grpcio reads the message first; DMS's HTTP/2 does not
            outcome = await self.infer_submit(call, payload, metadata)
        except DMSError as exc:
            outcome = exc
        except Exception as exc:  # a bug on the way: counted and answered as INTERNAL
            log.exception("gRPC call ModelInfer failed")
            outcome = InternalError(f"{type(exc).__name__}: {exc}")
        finally:
            code, details, answer = self.infer_concluded(call, outcome)
        if code != grpc.StatusCode.OK:
            await context.abort(code, details)
        return answer

    # ``ModelInfer`` in three steps, for transports that do not await (``dms.grpc.answering``) -------------
    def infer_arrived(self, payload: bytes, metadata: Metadata) -> InferCall:
        """Count a ``ModelInfer`` call as in flight and read its routing fields; ``infer_concluded`` ends it."""
        started_ns = self.metrics.started(PROTOCOL_V2_GRPC)
        try:
            routing = pb.ModelInferRequestRouting.FromString(payload)
        except DecodeError:
            request_id = str(metadata.get("x-request-id") or new_request_id())
            return InferCall(started_ns, "", None, request_id, valid=False)
        request_id = str(metadata.get("x-request-id") or routing.id or new_request_id())
        return InferCall(started_ns, routing.model_name, routing.model_version or None, request_id)

    def infer_submit(self, call: InferCall, payload: bytes, metadata: Metadata) -> asyncio.Future[ResponseItem]:
        """Hand the call to its model (raises ``DMSError`` when it cannot go); its key was checked by then."""
        if not call.valid:
            raise InputError("the request is not a valid ModelInferRequest")
        return self.submit(payload, call.model, call.version, call.request_id, metadata)

    def infer_concluded(self, call: InferCall, outcome: Outcome) -> tuple[grpc.StatusCode, str, bytes]:
        """The call's status, its details and its answer (empty unless OK), reported to metrics and the access log.

        ``outcome`` is the model's answer, an error, or None when the call ended first (cancelled, client gone).
        """
        code, details, answer, batch_size = grpc.StatusCode.OK, "", b"", 0
        if outcome is None:
            code, details = grpc.StatusCode.CANCELLED, "the call was cancelled"
        else:
            error = outcome if isinstance(outcome, DMSError) else None
            if isinstance(outcome, ResponseItem):
                batch_size = outcome.batch_size
                if outcome.error is None:
                    answer = outcome.body
                else:
                    error = error_from_wire(outcome.error.type_name, outcome.error.message)
            if error is not None:
                code, details = GRPC_STATUS[error.kind], error.message
        self.metrics.finished(
            transport=PROTOCOL_V2_GRPC,
            model=call.model,
            version=self.dataplane.version_of(call.model, call.version),
            code=code.name,
            started_ns=call.started_ns,
            request_id=call.request_id,
            batch_size=batch_size,
        )
        return code, details, answer

    async def model_stream_infer(self, requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
        """Each request of the stream answered in order (``dms.grpc.streams``); what ends the stream ends the call."""
        self._check_key(context, "inference")
        start = functools.partial(self._start_streamed, metadata=dict(context.invocation_metadata() or ()))
        # A message that is not a request, or a stream gone idle, ends it with its error's status.
        async for answer in answer_stream(requests, start, self.dataplane.settings.grpc_stream_idle_timeout_s):
            yield answer

    async def model_statistics(self, request: Any, context: Context) -> Any:
        self._check_key(context, "inference")
        entries = model_statistics(self.dataplane, request.name or None, request.version or None)
        response = pb.ModelStatisticsResponse()
        for entry in entries:
            stats = response.model_stats.add(
                name=entry["name"],
                version=entry["version"],
                last_inference=entry["last_inference"],
                inference_count=entry["inference_count"],
                execution_count=entry["execution_count"],
            )
            for name, duration in entry["inference_stats"].items():
                getattr(stats.inference_stats, name).CopyFrom(pb.StatisticDuration(**duration))
            for batch in entry["batch_stats"]:
                stats.batch_stats.add(
                    batch_size=batch["batch_size"],
                    compute_input=pb.StatisticDuration(**batch["compute_input"]),
                    compute_infer=pb.StatisticDuration(**batch["compute_infer"]),
                    compute_output=pb.StatisticDuration(**batch["compute_output"]),
                )
        return response

    # -- model repository (management side of the trust boundary) ------------------------------------
    async def repository_index(self, request: Any, context: Context) -> Any:
        self._check_key(context, "management")
        entries = repository_index(self.dataplane, request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**e) for e in entries])

    async def repository_model_load(self, request: Any, context: Context) -> Any:
        self._check_key(context, "management")
        await self.repository.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(self, request: Any, context: Context) -> Any:
        self._check_key(context, "management")
        await self.repository.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


SERVICE = "inference.GRPCInferenceService"


@dataclass(frozen=True)
class RpcMethod:
    """One method of a gRPC service (``inference.GRPCInferenceService``, or TorchServe's) as both gRPC servers
    register it."""

    name: str
    handler: Callable[..., Any]
    request_type: Any
    """The protobuf class of the request, or None: the handler takes the serialized bytes."""
    response_type: Any
    """The protobuf class of the answer, or None: the handler returns serialized bytes."""
    streaming: bool = False
    """Requests and answers are both streams (``ModelStreamInfer``)."""
    authorize: Callable[[Metadata], None] | None = None
    """Checks a call's headers for the key its calls need (``InferenceServicer.authorize``), before any of its
    message is read; None for the health calls, and for every call of a kind that needs no key here."""
    service: str = SERVICE

    @property
    def path(self) -> bytes:
        """The HTTP/2 path of its calls: ``/{service}/{name}``."""
        return f"/{self.service}/{self.name}".encode()


def rpc_methods(servicer: InferenceServicer) -> dict[str, RpcMethod]:
    """The service's methods by name."""
    s = servicer
    # A method's check is left out when its kind needs no key (settings and keys do not change while serving).
    inference: Callable[[Metadata], None] | None = None
    management: Callable[[Metadata], None] | None = None
    if s.key_required("inference"):
        inference = functools.partial(s.authorize, kind="inference")
    if s.key_required("management"):
        management = functools.partial(s.authorize, kind="management")
    methods = [
        RpcMethod("ServerLive", s.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
        RpcMethod("ServerReady", s.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
        RpcMethod("ModelReady", s.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
        RpcMethod("ServerMetadata", s.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
        RpcMethod(
            "ModelMetadata", s.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse, authorize=inference
        ),
        RpcMethod("ModelInfer", s.model_infer, None, None, authorize=inference),
        RpcMethod("ModelStreamInfer", s.model_stream_infer, None, None, streaming=True, authorize=inference),
        RpcMethod(
            "ModelStatistics",
            s.model_statistics,
            pb.ModelStatisticsRequest,
            pb.ModelStatisticsResponse,
            authorize=inference,
        ),
        RpcMethod(
            "RepositoryIndex",
            s.repository_index,
            pb.RepositoryIndexRequest,
            pb.RepositoryIndexResponse,
            authorize=management,
        ),
        RpcMethod(
            "RepositoryModelLoad",
            s.repository_model_load,
            pb.RepositoryModelLoadRequest,
            pb.RepositoryModelLoadResponse,
            authorize=management,
        ),
        RpcMethod(
            "RepositoryModelUnload",
            s.repository_model_unload,
            pb.RepositoryModelUnloadRequest,
            pb.RepositoryModelUnloadResponse,
            authorize=management,
        ),
    ]
    return {method.name: method for method in methods}
