"""One listening port of DMS's own protocols (HTTP/1.1 and gRPC): it accepts connections on a bound socket (or,
for a frontend's control API, a Unix socket), keeps the connections it made, and stops gracefully.

A stop closes the listening socket, but first takes up the connections the kernel had completed for it that
nobody had accepted (closing the socket would reset them, and their clients may have sent a whole request);
then every connection is told to stop (``shutdown``: its request in progress finishes, it takes no new one)
and the port waits for them up to the grace period, after which what is left is closed and the port's own
work (``cancel_work``) is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import stat
from abc import ABC, abstractmethod
from typing import Any, Protocol

from dms.httputil.connection_deadlines import ConnectionBudget
from dms.httputil.tls import HANDSHAKE_S

log = logging.getLogger("dms.server")

LINGER_S = 0.25
"""How long a connection between requests may still bring one once its port stops (``shutdown``)."""


class PortConnection(Protocol):
    def shutdown(self) -> None:
        """The port is stopping: finish what is in progress, take nothing new, then close."""

    def close(self) -> None:
        """Close now."""


class Port(ABC):
    """A listening port; ``connection`` makes the protocol of each connection, which adds itself to
    ``connections`` once admitted and takes itself out when closed."""

    def __init__(self, budget: ConnectionBudget) -> None:
        self.budget = budget
        """The process's open connections across its ports (``max_connections``)."""
        self.connections: set[PortConnection] = set()
        self.server: asyncio.Server | None = None
        self.sock: socket.socket | None = None
        self.tls: ssl.SSLContext | None = None
        """Its TLS context when the port serves TLS (``dms.httputil.tls``); set before ``start``."""

    def admit(self, connection: PortConnection) -> bool:
        """Take a place in the connection budget for a connection that opened; False (nothing taken): refuse it."""
        if not self.budget.take():
            return False
        self.connections.add(connection)
        return True

    def release(self, connection: PortConnection) -> None:
        """A connection closed: its place in the budget is given back (once, and only if it had one)."""
        if connection in self.connections:
            self.connections.discard(connection)
            self.budget.give_back()

    @abstractmethod
    def connection(self) -> asyncio.Protocol:
        """The protocol of a new connection."""

    @abstractmethod
    def cancel_work(self) -> None:
        """Cancel what the port's connections still run once the grace period is over."""

    async def start(self, sock: socket.socket) -> None:
        """Serve the bound socket ``sock``."""
        sock.setblocking(False)
        self.sock = sock
        self.server = await asyncio.get_running_loop().create_server(
            self.connection, sock=sock, backlog=2048, **self._tls_arguments()
        )

    def _tls_arguments(self) -> dict[str, Any]:
        if self.tls is None:
            return {}
        return {"ssl": self.tls, "ssl_handshake_timeout": HANDSHAKE_S}

    async def start_unix(self, path: str) -> None:
        """Serve a Unix socket at ``path`` (a stale one left by a process that died is replaced), for its owner only."""
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)
        self.server = await asyncio.get_running_loop().create_unix_server(self.connection, path=path)
        os.chmod(path, 0o600)

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, serve what was waiting to be accepted, let what is in progress finish within ``grace_s``,
        and close every connection."""
        if self.server is None:
            return
        held = self.sock.dup() if self.sock is not None else None
        self.server.close()
        if held is not None:
            with held:
                await self._serve_backlog(held)
        for connection in list(self.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace_s, LINGER_S * 2)
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.close()
        self.cancel_work()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 1)

    async def _serve_backlog(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        while True:
            try:
                connection, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("the connections waiting on a closing port could not all be served: %s", exc)
                return
            connection.setblocking(False)
            await loop.connect_accepted_socket(self.connection, sock=connection, **self._tls_arguments())


class WriteFlow:
    """Whether a connection's transport takes writes (asyncio's ``pause_writing`` / ``resume_writing``: it holds
    more unsent bytes than its high-water mark while the client does not read), and a way to wait until it does."""

    __slots__ = ("_drained", "paused")

    def __init__(self) -> None:
        self.paused = False
        self._drained: asyncio.Future[None] | None = None

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.wake()

    def wake(self) -> None:
        """Release whoever waits (writes flow again, or the connection is gone)."""
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drain(self, transport: asyncio.BaseTransport) -> None:
        """Wait while the transport takes no more writes (a streamed answer's flow control)."""
        if self.paused and not transport.is_closing():
            if self._drained is None or self._drained.done():
                self._drained = asyncio.get_running_loop().create_future()
            await self._drained
