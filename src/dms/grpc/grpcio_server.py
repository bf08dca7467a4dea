"""The gRPC service on grpcio's asyncio server (``grpc_server = "grpcio"``; DMS's own HTTP/2 is the default).

The same methods (``rpc_methods``, and TorchServe's) as on DMS's own HTTP/2, registered as grpcio's generic
handlers, and the same limits: messages bounded by ``grpc_message_limit``, streams per connection by
``grpc_max_concurrent_streams``, and a call's key checked before its message is read (``KeyFirst``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from dms.errors import DMSError
from dms.grpc.errors import GRPC_STATUS
from dms.grpc.servicer import Context, RpcMethod
from dms.settings import ServerSettings


def _grpcio_handler(method: RpcMethod, stall_s: float) -> grpc.RpcMethodHandler:
    decode = method.request_type.FromString if method.request_type is not None else None
    encode = method.response_type.SerializeToString if method.response_type is not None else None
    if method.streaming:
        return grpc.stream_stream_rpc_method_handler(_streaming_with_status(method.handler, stall_s), decode, encode)
    return grpc.unary_unary_rpc_method_handler(_with_status(method.handler), decode, encode)


def _with_status(handler: Callable[..., Any]) -> Callable[..., Any]:
    """A handler whose ``DMSError`` ends the call with its kind's status (``call_core.status_of`` does it on
    DMS's own HTTP/2)."""

    async def answered(request: Any, context: Context) -> Any:
        try:
            return await handler(request, context)
        except DMSError as exc:
            await context.abort(GRPC_STATUS[exc.kind], exc.message)

    return answered


def _streaming_with_status(handler: Callable[..., Any], stall_s: float) -> Callable[..., Any]:
    """A streaming handler whose answers are written as they come, each once its client has room for it (grpcio's
    flow control); a client that takes none for ``stall_s`` (``stream_stall_timeout_s``) is given up with
    DEADLINE_EXCEEDED, as on DMS's own HTTP/2."""

    async def answered(requests: Any, context: Context) -> None:
        try:
            async with contextlib.aclosing(handler(requests, context)) as answers:
                async for answer in answers:
                    write = asyncio.ensure_future(context.write(answer))
                    if not (await asyncio.wait((write,), timeout=stall_s))[0]:
                        await answers.aclose()  # the models stop making what nobody reads
                        details = f"the client took none of the answer for {stall_s:g} s (stream_stall_timeout_s)"
                        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, details)
        except DMSError as exc:
            await context.abort(GRPC_STATUS[exc.kind], exc.message)

    return answered


class KeyFirst(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints
    """grpcio reads (and inflates) a unary call's message before its handler runs: this checks the call's key
    from its metadata first, and answers a call without the right one by a handler that never asks for its
    message, so none of it is read or inflated (as on DMS's own HTTP/2, where the connection does the same)."""

    def __init__(self, methods: dict[str, RpcMethod]) -> None:
        self.methods = methods
        """By their calls' path (``/{service}/{method}``)."""

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        method = self.methods.get(details.method)
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


def build_grpc_server(methods: Iterable[RpcMethod], settings: ServerSettings) -> grpc.aio.Server:
    """``methods`` on grpcio's asyncio server (``grpc_server = "grpcio"``; DMS's own HTTP/2 is the default), each
    service under its own name; ``add_port`` gives it its address."""
    by_path = {method.path.decode(): method for method in methods}
    keyed = any(method.authorize is not None for method in by_path.values())
    # Answers are as large as their models make them (grpcio's default: no limit on what is sent).
    server = grpc.aio.server(
        interceptors=[KeyFirst(by_path)] if keyed else None,
        options=[
            ("grpc.max_receive_message_length", settings.grpc_message_limit),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
        ],
    )
    services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for method in by_path.values():
        handler = _grpcio_handler(method, settings.stream_stall_timeout_s)
        services.setdefault(method.service, {})[method.name] = handler
    server.add_generic_rpc_handlers(
        tuple(grpc.method_handlers_generic_handler(service, handlers) for service, handlers in services.items())
    )
    return server


def add_port(server: grpc.aio.Server, address: str, tls_pair: tuple[bytes, bytes] | None) -> None:
    """Listen at ``address``: over TLS with the PEM (private key, certificate chain) ``tls_pair``, or plain."""
    if tls_pair is not None:
        server.add_secure_port(address, grpc.ssl_server_credentials([tls_pair]))
    else:
        server.add_insecure_port(address)
