"""The server's open ports: the inference, management and metrics HTTP servers (DMS's own HTTP/1.1,
``dms.rest.http1_server``) and gRPC (DMS's own HTTP/2, ``dms.grpc.server``, or grpcio), built from the settings,
opened together and closed with a grace period.

With several frontends (``dms.frontends``) the inference and gRPC ports are bound with ``SO_REUSEPORT``
(``listening_socket``), and a frontend after the first opens the inference API and gRPC only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp

from dms.auth import KeyStore
from dms.dataplane import DataPlane
from dms.httputil import tls
from dms.httputil.connection_deadlines import ConnectionBudget, ReadLimits
from dms.httputil.port import Port
from dms.observability.metrics import ServerMetrics
from dms.rest.calls import CallRouter
from dms.rest.http1_server import Http1Server
from dms.rest.inference import build_inference_app
from dms.rest.management import build_management_app
from dms.rest.metrics import build_metrics_app
from dms.settings import ServerSettings, parse_address

if TYPE_CHECKING:
    from dms.frontends.group import FrontendGroup
    from dms.grpc.servicer import RepositoryChanges

log = logging.getLogger("dms.server")


def http_server(app: ASGIApp, settings: ServerSettings, limits: ReadLimits) -> Http1Server:
    """An HTTP port serving ``app`` (a ``CallRouter``, or any ASGI app, which one is made for)."""
    router = app if isinstance(app, CallRouter) else CallRouter(app)
    return Http1Server(router, limits, settings.max_request_size_bytes)


def unix_socket_server(app: ASGIApp, settings: ServerSettings) -> Http1Server:
    """An HTTP server for a Unix socket (the control API of a frontend after the first; ``start_unix``)."""
    return http_server(app, settings, ReadLimits.of(settings))


def _grpc_servers(
    dataplane: DataPlane,
    metrics: ServerMetrics,
    keys: KeyStore | None,
    repository: RepositoryChanges | None,
    limits: ReadLimits,
    frontends: FrontendGroup | None,
    second_frontend: bool,
) -> dict[str, Any]:
    """The gRPC ports by their address's setting: inference (the Open Inference Protocol's service and TorchServe's
    ``InferenceAPIsService``) and, when ``grpc_management_address`` is set and on the first frontend, TorchServe's
    ``ManagementAPIsService``; each a ``GrpcServer`` (``grpc_server = "dms"``) or a grpcio server."""
    from dms.grpc.servicer import InferenceServicer, rpc_methods
    from dms.grpc.torchserve_inference import torchserve_inference_methods
    from dms.grpc.torchserve_management import torchserve_management_methods

    settings = dataplane.settings
    servicer = InferenceServicer(dataplane, metrics, keys, repository)
    wanted = {"grpc_address": [*rpc_methods(servicer).values(), *torchserve_inference_methods(servicer)]}
    if settings.grpc_management_address is not None and not second_frontend:
        wanted["grpc_management_address"] = torchserve_management_methods(servicer, frontends)
    if settings.grpc_server == "grpcio":
        from dms.grpc.grpcio_server import build_grpc_server

        return {name: build_grpc_server(methods, settings) for name, methods in wanted.items()}
    from dms.grpc.server import GrpcServer

    return {
        name: GrpcServer(
            servicer, settings.grpc_message_limit, limits, settings.grpc_max_concurrent_streams, methods=methods
        )
        for name, methods in wanted.items()
    }


RESERVED_DESCRIPTORS_MIN = 64


def connection_limit(settings: ServerSettings) -> int:
    """``max_connections``, or what the descriptor limit leaves once the server's own needs are kept aside.

    The soft limit is raised to the hard one first (as the Go runtime does for its servers): the default soft
    limit of 1,024 is a relic that a few hundred held connections would exhaust."""
    if settings.max_connections is not None:
        return settings.max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    soft = min(soft, 1 << 20) if soft != resource.RLIM_INFINITY else 1 << 20
    return max(1, soft - max(RESERVED_DESCRIPTORS_MIN, soft // 8))


class PortError(Exception):
    """A port could not be opened: the message says which, why, and what to do (printed as one line)."""


def port_problem(address: str, setting: str, exc: BaseException) -> str:
    flag = "--" + setting.replace("_", "-")
    if (isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE) or "in use" in str(exc):
        return f"{address} is in use (another DMS? dms stop, or {flag})"
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        return f"{address} may not be opened by this user (ports under 1024 need privileges; {flag})"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRNOTAVAIL:
        return f"{address} is not an address of this machine ({flag})"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"{address} could not be opened: {reason} ({flag})"


def listening_socket(address: str, shared: bool = False) -> socket.socket:
    """The listening socket of a port, bound here so that a failure is told plainly; with ``shared``, one the
    server's other frontends bind too (``SO_REUSEPORT``)."""
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _repository_changes(
    settings: ServerSettings,
    dataplane: DataPlane,
    keys: KeyStore | None,
    frontends: FrontendGroup | None,
    second_frontend: bool,
) -> RepositoryChanges | None:
    """Where gRPC's model-repository calls make their changes; None: in this process (one frontend)."""
    if settings.frontends == 1:
        return None
    from dms.frontends.repository import FrontendZeroRepository, SyncedRepository

    if second_frontend:
        return FrontendZeroRepository(settings, keys)
    if frontends is not None:
        return SyncedRepository(dataplane, frontends)
    return None


class Listeners:
    """The server's open ports: three HTTP servers and the gRPC server.

    With ``second_frontend``, a frontend after the first (``dms.frontends``): the inference API and gRPC
    only. With ``frontends > 1`` the inference and gRPC ports are bound with ``SO_REUSEPORT``.
    """

    def __init__(
        self,
        settings: ServerSettings,
        dataplane: DataPlane,
        metrics: ServerMetrics,
        keys: KeyStore | None,
        frontends: FrontendGroup | None = None,
        second_frontend: bool = False,
    ) -> None:
        self.settings = settings
        self.second_frontend = second_frontend
        # One budget of open connections for all the ports: the descriptors they take are the process's.
        limits = ReadLimits.of(settings, ConnectionBudget(connection_limit(settings)))
        inference = http_server(build_inference_app(dataplane, metrics, keys), settings, limits)
        self.ports: dict[Port, str] = {inference: "inference_address"}
        """The ports DMS serves itself, each with the name of its address's setting."""
        self.shared: set[Port] = {inference} if settings.frontends > 1 else set()
        """The ports the other frontends bind too."""
        if not second_frontend:
            management = build_management_app(dataplane, metrics, keys, frontends)
            self.ports[http_server(management, settings, limits)] = "management_address"
            self.ports[http_server(build_metrics_app(metrics, frontends), settings, limits)] = "metrics_address"
        self.grpcio: dict[Any, str] = {}
        """grpcio's servers (``grpc_server = "grpcio"``), each with the name of its address's setting."""
        if settings.grpc_enabled:
            repository = _repository_changes(settings, dataplane, keys, frontends, second_frontend)
            servers = _grpc_servers(dataplane, metrics, keys, repository, limits, frontends, second_frontend)
            for setting, server in servers.items():
                if isinstance(server, Port):
                    self.ports[server] = setting
                    if settings.frontends > 1 and setting == "grpc_address":
                        self.shared.add(server)
                else:
                    self.grpcio[server] = setting

    def _secure(self) -> tuple[bytes, bytes] | None:
        """With a certificate and key, every port serves TLS (ALPN ``h2`` on gRPC's): DMS's own ports are given
        their context; for grpcio's, the PEM (key, certificate) pair is returned. Raises ``PortError`` naming the
        file that cannot be used."""
        s = self.settings
        if s.tls_certificate_file is None or s.tls_private_key_file is None:
            return None
        contexts = {}
        try:
            for protocol in (tls.HTTP1, tls.HTTP2):
                contexts[protocol] = tls.server_context(s.tls_certificate_file, s.tls_private_key_file, protocol)
        except tls.TlsError as exc:
            raise PortError(str(exc)) from None
        for port, setting in self.ports.items():
            if not setting.startswith("grpc"):
                port.tls = contexts[tls.HTTP1]
            elif s.grpc_tls:
                port.tls = contexts[tls.HTTP2]
        if not s.grpc_tls or not self.grpcio:
            return None
        return s.tls_private_key_file.read_bytes(), s.tls_certificate_file.read_bytes()

    async def open(self) -> None:
        """Bind every port, or raise ``PortError`` saying which could not be bound and why (closing what opened)."""
        tls_pair = self._secure()
        sockets: dict[Port, socket.socket] = {}
        for port, setting in self.ports.items():
            address = getattr(self.settings, setting)
            try:
                sockets[port] = listening_socket(address, shared=port in self.shared)
            except OSError as exc:
                for opened in sockets.values():
                    opened.close()
                raise PortError(port_problem(address, setting, exc)) from None
        for port, sock in sockets.items():
            await port.start(sock)
        for server, setting in list(self.grpcio.items()):
            try:
                from dms.grpc.grpcio_server import add_port

                add_port(server, getattr(self.settings, setting), tls_pair)
                await server.start()
            except RuntimeError as exc:
                del self.grpcio[server]
                await self.close(0)
                raise PortError(port_problem(getattr(self.settings, setting), setting, exc)) from None

    async def close(self, grace_s: float) -> None:
        """Stop accepting; in-flight requests get up to ``grace_s`` to finish."""
        stopping: list[Any] = [port.stop(grace_s) for port in self.ports]
        stopping += [server.stop(grace_s) for server in self.grpcio]
        await asyncio.gather(*stopping)

    def describe(self) -> str:
        s = self.settings
        scheme = "https" if s.tls_certificate_file is not None else "http"
        if self.second_frontend:
            text = f"inference {scheme}://{s.inference_address}"
        else:
            text = f"inference {scheme}://{s.inference_address} management {scheme}://{s.management_address} "
            text += f"metrics {scheme}://{s.metrics_address}"
        if s.frontends > 1:
            text += f" ({s.frontends} frontends)"
        serving = {*self.ports.values(), *self.grpcio.values()}
        tls_note = " (TLS)" if s.tls_certificate_file is not None and s.grpc_tls else ""
        if "grpc_address" in serving:
            text += f" grpc {s.grpc_address}{tls_note}"
        if "grpc_management_address" in serving:
            text += f" grpc-management {s.grpc_management_address}{tls_note}"
        return text
