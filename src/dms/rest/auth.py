"""ASGI middleware that requires an API key on every path except the open ones (health)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from dms.auth import KeyKind, KeyStore
from dms.errors import DMSError
from dms.rest.errors import error_response


class TokenAuthMiddleware:
    def __init__(self, app: ASGIApp, keys: KeyStore, kind: KeyKind, is_open: Callable[[str], bool]) -> None:
        self.app = app
        self.keys = keys
        self.kind = kind
        self.is_open = is_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.is_open(scope["path"]):
            authorization = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            try:
                self.keys.check(self.kind, authorization)
            except DMSError as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)
