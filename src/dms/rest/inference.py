"""The inference API (port 8080): ``/ping``, ``/predictions/{model}[/{version}]``, its OpenAPI."""

from __future__ import annotations

import uuid

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dms.auth import KeyStore
from dms.dataplane import DataPlane
from dms.engine.messages import RequestItem
from dms.errors import error_from_wire
from dms.rest.auth import TokenAuthMiddleware
from dms.rest.common import json_response, read_body, until_answered_or_gone
from dms.rest.errors import EXCEPTION_HANDLERS, error_response
from dms.rest.kserve_v1 import v1_routes
from dms.rest.oip import oip_routes
from dms.rest.openapi import inference_openapi, with_bearer_auth


def _is_health(path: str) -> bool:
    return path == "/ping" or path.startswith("/v2/health/")


def build_inference_app(dataplane: DataPlane, keys: KeyStore | None = None) -> Starlette:
    max_bytes = dataplane.settings.max_request_size_bytes

    async def ping(request: Request) -> Response:
        if dataplane.healthy():
            return json_response({"status": "Healthy"})
        return json_response({"status": "Unhealthy"}, status=500)

    async def predict(request: Request) -> Response:
        name = request.path_params["model_name"]
        version = request.path_params.get("model_version")
        body = await read_body(request, max_bytes)
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        item = RequestItem(
            request_id=request_id,
            body=body,
            content_type=request.headers.get("content-type", ""),
            headers=request.headers.items(),
            query=request.query_params.multi_items(),
        )
        result = await until_answered_or_gone(request, dataplane.submit(name, version, item))
        if result is None:
            return Response(status_code=499)  # the client went away; nobody reads this
        if result.error is not None:
            response = error_response(error_from_wire(result.error.type_name, result.error.message))
        else:
            response = Response(result.body, status_code=result.status, media_type=result.content_type)
            for key, value in result.headers:
                response.headers[key] = value
        response.headers["X-Request-ID"] = request_id
        return response

    document = inference_openapi()
    if keys is not None and dataplane.settings.inference_token_auth:
        document = with_bearer_auth(document, open_paths={"/ping", "/v2/health/live", "/v2/health/ready"})

    async def api_description(request: Request) -> Response:
        return json_response(document)

    routes = [
        Route("/ping", ping, methods=["GET"]),
        Route("/predictions/{model_name}", predict, methods=["POST", "PUT"]),
        Route("/predictions/{model_name}/{model_version}", predict, methods=["POST", "PUT"]),
        Route("/api-description", api_description, methods=["GET"]),
        Route("/", api_description, methods=["OPTIONS"]),
        *oip_routes(dataplane),
        *v1_routes(dataplane),
    ]
    middleware = []
    if keys is not None and dataplane.settings.inference_token_auth:
        middleware.append(Middleware(TokenAuthMiddleware, keys=keys, kind="inference", is_open=_is_health))
    return Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, middleware=middleware)
