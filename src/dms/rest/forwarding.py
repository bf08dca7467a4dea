"""The one path every inference request takes over HTTP: read, submit, await, answer, observe.

A ``Forwarder`` reads the body (capped), wraps it untouched in a ``RequestItem`` for its protocol,
submits it to the data plane, waits for the answer unless the client leaves, turns the answer or
any error into a response (in the protocol's own error format), and reports the request to the
server's metrics and access log. Starlette routes use it through ``endpoint()``; the lean ASGI
path of the hottest routes (``dms.rest.fastpath``) calls ``forward`` directly, so both answer alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from dms.dataplane import DataPlane
from dms.engine.messages import RequestItem, ResponseItem
from dms.errors import DMSError, error_from_wire
from dms.observability.metrics import ServerMetrics
from dms.observability.request_ids import new_request_id
from dms.rest.common import read_body, until_answered_or_gone
from dms.rest.compression import decode_content, encode_content

ErrorFormat = Callable[[DMSError], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


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
    ) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.protocol = protocol
        self.on_error = on_error
        self.compression = compression
        self.pass_query = pass_query

    def endpoint(self) -> Endpoint:
        """A Starlette route handler for paths with ``model_name`` (and optionally ``model_version``)."""

        async def endpoint(request: Request) -> Response:
            return await self.forward(
                request.path_params["model_name"],
                request.path_params.get("model_version"),
                request.headers.items(),
                request.scope["query_string"],
                request.receive,
            )

        return endpoint

    async def forward(
        self,
        name: str,
        version: str | None,
        headers: list[tuple[str, str]],
        query_string: bytes,
        receive: Receive,
    ) -> Response:
        """The response to one request; ``headers`` have lower-case names, as ASGI servers give them."""
        metrics, dataplane = self.metrics, self.dataplane
        started = metrics.started(self.protocol)
        lookup = dict(headers)
        request_id = lookup.get("x-request-id") or new_request_id()
        batch_size = 0
        try:
            result = await self._submit(name, version, headers, lookup, query_string, request_id, receive)
            if result is None:
                response = Response(status_code=499)  # the client went away; nobody reads this
            else:
                batch_size = result.batch_size
                response = self._answer(result, lookup.get("accept-encoding") if self.compression else None)
        except DMSError as exc:
            response = self.on_error(exc)
        response.headers["X-Request-ID"] = request_id
        metrics.finished(
            transport=self.protocol,
            model=name,
            version=dataplane.version_of(name, version),
            code=str(response.status_code),
            started_ns=started,
            request_id=request_id,
            batch_size=batch_size,
        )
        return response

    async def _submit(
        self,
        name: str,
        version: str | None,
        headers: list[tuple[str, str]],
        lookup: dict[str, str],
        query_string: bytes,
        request_id: str,
        receive: Receive,
    ) -> ResponseItem | None:
        """Read the body, hand the request to the model, and await its answer (None: the client left)."""
        max_bytes = self.dataplane.settings.max_request_size_bytes
        body = await read_body(receive, lookup.get("content-length"), max_bytes)
        if body is None:
            return None
        if self.compression:
            body = decode_content(body, lookup.get("content-encoding"), max_bytes)
        query = self.pass_query and query_string
        item = RequestItem(
            request_id=request_id,
            body=body,
            content_type=lookup.get("content-type", ""),
            headers=headers,
            query=parse_qsl(query_string.decode("latin-1"), keep_blank_values=True) if query else [],
            protocol=self.protocol,
        )
        return await until_answered_or_gone(receive, self.dataplane.submit(name, version, item))

    def _answer(self, result: ResponseItem, accept_encoding: str | None) -> Response:
        if result.error is not None:
            return self.on_error(error_from_wire(result.error.type_name, result.error.message))
        payload, encoding = encode_content(result.body, accept_encoding)
        response = Response(payload, status_code=result.status, media_type=result.content_type)
        if result.headers:
            for key, value in result.headers:
                response.headers[key] = value
        if encoding:
            response.headers["Content-Encoding"] = encoding
        return response
