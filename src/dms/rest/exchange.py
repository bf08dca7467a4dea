"""One request on a DMS HTTP/1.1 connection (``dms.rest.http1_server``), as the router and the ASGI bridge answer it:
whole (``reply``) or streamed (``start``, ``send_body``), in the order its connection's requests came."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dms.httputil.http1_framing import encode_head
from dms.httputil.http1_wire import WireRequest
from dms.rest.forwarding import Reply

if TYPE_CHECKING:
    from dms.rest.http1_server import Http1Connection


class Exchange:
    """One request on a connection, from its arrival whole to its answer's last byte."""

    __slots__ = ("chunked", "connection", "gone", "keep_alive", "on_gone", "request", "running", "started")

    def __init__(self, connection: Http1Connection, request: WireRequest) -> None:
        self.connection = connection
        self.request = request
        self.keep_alive = request.keep_alive
        self.gone = False
        """The client left before the answer was written."""
        self.on_gone: Any = None
        """Called once if the client leaves while this is being answered."""
        self.running = False
        """It was handed to the router (it waits while the client does not read the answers before it)."""
        self.started = False
        """The answer's head was written (a streamed answer is under way)."""
        self.chunked = False

    @property
    def client(self) -> tuple[str, int] | None:
        return self.connection.client

    def reply(self, reply: Reply) -> None:
        """Write the whole answer (nothing if the client has gone) and go on to the next request."""
        self.connection.write_reply(self, reply)

    # -- a streamed answer (the ASGI bridge) -----------------------------------------------------
    def start(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, more: bool) -> None:
        """Write an answer's head and first body bytes; with ``more``, the body streams (chunked on HTTP/1.1)."""
        self.started = True
        connection = self.connection
        if not more:
            connection.write_reply(self, Reply(status, headers, body))
            return
        if not any(name == b"content-length" for name, _ in headers):
            if self.request.http_version == "1.1":
                self.chunked = True
                headers = [*headers, (b"transfer-encoding", b"chunked")]
            else:
                self.keep_alive = False  # an HTTP/1.0 client reads to the end of the connection
        connection.write(self, encode_head(status, headers, connection.date(), self.keep_alive))
        self.send_body(body, more=True)

    def send_body(self, body: bytes, more: bool) -> None:
        """More of a streamed answer; the last part without ``more`` ends it."""
        connection = self.connection
        head_only = self.request.method == "HEAD"
        if body and not head_only:
            connection.write(self, [b"%x\r\n" % len(body), body, b"\r\n"] if self.chunked else [body])
        if not more:
            if self.chunked and not head_only:
                connection.write(self, [b"0\r\n\r\n"])
            connection.answered(self)

    @property
    def paused(self) -> bool:
        """The client is not taking what was written (its connection holds more than its high-water mark)."""
        return self.connection.flow.paused

    async def drained(self) -> None:
        """Wait until the client takes writes again, or has gone."""
        await self.connection.drain()

    def abort(self) -> None:
        """The answer cannot be finished (the app or the model failed after it began, or the client takes none of
        it): the connection is dropped at once, with what was not sent yet."""
        self.keep_alive = False
        self.connection.abort()
        self.connection.answered(self)
