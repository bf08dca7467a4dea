"""The one path every inference request takes over HTTP: read, submit, await, answer, observe.

``forward`` reads the body (capped), wraps it untouched in a ``RequestItem`` for its protocol,
submits it to the data plane, waits for the answer unless the client leaves, turns the answer
or any error into a response (in the protocol's own error format), and reports the request to
the server's metrics and access log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from dms.dataplane import DataPlane
from dms.engine.messages import RequestItem, ResponseItem
from dms.errors import DMSError, error_from_wire
from dms.observability.metrics import ServerMetrics
from dms.observability.request_ids import new_request_id
from dms.rest.common import read_body, until_answered_or_gone
from dms.rest.compression import decode_content, encode_content

ErrorFormat = Callable[[DMSError], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


def forwarding_endpoint(
    dataplane: DataPlane,
    metrics: ServerMetrics,
    *,
    protocol: str,
    on_error: ErrorFormat,
    compression: bool = False,
    pass_query: bool = False,
) -> Endpoint:
    """A route handler forwarding to the path's ``model_name`` (and ``model_version``, when the path has one)."""

    async def endpoint(request: Request) -> Response:
        return await forward(
            request,
            dataplane,
            metrics,
            protocol=protocol,
            name=request.path_params["model_name"],
            version=request.path_params.get("model_version"),
            on_error=on_error,
            query=request.query_params.multi_items() if pass_query else None,
            compression=compression,
        )

    return endpoint


async def forward(
    request: Request,
    dataplane: DataPlane,
    metrics: ServerMetrics,
    *,
    protocol: str,
    name: str,
    version: str | None,
    on_error: ErrorFormat,
    query: list[tuple[str, str]] | None = None,
    compression: bool = False,
) -> Response:
    started = metrics.started(protocol)
    request_id = request.headers.get("x-request-id") or new_request_id()
    batch_size = 0
    try:
        max_bytes = dataplane.settings.max_request_size_bytes
        body = await read_body(request, max_bytes)
        if compression:
            body = decode_content(body, request.headers.get("content-encoding"), max_bytes)
        item = RequestItem(
            request_id=request_id,
            body=body,
            content_type=request.headers.get("content-type", ""),
            headers=request.headers.items(),
            query=query or [],
            protocol=protocol,
        )
        result = await until_answered_or_gone(request.receive, dataplane.submit(name, version, item))
        if result is None:
            response = Response(status_code=499)  # the client went away; nobody reads this
        else:
            batch_size = result.batch_size
            response = _answer(result, on_error, request.headers.get("accept-encoding") if compression else None)
    except DMSError as exc:
        response = on_error(exc)
    response.headers["X-Request-ID"] = request_id
    metrics.finished(
        transport=protocol,
        model=name,
        version=dataplane.version_of(name, version),
        code=str(response.status_code),
        started_ns=started,
        request_id=request_id,
        batch_size=batch_size,
    )
    return response


def _answer(result: ResponseItem, on_error: ErrorFormat, accept_encoding: str | None) -> Response:
    if result.error is not None:
        return on_error(error_from_wire(result.error.type_name, result.error.message))
    payload, encoding = encode_content(result.body, accept_encoding)
    response = Response(payload, status_code=result.status, media_type=result.content_type)
    for key, value in result.headers:
        response.headers[key] = value
    if encoding:
        response.headers["Content-Encoding"] = encoding
    return response
