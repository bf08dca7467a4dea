"""An ASGI app answering one request of a DMS connection (``dms.rest.http1_server.Exchange``).

The requests a port does not answer from a model (health, metadata, management, metrics) go to its
Starlette app through ASGI: one task per request, with the request's whole body (already read and
bounded by the wire) in the first ``receive``, and ``http.disconnect`` from the next once the client has
left or the answer is sent. ``send`` writes as it is called: an answer of one body part goes out in one
write with its length; one in several parts streams (chunked), waiting while the client reads slower than
it is written. An app that fails before its answer began is answered 500 with the JSON error body; after,
its connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message

from dms.errors import InternalError
from dms.rest.errors import error_response
from dms.rest.forwarding import Reply

if TYPE_CHECKING:
    from dms.rest.exchange import Exchange

log = logging.getLogger("dms.http")
_DISCONNECT: Message = {"type": "http.disconnect"}


class AsgiCall:
    """One request through an ASGI app (see the module's docstring)."""

    def __init__(self, exchange: Exchange, app: ASGIApp, tasks: set[asyncio.Task[None]]) -> None:
        self.exchange = exchange
        self.app = app
        self.body_taken = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_sent = False
        self.done = False
        self.left: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        exchange.on_gone = self._gone
        task = asyncio.get_running_loop().create_task(self._run())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _gone(self) -> None:
        if not self.left.done():
            self.left.set_result(None)

    def scope(self) -> dict[str, Any]:
        exchange = self.exchange
        request = exchange.request
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version,
            "server": exchange.connection.local,
            "client": exchange.client,
            "scheme": "https" if exchange.connection.server.tls is not None else "http",
            "method": request.method,
            "root_path": "",
            "path": request.path,
            "raw_path": request.raw_path,
            "query_string": request.query,
            "headers": request.headers,
            "state": {},
        }

    async def _run(self) -> None:
        exchange = self.exchange
        try:
            await self.app(self.scope(), self.receive, self.send)
        except Exception as exc:
            log.error("%s %s failed unexpectedly", exchange.request.method, exchange.request.path, exc_info=exc)
            self._fail("the request could not be answered")
            return
        except asyncio.CancelledError:
            self._fail("the server stopped before the answer was ready")
            raise
        if not self.done:
            log.error("%s %s: the app returned without answering", exchange.request.method, exchange.request.path)
            self._fail("the request was not answered")

    def _fail(self, message: str) -> None:
        if self.done:
            return
        self.done = True
        self._gone()
        if self.head_sent:
            self.exchange.abort()
        else:
            self.exchange.keep_alive = False
            self.exchange.reply(Reply.of(error_response(InternalError(message))))

    async def receive(self) -> Message:
        if not self.body_taken:
            self.body_taken = True
            return {"type": "http.request", "body": self.exchange.request.body, "more_body": False}
        await self.left
        return _DISCONNECT

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.done:
            if self.exchange.gone:
                return  # the client left: what the app sends goes nowhere
            raise RuntimeError(f"ASGI message {kind!r} after the answer was complete")
        if kind == "http.response.start":
            if self.status:
                raise RuntimeError("http.response.start sent twice")
            self.status = int(message["status"])
            self.headers = [(bytes(name).lower(), bytes(value)) for name, value in message.get("headers", ())]
            return
        if kind != "http.response.body" or not self.status:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        exchange = self.exchange
        if not more:
            self.done = True
            self._gone()
        if not self.head_sent:
            self.head_sent = True
            exchange.start(self.status, self.headers, body, more)
        else:
            exchange.send_body(body, more)
        if more:
            await exchange.connection.drain()
