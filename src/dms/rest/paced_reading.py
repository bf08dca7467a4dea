"""HTTP/1.1 connections that read no more requests while their answers go unread.

uvicorn's httptools protocol resumes reading a connection whenever a request in progress asks for
its body (``receive``) and after every answer, even while requests pipelined behind it wait in its
queue, and it goes on reading while the answers it writes pile up in the transport because the
client does not read them. Each read is parsed at once, so a client that sent requests back to back
and never read a byte had all of them parsed and queued in the server's memory: 31 MB of tiny
``/predictions`` requests grew the frontend by ~400 MiB, which stayed with the process after the
client left (``tests/e2e/test_unread_answers.py``). Here a connection reads on only when no request
waits in its queue and the transport is taking its writes (``pause_writing`` / ``resume_writing``);
the kernel's socket buffers then hold such a client back, as they would any other.

Every uvicorn HTTP/1.1 server of DMS uses it, through ``dms.rest.http1_connection.Http1Protocol``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class PacedFlowControl(FlowControl):
    """uvicorn's flow control for one connection, resuming reads only when the connection is ready for more."""

    def __init__(self, transport: asyncio.Transport, queued: deque[Any], resumed: Callable[[], None]) -> None:
        super().__init__(transport)
        self._queued = queued
        """The connection's pipelined requests, waiting for the one in progress."""
        self._resumed = resumed
        """Called when reading starts again after a pause."""

    def resume_reading(self) -> None:
        if self.read_paused and not self.write_paused and not self._queued:
            super().resume_reading()
            self._resumed()


class PacedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, reading only what the connection is ready to answer."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
        super().connection_made(transport)
        self.flow = PacedFlowControl(transport, self.pipeline, self.reading_resumed)

    def reading_resumed(self) -> None:
        """The connection reads again after a pause of the server's own (a subclass may take note)."""

    def pause_writing(self) -> None:
        """The transport holds more unsent bytes than its high-water mark: the client is not reading."""
        super().pause_writing()
        self.flow.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.flow.resume_reading()
