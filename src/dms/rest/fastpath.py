"""A lean ASGI path for ``POST|PUT /predictions/{model}[/{version}]``, the hottest route.

It does what the Starlette route does — key check when inference auth is on, body cap, request id,
submit, wait unless the client leaves, JSON errors, metrics and access log — without the router and
the exception middlewares in between. Every other request goes to the Starlette app underneath.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dms.auth import KeyStore
from dms.dataplane import DataPlane
from dms.engine.messages import PROTOCOL_RAW, RequestItem, ResponseItem
from dms.errors import DMSError, PayloadTooLargeError, error_from_wire
from dms.observability.metrics import ServerMetrics
from dms.observability.request_ids import new_request_id
from dms.rest.common import until_answered_or_gone
from dms.rest.errors import error_response

_PREFIX = "/predictions/"


class PredictionsFastPath:
    def __init__(self, app: ASGIApp, dataplane: DataPlane, metrics: ServerMetrics, keys: KeyStore | None) -> None:
        self.app = app
        self.dataplane = dataplane
        self.metrics = metrics
        self.keys = keys if dataplane.settings.inference_token_auth else None
        self.max_bytes = dataplane.settings.max_request_size_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT") and scope["path"].startswith(_PREFIX):
            parts = scope["path"][len(_PREFIX) :].split("/")
            if 1 <= len(parts) <= 2 and all(parts):
                await self._predict(scope, receive, send, parts[0], parts[1] if len(parts) == 2 else None)
                return
        await self.app(scope, receive, send)

    async def _predict(self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None) -> None:
        started = self.metrics.started(PROTOCOL_RAW)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        lookup = dict(headers)
        request_id = lookup.get("x-request-id") or new_request_id()
        status, batch_size = 500, 0
        try:
            if self.keys is not None:
                self.keys.check("inference", lookup.get("authorization"))
            body = await self._body(receive, lookup.get("content-length"))
            query = scope["query_string"]
            item = RequestItem(
                request_id=request_id,
                body=body,
                content_type=lookup.get("content-type", ""),
                headers=headers,
                query=parse_qsl(query.decode("latin-1"), keep_blank_values=True) if query else [],
            )
            result = await until_answered_or_gone(receive, self.dataplane.submit(name, version, item))
            if result is None:
                status = 499  # the client went away; nothing is sent
            elif result.error is not None:
                batch_size = result.batch_size
                status = await _send_error(
                    error_from_wire(result.error.type_name, result.error.message), scope, receive, send, request_id
                )
            else:
                batch_size = result.batch_size
                status = await _send_result(result, send, request_id)
        except DMSError as exc:
            status = await _send_error(exc, scope, receive, send, request_id)
        self.metrics.finished(
            transport=PROTOCOL_RAW,
            model=name,
            version=self.dataplane.version_of(name, version),
            code=str(status),
            started_ns=started,
            request_id=request_id,
            batch_size=batch_size,
        )

    async def _body(self, receive: Receive, declared: str | None) -> bytes:
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise PayloadTooLargeError(
                f"request body of {declared} bytes is over max_request_size_bytes ({self.max_bytes})"
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise PayloadTooLargeError(f"request body is over max_request_size_bytes ({self.max_bytes})")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send_result(result: ResponseItem, send: Send, request_id: str) -> int:
    headers = [
        (b"content-type", result.content_type.encode("latin-1")),
        (b"content-length", str(len(result.body)).encode()),
        (b"x-request-id", request_id.encode("latin-1")),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in result.headers),
    ]
    start: Message = {"type": "http.response.start", "status": result.status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": result.body})
    return result.status


async def _send_error(exc: DMSError, scope: Scope, receive: Receive, send: Send, request_id: str) -> int:
    response = error_response(exc)
    response.headers["X-Request-ID"] = request_id
    await response(scope, receive, send)
    return response.status_code
