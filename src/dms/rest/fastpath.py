"""A lean ASGI path for the routes that forward to a model, the hottest ones.

``POST|PUT /predictions/{model}[/{version}]``, ``POST /v2/models/{model}[/versions/{version}]/infer``
and ``POST /v1/models/{model}:predict`` are matched by plain string checks and handed to the same
``Forwarder`` their Starlette routes use (same answers, errors, metrics and logs), without the
router's regular expressions, the exception middlewares and the request objects in between. The
key check, when inference auth is on, is the token middleware's. Every other request goes to the
Starlette app underneath.

On the inference port most of these requests never reach it as ASGI: the HTTP/1.1 protocol
(``dms.rest.http1``) uses ``match`` and ``refusal`` to answer them from the parser's callbacks, and
sends here only the ones it leaves to ASGI (pipelined, ``Expect: 100-continue``, percent-encoded).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from dms.auth import KeyStore
from dms.errors import DMSError
from dms.rest.errors import error_response
from dms.rest.forwarding import Forwarder, Reply
from dms.rest.inference import InferenceForwarders

_PREDICTIONS, _V2_MODELS, _INFER, _V1_MODELS, _V1_PREDICT = (
    "/predictions/",
    "/v2/models/",
    "/infer",
    "/v1/models/",
    ":predict",
)


class InferenceFastPath:
    def __init__(self, app: ASGIApp, routes: InferenceForwarders, keys: KeyStore | None) -> None:
        self.app = app
        self.routes = routes
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            found = self.match(scope["method"], scope["path"])
            if found is not None:
                await self._forward(scope, receive, send, *found)
                return
        await self.app(scope, receive, send)

    def match(self, method: str, path: str) -> tuple[Forwarder, str, str | None] | None:
        """The forwarder, model and version of a path, matching exactly what the Starlette routes match."""
        if path.startswith(_PREDICTIONS):
            if method not in ("POST", "PUT"):
                return None
            parts = path[len(_PREDICTIONS) :].split("/")
            if 1 <= len(parts) <= 2 and all(parts):
                return self.routes.predictions, parts[0], parts[1] if len(parts) == 2 else None
            return None
        if method != "POST":
            return None
        if path.startswith(_V2_MODELS) and path.endswith(_INFER):
            parts = path[len(_V2_MODELS) : -len(_INFER)].split("/")
            if len(parts) == 1 and parts[0]:
                return self.routes.infer, parts[0], None
            if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
                return self.routes.infer, parts[0], parts[2]
            return None
        if path.startswith(_V1_MODELS) and path.endswith(_V1_PREDICT):
            name = path[len(_V1_MODELS) : -len(_V1_PREDICT)]
            if name and "/" not in name:
                return self.routes.v1_predict, name, None
        return None

    def refusal(self, headers: list[tuple[str, str]]) -> Reply | None:
        """The error answer when inference auth is on and the request's key does not pass; else None."""
        if self.keys is None:
            return None
        authorization = next((v for k, v in headers if k == "authorization"), None)
        try:
            self.keys.check("inference", authorization)
        except DMSError as exc:
            return Reply.of(error_response(exc))
        return None

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, forwarder: Forwarder, name: str, version: str | None
    ) -> None:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        reply = self.refusal(headers) or await forwarder.forward(name, version, headers, scope["query_string"], receive)
        await reply.send(send)
