"""What a port does with each request, whoever carries it: the one route table of the routes that forward to
a model, the one key check, and the hand-over to the port's ASGI app for everything else.

``CallRouter`` is used two ways, with the same rules:

- **From DMS's own connections** (``dms.rest.http1_server``): ``run(exchange)`` gets a whole request. A
  forwarding route goes straight to its ``Forwarder`` (``submit``, and a callback on the model's future writes
  the answer through ``conclude``: no task, no ASGI). Any other goes to the ASGI app (``dms.rest.asgi_bridge``).
- **As an ASGI app** (``__call__``), for a user who mounts DMS's inference API in another ASGI server:
  the same table, the same key check, ``Forwarder.forward`` for the forwarding routes.

The table (``RouteTable``) is declared once, as path templates; it also gives the Starlette routes of the
same paths (``starlette_routes``), which the app underneath holds so that another method on those paths is
answered 405 there and the OpenAPI listing sees them; the table answers every request they accept first.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from dms.auth import KeyKind, KeyStore
from dms.dataplane.outcomes import Outcome, outcome_of
from dms.errors import DMSError, InternalError
from dms.messages import ResponseItem
from dms.rest.asgi_bridge import AsgiCall
from dms.rest.chunked_answer import ChunkedAnswer
from dms.rest.errors import error_response
from dms.rest.forwarding import Forwarder, Reply

if TYPE_CHECKING:
    from dms.engine.chunk_streams import StreamControl
    from dms.messages import Chunk
    from dms.rest.exchange import Exchange
    from dms.rest.generation import AnswerForm

log = logging.getLogger("dms.http")


@dataclass(frozen=True)
class ForwardRoute:
    """One path template (``/v2/models/{model_name}/versions/{model_version}/infer``) answered by a forwarder.

    A parameter takes a whole segment, or a segment up to a literal suffix (``{model_name}:predict``)."""

    template: str
    methods: frozenset[str]
    forwarder: Forwarder

    @functools.cached_property
    def segments(self) -> tuple[tuple[str, str, str], ...]:
        """Per segment: (literal, parameter, suffix); a literal segment has no parameter."""
        parts = []
        for segment in self.template.strip("/").split("/"):
            if segment.startswith("{"):
                name, _, suffix = segment[1:].partition("}")
                parts.append(("", name, suffix))
            else:
                parts.append((segment, "", ""))
        return tuple(parts)


class RouteTable:
    """The routes that forward to a model, tried in order (see the module's docstring)."""

    def __init__(self, routes: Iterable[ForwardRoute]) -> None:
        self.routes = tuple(routes)
        self.by_length: dict[int, tuple[ForwardRoute, ...]] = {}
        """The routes of each number of segments, in order: a path is tried against those alone."""
        for route in self.routes:
            self.by_length[len(route.segments)] = (*self.by_length.get(len(route.segments), ()), route)

    def match(self, method: str, path: str) -> tuple[Forwarder, str, str | None] | None:
        """The forwarder, model and version for a request, or None when no route takes it."""
        if path[:1] != "/":
            return None
        segments = path[1:].split("/")
        for route in self.by_length.get(len(segments), ()):
            params = {}
            for value, (literal, name, suffix) in zip(segments, route.segments, strict=True):
                if not name:
                    if value != literal:
                        break
                elif suffix:
                    if len(value) <= len(suffix) or not value.endswith(suffix):
                        break
                    params[name] = value[: -len(suffix)]
                elif value:
                    params[name] = value
                else:
                    break
            else:
                if method not in route.methods:
                    return None  # the app's route of the same path answers 405
                # OpenAI's routes name no model in the path: their forwarder finds it in the body
                return route.forwarder, params.get("model_name", ""), params.get("model_version")
        return None

    def starlette_routes(self) -> list[Route]:
        return [Route(r.template, r.forwarder.endpoint(), methods=sorted(r.methods)) for r in self.routes]


def key_error(keys: KeyStore, kind: KeyKind, headers: Iterable[tuple[bytes, bytes]]) -> DMSError | None:
    """Why the request's ``Authorization`` does not pass for the ``kind`` key; None when it does. The one key
    check of every HTTP port (the management app's middleware uses it too)."""
    authorization = next((value.decode("latin-1") for name, value in headers if name == b"authorization"), None)
    try:
        keys.check(kind, authorization)
    except DMSError as exc:
        return exc
    return None


class CallRouter:
    """One port's requests: the route table's to their forwarders, the rest to ``app`` (see the docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        table: RouteTable | None = None,
        keys: KeyStore | None = None,
        kind: KeyKind = "inference",
        is_open: Callable[[str], bool] = lambda path: False,
    ) -> None:
        self.app = app
        self.table = table
        self.keys = keys
        self.kind = kind
        self.is_open = is_open
        self.tasks: set[asyncio.Task[None]] = set()
        """The ASGI calls in progress (cancelled when the server stops)."""

    def denial(self, path: str, headers: Iterable[tuple[bytes, bytes]]) -> DMSError | None:
        """Why the request may not pass (the port's key is on and it does not carry it); None: it may."""
        if self.keys is None or self.is_open(path):
            return None
        return key_error(self.keys, self.kind, headers)

    def refusal(self, path: str, headers: Iterable[tuple[bytes, bytes]]) -> Reply | None:
        denial = self.denial(path, headers)
        return None if denial is None else Reply.of(error_response(denial))

    # -- a DMS connection's request --------------------------------------------------------------
    def run(self, exchange: Exchange) -> None:
        """Answer a request its connection read whole (or refused: ``request.refusal``, already key-checked)."""
        request = exchange.request
        if request.denied and request.refusal is not None:
            exchange.reply(Reply.of(error_response(request.refusal)))  # refused before it counts as a request
            return
        found = self.table.match(request.method, request.path) if self.table is not None else None
        if found is not None:
            _ModelCall(exchange, *found)
        elif request.refusal is not None:
            exchange.reply(Reply.of(error_response(request.refusal)))
        else:
            AsgiCall(exchange, self.app, self.tasks)

    def cancel_calls(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    # -- as an ASGI app --------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope["path"], scope["headers"])
            if refusal is not None:
                await refusal.send(send)
                return
            found = self.table.match(scope["method"], scope["path"]) if self.table is not None else None
            if found is not None:
                forwarder, name, version = found
                headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
                reply = await forwarder.forward(name, version, headers, scope["query_string"], receive)
                await reply.send(send)
                return
        await self.app(scope, receive, send)


class _ModelCall:
    """A request on a forwarding route: submitted to the model as it arrived whole, answered from its future."""

    __slots__ = (
        "exchange",
        "form",
        "forwarder",
        "future",
        "lookup",
        "name",
        "request_id",
        "started_ns",
        "streamed",
        "version",
    )

    def __init__(self, exchange: Exchange, forwarder: Forwarder, name: str, version: str | None) -> None:
        self.exchange = exchange
        self.forwarder = forwarder
        self.name = name
        self.version = version
        request = exchange.request
        headers = [(key.decode("latin-1"), value.decode("latin-1")) for key, value in request.headers]
        self.lookup = lookup = dict(headers)
        self.request_id = ""
        self.started_ns = 0
        self.future: asyncio.Future[ResponseItem] | None = None
        self.streamed: ChunkedAnswer | None = None
        """The answer, once its first chunk came (a handler that streams)."""
        self.form: AnswerForm | None = None
        """A generation protocol's form of the answer (``Forwarder.prepare``)."""
        try:
            self.started_ns, self.request_id = forwarder.arrived(lookup)
            if request.refusal is not None:
                self._conclude(request.refusal)
                return
            body = request.body
            if forwarder.generation is not None:
                self.name, body, self.form = forwarder.prepare(name, version, body, self.request_id)
            streams = forwarder.streams if self.form is None else self.form.stream
            future = forwarder.submit(
                self.name, version, headers, lookup, request.query, self.request_id, body, self if streams else None
            )
        except DMSError as exc:
            self._conclude(exc)
            return
        except Exception as exc:
            self._unexpected(exc)
            return
        self.future = future
        exchange.on_gone = self._gone  # dropped from the model's queue; ``_answered`` reports it
        future.add_done_callback(self._answered)

    def _gone(self) -> None:
        if self.streamed is not None:
            self.streamed.gone()
        if self.future is not None:
            self.future.cancel()

    def chunk(self, chunk: Chunk, control: StreamControl) -> None:
        """A piece of a streamed answer (``dms.engine.chunk_streams.ChunkReader``)."""
        streamed = self.streamed
        if streamed is not None:
            streamed.more(chunk)
            return
        if self.exchange.gone:
            control.stop()
            return
        head = self.forwarder.stream_head(self.name, self.request_id, chunk, self.form)
        if isinstance(head, DMSError):
            control.stop()
            if self.future is not None:
                self.future.remove_done_callback(self._answered)
                self.future.cancel()
            self._conclude(head)
            return
        forwarder = self.forwarder
        stall_s = forwarder.dataplane.settings.stream_stall_timeout_s
        count = forwarder.stream_started(self.name, self.version, self.started_ns)
        self.streamed = ChunkedAnswer(self.exchange, control, head, self.request_id, stall_s, self.form, count)

    def _answered(self, future: asyncio.Future[ResponseItem]) -> None:
        # Unhooked, so that the call and its exchange, which refer to each other through it, are freed at once
        # rather than left to the garbage collector (a collection of the whole heap stalls every request for ms).
        self.exchange.on_gone = None
        try:
            outcome = outcome_of(future, gone=self.exchange.gone)
        except Exception as exc:
            self._unexpected(exc)
            return
        if self.streamed is not None:
            status = self.streamed.end(outcome)
            batch_size = outcome.batch_size if isinstance(outcome, ResponseItem) else 0
            self.forwarder.report(self.name, self.version, self.request_id, self.started_ns, status, batch_size)
            return
        self._conclude(outcome)

    def _conclude(self, outcome: Outcome) -> None:
        """Report the request and write its answer (unless the client has gone)."""
        try:
            reply = self.forwarder.conclude(
                self.name, self.version, self.lookup, self.request_id, self.started_ns, outcome, self.form
            )
        except Exception as exc:
            self._unexpected(exc)
            return
        self.exchange.reply(reply)

    def _unexpected(self, exc: BaseException) -> None:
        """A bug on the way: log it, answer 500 as the ASGI path would, and close the connection."""
        log.error("request %s to model %s failed unexpectedly", self.request_id, self.name, exc_info=exc)
        exchange = self.exchange
        exchange.keep_alive = False
        try:
            reply = self.forwarder.conclude(
                self.name,
                self.version,
                self.lookup,
                self.request_id,
                self.started_ns,
                InternalError(f"{type(exc).__name__} while answering the request"),
            )
        except Exception:
            log.exception("request %s: could not even answer 500", self.request_id)
            reply = Reply.of(error_response(InternalError("the request could not be answered")))
        exchange.reply(reply)
