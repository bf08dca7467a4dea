"""The management API (port 8081), with TorchServe's paths, parameters and answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dms.auth import KeyStore
from dms.dataplane import DataPlane
from dms.dataplane import management as calls
from dms.errors import DMSError
from dms.observability.metrics import ServerMetrics
from dms.rest.auth import TokenAuthMiddleware
from dms.rest.common import json_response, query_bool, query_float, query_int
from dms.rest.console import console_routes, is_console_asset
from dms.rest.errors import EXCEPTION_HANDLERS, error_response
from dms.rest.openapi import management_openapi, with_bearer_auth
from dms.rest.repository import repository_routes

if TYPE_CHECKING:
    from dms.frontends.group import FrontendGroup


def build_management_app(
    dataplane: DataPlane, metrics: ServerMetrics, keys: KeyStore | None = None, frontends: FrontendGroup | None = None
) -> Starlette:
    document = management_openapi(token_rotation=keys is not None)
    if keys is not None and dataplane.settings.token_auth:
        document = with_bearer_auth(document, open_paths={"/console", "/console/"})

    async def list_models(request: Request) -> Response:
        limit = query_int(request, "limit", minimum=1)
        return json_response(calls.model_list(dataplane, limit, query_int(request, "next_page_token")))

    async def register(request: Request) -> Response:
        q = request.query_params
        call = calls.Registration(
            url=q.get("url") or "",
            model_name=q.get("model_name") or None,
            handler=q.get("handler") or None,
            runtime=q.get("runtime") or None,
            initial_workers=query_int(request, "initial_workers"),
            batch_size=query_int(request, "batch_size", minimum=1),
            max_batch_delay_ms=query_float(request, "max_batch_delay"),
            response_timeout_s=query_float(request, "response_timeout"),
            startup_timeout_s=query_float(request, "startup_timeout"),
            synchronous=query_bool(request, "synchronous", default=True),
        )
        registered = await calls.register(dataplane, call)
        return json_response({"status": registered.message}, status=200 if registered.workers_started else 202)

    async def describe(request: Request) -> Response:
        p = request.path_params
        rows = dataplane.describe(p["model_name"], p.get("model_version"))
        if frontends is not None:
            await frontends.add_workers(rows)
        return json_response(rows)

    async def scale(request: Request) -> Response:
        p = request.path_params
        query_float(request, "timeout", minimum=-1)  # checked; a retiring worker always finishes its batch first
        call = calls.Scaling(
            p["model_name"],
            p.get("model_version"),
            min_workers=query_int(request, "min_worker", default=1) or 0,
            max_workers=query_int(request, "max_worker"),
            synchronous=query_bool(request, "synchronous", default=False),
            gpu_workers=query_int(request, "number_gpu"),
        )
        scaled = await calls.scale(dataplane, call)
        return json_response({"status": scaled.message}, status=200 if scaled.workers_started else 202)

    async def unregister(request: Request) -> Response:
        p = request.path_params
        return json_response({"status": await calls.unregister(dataplane, p["model_name"], p.get("model_version"))})

    async def set_default(request: Request) -> Response:
        p = request.path_params
        return json_response({"status": calls.set_default(dataplane, p["model_name"], p["model_version"])})

    async def api_description(request: Request) -> Response:
        return json_response(document)

    async def rotate_key(request: Request) -> Response:
        assert keys is not None
        kind = request.query_params.get("type", "management")
        return json_response({"type": kind, "key": keys.rotate(kind)})

    routes: list[BaseRoute] = [
        Route("/models", list_models, methods=["GET"]),
        Route("/models", register, methods=["POST"]),
        Route("/models/{model_name}", describe, methods=["GET"]),
        Route("/models/{model_name}", scale, methods=["PUT"]),
        Route("/models/{model_name}", unregister, methods=["DELETE"]),
        Route("/models/{model_name}/{model_version}/set-default", set_default, methods=["PUT"]),
        Route("/models/{model_name}/{model_version}", describe, methods=["GET"]),
        Route("/models/{model_name}/{model_version}", scale, methods=["PUT"]),
        Route("/models/{model_name}/{model_version}", unregister, methods=["DELETE"]),
        Route("/api-description", api_description, methods=["GET"]),
        Route("/", api_description, methods=["OPTIONS"]),
        *repository_routes(dataplane),
        *console_routes(dataplane, metrics, frontends),
    ]
    middleware = []
    if frontends is not None:
        middleware.append(Middleware(SyncFrontends, frontends=frontends))
    if keys is not None:
        routes.append(Route("/token", rotate_key, methods=["POST"]))
        if dataplane.settings.token_auth:
            middleware.append(Middleware(TokenAuthMiddleware, keys=keys, kind="management", is_open=is_console_asset))
    return Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, middleware=middleware)


class SyncFrontends:
    """ASGI middleware: after a management change succeeds here, the other frontends make it too.

    The answer waits until every frontend holds the new registry (and key file), so that a request sent
    after it finds the change on whichever frontend the kernel hands its connection to. An answer of 202
    (workers still starting) does not wait: the frontends follow in the background. A change that one
    frontend could not make is answered with that error (500) instead of the success.
    """

    def __init__(self, app: ASGIApp, frontends: FrontendGroup) -> None:
        self.app = app
        self.frontends = frontends

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _READS or not scope["path"].startswith(_CHANGES):
            await self.app(scope, receive, send)
            return
        failed: list[Response] = []

        async def then_sync(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                if message["status"] == 202:
                    calls.follow_later(self.frontends)
                else:
                    try:
                        await self.frontends.sync()
                    except DMSError as exc:
                        failed.append(error_response(exc))
            if failed:
                if message["type"] == "http.response.start":
                    await failed[0](scope, receive, send)
                return
            await send(message)

        await self.app(scope, receive, then_sync)


_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_CHANGES = ("/models", "/v2/repository/models/", "/token")
"""The paths whose writes change the registry or the keys (not the console's "try it" inference calls,
nor the repository index, which is a read sent as a POST)."""
