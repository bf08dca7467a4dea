"""A gRPC port (``grpc_server = "dms"``, the default): DMS's own HTTP/2 connections (``dms.grpc.connection``) on a
``dms.httputil.port.Port``, serving ``inference.GRPCInferenceService`` through ``InferenceServicer`` and any other
services' methods it is given (TorchServe's, ``dms.grpc.torchserve_inference`` and ``torchserve_management``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from dms.grpc.connection import GrpcConnection
from dms.grpc.servicer import InferenceServicer, RpcMethod, rpc_methods
from dms.httputil.connection_deadlines import ConnectionBudget, ReadLimits
from dms.httputil.port import Port

IDLE_CONNECTION_S = 600.0
"""How long a connection with no call may stay open: gRPC channels stay open between calls."""


class GrpcServer(Port):
    def __init__(
        self,
        servicer: InferenceServicer,
        max_message_bytes: int,
        limits: ReadLimits | None = None,
        max_concurrent_streams: int = 128,
        idle_timeout_s: float = IDLE_CONNECTION_S,
        budget: ConnectionBudget | None = None,
        methods: Iterable[RpcMethod] | None = None,
    ) -> None:
        limits = limits or ReadLimits()
        super().__init__(budget or limits.connections)
        self.servicer = servicer
        if methods is None:
            methods = rpc_methods(servicer).values()
        self.methods = {method.path: method for method in methods}
        """The methods served, by the HTTP/2 path of their calls (``/{service}/{method}``); by default
        ``servicer``'s. ``servicer`` answers ``ModelInfer`` (``dms.grpc.answering``) when it is served."""
        self.max_message_bytes = max_message_bytes
        self.limits = limits
        self.max_concurrent_streams = max_concurrent_streams
        """Calls one connection may have open at once (``grpc_max_concurrent_streams``); a stream past it is reset
        with REFUSED_STREAM at once, so a client cannot make the server keep thousands of calls for it."""
        self.idle_timeout_s = idle_timeout_s
        limits_ = self.limits
        self.first_look = (
            min(limits_.timeout_s, limits_.body_rate_grace_s) if limits_.min_body_rate else limits_.timeout_s
        )
        """Seconds from a unary request's first byte to the timer's first look at it."""
        self.tasks: set[asyncio.Task[None]] = set()
        """Calls answered by a task (unary calls but ``ModelInfer``, streams)."""

    def connection(self) -> GrpcConnection:
        return GrpcConnection(self)

    def cancel_work(self) -> None:
        for task in list(self.tasks):
            task.cancel()
