"""The management API (port 8081), with TorchServe's paths, parameters and answers."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dms.auth import KeyStore
from dms.dataplane import DataPlane
from dms.errors import InputError
from dms.observability.metrics import ServerMetrics
from dms.rest.auth import TokenAuthMiddleware
from dms.rest.common import json_response, query_bool, query_float, query_int
from dms.rest.console import console_routes, is_console_asset
from dms.rest.errors import EXCEPTION_HANDLERS
from dms.rest.openapi import management_openapi, with_bearer_auth
from dms.rest.repository import repository_routes


def build_management_app(dataplane: DataPlane, metrics: ServerMetrics, keys: KeyStore | None = None) -> Starlette:
    document = management_openapi(token_rotation=keys is not None)
    if keys is not None and dataplane.settings.token_auth:
        document = with_bearer_auth(document, open_paths={"/console", "/console/"})

    async def list_models(request: Request) -> Response:
        limit = query_int(request, "limit", default=100, minimum=1) or 100
        token = query_int(request, "next_page_token", default=0) or 0
        rows, next_token = dataplane.list_models(limit, token)
        body: dict[str, Any] = {"models": rows}
        if next_token is not None:
            body["nextPageToken"] = str(next_token)
        return json_response(body)

    async def register(request: Request) -> Response:
        url = request.query_params.get("url")
        if not url:
            raise InputError(
                "parameter 'url' is required: an archive name in the model store, a path, or an allowed URL"
            )
        overrides: dict[str, Any] = {
            "initial_workers": query_int(request, "initial_workers"),
            "batch_size": query_int(request, "batch_size", minimum=1),
            "max_batch_delay_ms": query_float(request, "max_batch_delay"),
            "response_timeout_s": query_float(request, "response_timeout"),
        }
        handler = request.query_params.get("handler")
        synchronous = query_bool(request, "synchronous", default=True)
        model = await dataplane.register(
            url,
            name=request.query_params.get("model_name") or None,
            overrides=overrides,
            handler=handler or None,
            synchronous=synchronous,
        )
        workers = model.config.initial_workers
        message = f'Model "{model.name}" Version: {model.version} registered with {workers} initial workers'
        if not synchronous:
            message += "; workers are starting"
        return json_response({"status": message}, status=200 if synchronous else 202)

    async def describe(request: Request) -> Response:
        p = request.path_params
        return json_response(dataplane.describe(p["model_name"], p.get("model_version")))

    async def scale(request: Request) -> Response:
        p = request.path_params
        min_workers = query_int(request, "min_worker")
        if min_workers is None:
            raise InputError("parameter 'min_worker' is required")
        synchronous = query_bool(request, "synchronous", default=False)
        model = await dataplane.scale(
            p["model_name"],
            p.get("model_version"),
            min_workers,
            query_int(request, "max_worker"),
            synchronous,
        )
        if synchronous:
            return json_response({"status": f"Workers scaled to {min_workers} for model: {model.name}"})
        return json_response({"status": "Processing worker updates..."}, status=202)

    async def unregister(request: Request) -> Response:
        p = request.path_params
        model = await dataplane.unregister(p["model_name"], p.get("model_version"))
        return json_response({"status": f'Model "{model.name}" version {model.version} unregistered'})

    async def set_default(request: Request) -> Response:
        p = request.path_params
        dataplane.set_default(p["model_name"], p["model_version"])
        return json_response(
            {"status": f'Default version successfully updated for model "{p["model_name"]}" to "{p["model_version"]}"'}
        )

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
        *console_routes(dataplane, metrics),
    ]
    middleware = []
    if keys is not None:
        routes.append(Route("/token", rotate_key, methods=["POST"]))
        if dataplane.settings.token_auth:
            middleware.append(Middleware(TokenAuthMiddleware, keys=keys, kind="management", is_open=is_console_asset))
    return Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, middleware=middleware)
