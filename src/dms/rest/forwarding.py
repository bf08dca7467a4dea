"""The one path every inference request takes over HTTP: read, submit, await, answer, observe.

A ``Forwarder`` reads the body (capped), wraps it untouched in a ``RequestItem`` for its protocol,
submits it to the data plane, waits for the answer unless the client leaves, turns the answer or
any error into a response (in the protocol's own error format), and reports the request to the
server's metrics and access log. Starlette routes use it through ``endpoint()``; the ASGI fast
path, the inference API as an ASGI app (``dms.rest.calls.CallRouter``), calls ``forward`` directly and sends its
``Reply`` itself; DMS's HTTP/1.1 connections (``dms.rest.http1_server``) read the body themselves and call the
two halves of ``forward``, ``submit`` and ``conclude``, from its callbacks. All three answer alike.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Send

from dms.dataplane import DataPlane
from dms.dataplane.outcomes import Outcome
from dms.errors import DMSError, InternalError, error_from_wire
from dms.httputil.compression import decode_content, encode_content
from dms.messages import PROTOCOL_RAW, Chunk, RequestItem, ResponseItem
from dms.observability.metrics import ServerMetrics
from dms.observability.request_ids import new_request_id
from dms.rest.common import read_body, until_answered_or_gone

if TYPE_CHECKING:
    from dms.engine.chunk_streams import ChunkReader
    from dms.observability.tallies import Count
    from dms.rest.generation import AnswerForm, Generation

ErrorFormat = Callable[[DMSError], Response]
Endpoint = Callable[[Request], Awaitable[Response]]

log = logging.getLogger("dms.rest")

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP header name (RFC 9110's token)."""
_NOT_IN_HEADER_VALUE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
"""A character no header value may hold: a control character (a CR or LF would split the answer) or one
that Latin-1 cannot encode."""


_CLEAN_CONTENT_TYPES: set[str] = set()


def malformed_header(content_type: str, headers: list[tuple[str, str]]) -> str | None:
    """The first header of a model's answer that HTTP cannot carry, as ``name: value``; None when all can."""
    if content_type not in _CLEAN_CONTENT_TYPES:
        if _NOT_IN_HEADER_VALUE.search(content_type):
            return f"content-type: {content_type!r}"
        if len(_CLEAN_CONTENT_TYPES) < 64:  # a model answers with a few content types, over and over
            _CLEAN_CONTENT_TYPES.add(content_type)
    for name, value in headers:
        if not _HEADER_NAME.fullmatch(name) or _NOT_IN_HEADER_VALUE.search(value):
            return f"{name!r}: {value!r}"
    return None


def _header_refusal(name: str, request_id: str, content_type: str, headers: list[tuple[str, str]]) -> DMSError | None:
    """The error to answer when a model's answer has a header HTTP cannot carry (the log names it); None if none."""
    problem = malformed_header(content_type, headers)
    if problem is None:
        return None
    log.error("request %s: model %s answered with a header HTTP cannot carry, %s", request_id, name, problem)
    return InternalError("the model answered with a malformed header (the server log names it)")


@dataclass(slots=True)
class Reply:
    """An answer ready to send: status, raw headers (lower-case names), body.

    A model's answers are built here directly, with the headers a Starlette ``Response`` would
    have (``content-length``, ``content-type`` with a UTF-8 charset added to text types): building
    and sending a ``Response`` costs ~5 µs more per request. Error answers come from the
    protocol's error format as a ``Response`` and are taken over as they are.
    """

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @classmethod
    def of(cls, response: Response) -> Reply:
        return cls(response.status_code, list(response.raw_headers), bytes(response.body))

    @classmethod
    def content(cls, status: int, body: bytes, content_type: str, length: bool = True) -> Reply:
        """A model's answer; without ``length``, the head of one whose body streams (no ``content-length``)."""
        has_body = length and not (status < 200 or status in (204, 304))
        headers = [(b"content-length", str(len(body)).encode())] if has_body else []
        if content_type.startswith("text/") and "charset=" not in content_type.lower():
            content_type += "; charset=utf-8"
        headers.append((b"content-type", content_type.encode("latin-1")))
        return cls(status, headers, body)

    def set_header(self, name: str, value: str) -> None:
        """Set a header, replacing any of the same name (in place, as Starlette's ``MutableHeaders`` does)."""
        key, encoded = name.lower().encode("latin-1"), value.encode("latin-1")
        found = [index for index, (existing, _) in enumerate(self.headers) if existing == key]
        for index in reversed(found[1:]):
            del self.headers[index]
        if found:
            self.headers[found[0]] = (key, encoded)
        else:
            self.headers.append((key, encoded))

    def response(self) -> Response:
        """The same answer as a Starlette ``Response`` (for Starlette routes)."""
        response = Response(self.body, status_code=self.status)
        response.raw_headers = self.headers
        return response

    async def send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


class Forwarder:
    """Forwards requests of one protocol to a model and answers in that protocol's format."""

    def __init__(
        self,
        dataplane: DataPlane,
        metrics: ServerMetrics,
        *,
        protocol: str,
        on_error: ErrorFormat,
        compression: bool = False,
        pass_query: bool = False,
        extra_headers: tuple[tuple[str, str], ...] = (),
        generation: Generation | None = None,
    ) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.protocol = protocol
        self.on_error = on_error
        self.compression = compression
        self.pass_query = pass_query
        self.extra_headers = list(extra_headers)
        """Request headers added for the handler (the explanations routes add TorchServe's ``explain: True``)."""
        self.generation = generation
        """A text-generation protocol's requests and answers (``dms.rest.generation``); None for the others."""
        self.streams = protocol == PROTOCOL_RAW or generation is not None
        """Its answers may stream as they are made (TorchServe's ``/predictions``, the generation protocols): DMS's
        HTTP/1.1 connections send them as they come (``dms.rest.chunked_answer``); elsewhere a streamed answer
        arrives joined, as one body."""

    def endpoint(self) -> Endpoint:
        """A Starlette route handler for paths with ``model_name`` (and optionally ``model_version``)."""

        async def endpoint(request: Request) -> Response:
            reply = await self.forward(
                request.path_params["model_name"],
                request.path_params.get("model_version"),
                request.headers.items(),
                request.scope["query_string"],
                request.receive,
            )
            return reply.response()

        return endpoint

    async def forward(
        self,
        name: str,
        version: str | None,
        headers: list[tuple[str, str]],
        query_string: bytes,
        receive: Receive,
    ) -> Reply:
        """The answer to one request; ``headers`` have lower-case names, as ASGI servers give them."""
        lookup = dict(headers)
        started, request_id = self.arrived(lookup)
        outcome: Outcome
        form: AnswerForm | None = None
        try:
            max_bytes = self.dataplane.settings.max_request_size_bytes
            body = await read_body(receive, lookup.get("content-length"), max_bytes)
            if body is None:
                outcome = None
            else:
                name, body, form = self.prepare(name, version, body, request_id)
                future = self.submit(name, version, headers, lookup, query_string, request_id, body)
                outcome = await until_answered_or_gone(receive, future)
        except DMSError as exc:
            outcome = exc
        return self.conclude(name, version, lookup, request_id, started, outcome, form)

    def prepare(
        self, name: str, version: str | None, body: bytes, request_id: str
    ) -> tuple[str, bytes, AnswerForm | None]:
        """A generation protocol's request as its model takes it: the model's name (OpenAI's is in the body), the
        generation request, and the form of the answer; any other request as it came, with no form."""
        if self.generation is None:
            return name, body, None
        adapted = self.generation.adapt(name, version, body, request_id)
        return adapted.name, adapted.body, adapted.form

    def arrived(self, lookup: dict[str, str]) -> tuple[int, str]:
        """Count a request as in flight: its ``started_ns`` (for ``conclude``) and its request id."""
        return self.metrics.started(self.protocol), lookup.get("x-request-id") or new_request_id()

    def submit(
        self,
        name: str,
        version: str | None,
        headers: list[tuple[str, str]],
        lookup: dict[str, str],
        query_string: bytes,
        request_id: str,
        body: bytes,
        reader: ChunkReader | None = None,
    ) -> asyncio.Future[ResponseItem]:
        """Hand a whole request to the model (decoding its body first when the protocol allows compression). With a
        ``reader``, the answer streams: the chunks a handler makes reach the reader as they come."""
        if self.compression:
            body = decode_content(body, lookup.get("content-encoding"), self.dataplane.settings.max_request_size_bytes)
        query = self.pass_query and query_string
        item = RequestItem(
            request_id=request_id,
            body=body,
            content_type="application/json" if self.generation is not None else lookup.get("content-type", ""),
            headers=headers + self.extra_headers if self.extra_headers else headers,
            query=parse_qsl(query_string.decode("latin-1"), keep_blank_values=True) if query else [],
            protocol=self.protocol,
            stream=reader is not None,
        )
        return self.dataplane.submit(name, version, item, reader)

    def conclude(
        self,
        name: str,
        version: str | None,
        lookup: dict[str, str],
        request_id: str,
        started_ns: int,
        outcome: Outcome,
        form: AnswerForm | None = None,
    ) -> Reply:
        """The reply for a request's outcome (None: the client left), reported to metrics and the access log.

        ``started_ns`` is what ``metrics.started`` returned when the request arrived; ``form``, a generation
        protocol's form of the answer (``prepare``).
        """
        batch_size = 0
        if outcome is None:
            reply = Reply(499, [(b"content-length", b"0")], b"")  # the client went away; nobody reads this
        elif isinstance(outcome, DMSError):
            reply = Reply.of(self.on_error(outcome))
        else:
            batch_size = outcome.batch_size
            if form is not None and outcome.error is None:
                reply = form.whole(outcome)
            else:
                encoding = lookup.get("accept-encoding") if self.compression else None
                reply = self._answer(name, request_id, outcome, encoding)
        reply.set_header("x-request-id", request_id)
        self.report(name, version, request_id, started_ns, reply.status, batch_size)
        return reply

    def report(
        self, name: str, version: str | None, request_id: str, started_ns: int, status: int, batch_size: int
    ) -> None:
        """Count a request that has ended, in metrics and the access log."""
        self.metrics.finished(
            transport=self.protocol,
            model=name,
            version=self.dataplane.version_of(name, version),
            code=str(status),
            started_ns=started_ns,
            request_id=request_id,
            batch_size=batch_size,
        )

    def stream_started(self, name: str, version: str | None, started_ns: int) -> Count:
        """Observe a streamed answer's first chunk (time to first chunk); the count its chunks go to."""
        resolved = self.dataplane.version_of(name, version)
        self.metrics.first_chunk(self.protocol, name, resolved, started_ns)
        return self.metrics.chunk_count(name, resolved)

    def stream_head(self, name: str, request_id: str, first: Chunk, form: AnswerForm | None) -> Reply | DMSError:
        """The head of a streamed answer, from its first chunk (and that chunk as its first body bytes); the error to
        answer instead when the model's headers cannot be sent. A generation protocol's stream is server-sent
        events, whatever the model said."""
        if form is not None:
            reply = Reply.content(200, form.piece(first.body), "text/event-stream; charset=utf-8", False)
            reply.set_header("cache-control", "no-cache")
            reply.set_header("x-request-id", request_id)
            return reply
        refusal = _header_refusal(name, request_id, first.content_type, first.headers)
        if refusal is not None:
            return refusal
        reply = Reply.content(first.status, first.body, first.content_type or "application/octet-stream", False)
        for key, value in first.headers:
            reply.set_header(key, value)
        reply.set_header("x-request-id", request_id)
        return reply

    def _answer(self, name: str, request_id: str, result: ResponseItem, accept_encoding: str | None) -> Reply:
        if result.error is not None:
            return Reply.of(self.on_error(error_from_wire(result.error.type_name, result.error.message)))
        refusal = _header_refusal(name, request_id, result.content_type, result.headers)
        if refusal is not None:  # refused here, so that metrics and the access log count the 500 sent
            return Reply.of(self.on_error(refusal))
        payload, encoding = encode_content(result.body, accept_encoding)
        reply = Reply.content(result.status, payload, result.content_type)
        for key, value in result.headers:
            reply.set_header(key, value)
        if encoding:
            reply.set_header("content-encoding", encoding)
        return reply
