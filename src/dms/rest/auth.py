"""ASGI middleware that requires an API key on every path except the open ones (the management API's, whose
app a user may also run alone); the check itself is ``dms.rest.calls.key_error``, as on the inference API."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from dms.auth import KeyKind, KeyStore
from dms.rest.calls import key_error
from dms.rest.errors import error_response
from dms.rest.forwarding import Reply


class TokenAuthMiddleware:
    def __init__(self, app: ASGIApp, keys: KeyStore, kind: KeyKind, is_open: Callable[[str], bool]) -> None:
        self.app = app
        self.keys = keys
        self.kind = kind
        self.is_open = is_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.is_open(scope["path"]):
            denial = key_error(self.keys, self.kind, scope["headers"])
            if denial is not None:
                await Reply.of(error_response(denial)).send(send)
                return
        await self.app(scope, receive, send)
