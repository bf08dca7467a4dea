"""The gRPC service on grpcio's asyncio server (``grpc_server = "grpcio"``; DMS's own HTTP/2 is the default).

The same methods (``rpc_methods``) as on DMS's own HTTP/2, registered as grpcio's generic handlers, and the same
limits: messages bounded by ``grpc_message_limit``, streams per connection by ``grpc_max_concurrent_streams``,
and a call's key checked before its message is read (``KeyFirst``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from dms.auth import KeyStore
from dms.dataplane import DataPlane
from dms.errors import DMSError
from dms.grpc.errors import GRPC_STATUS
from dms.grpc.servicer import SERVICE, Context, InferenceServicer, RepositoryChanges, RpcMethod, rpc_methods
from dms.observability.metrics import ServerMetrics


def _grpcio_handler(method: RpcMethod) -> grpc.RpcMethodHandler:
    decode = method.request_type.FromString if method.request_type is not None else None
    encode = method.response_type.SerializeToString if method.response_type is not None else None
    if method.streaming:
        return grpc.stream_stream_rpc_method_handler(method.handler, decode, encode)
    return grpc.unary_unary_rpc_method_handler(method.handler, decode, encode)


class KeyFirst(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints
    """grpcio reads (and inflates) a unary call's message before its handler runs: this checks the call's key
    from its metadata first, and answers a call without the right one by a handler that never asks for its
    message, so none of it is read or inflated (as on DMS's own HTTP/2, where the connection does the same)."""

    def __init__(self, methods: dict[str, RpcMethod]) -> None:
        self.methods = methods

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        method = self.methods.get(details.method.rpartition("/")[2])
        if method is not None and method.authorize is not None:
            try:
                method.authorize(dict(details.invocation_metadata or ()))
            except DMSError as exc:
                return grpc.stream_unary_rpc_method_handler(_refusing(exc))
        return await continuation(details)


def _refusing(exc: DMSError) -> Callable[[Any, Context], Any]:
    async def refuse(requests: Any, context: Context) -> None:
        await context.abort(GRPC_STATUS[exc.kind], exc.message)

    return refuse


def build_grpc_server(
    dataplane: DataPlane, metrics: ServerMetrics, keys: KeyStore | None, repository: RepositoryChanges | None = None
) -> grpc.aio.Server:
    """The service on grpcio's asyncio server (``grpc_server = "grpcio"``; DMS's own HTTP/2 is the default)."""
    settings = dataplane.settings
    methods = rpc_methods(InferenceServicer(dataplane, metrics, keys, repository))
    keyed = keys is not None and (settings.token_auth or settings.inference_token_auth)
    # Answers are as large as their models make them (grpcio's default: no limit on what is sent).
    server = grpc.aio.server(
        interceptors=[KeyFirst(methods)] if keyed else None,
        options=[
            ("grpc.max_receive_message_length", settings.grpc_message_limit),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
        ],
    )
    handlers = {name: _grpcio_handler(method) for name, method in methods.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(settings.grpc_address)
    return server
