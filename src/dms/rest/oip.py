"""Open Inference Protocol (KServe v2) over REST, on the inference port. Errors answer ``{"error": ...}``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dms.dataplane import DataPlane, queries
from dms.dataplane.queries import model_metadata, model_ready, statistics
from dms.errors import DMSError
from dms.messages import PROTOCOL_V2_REST
from dms.observability.metrics import ServerMetrics
from dms.rest.common import json_response
from dms.rest.errors import HTTP_STATUS
from dms.rest.forwarding import Forwarder

Endpoint = Callable[[Request], Awaitable[Response]]


def oip_error(exc: DMSError) -> Response:
    headers = {"Retry-After": str(getattr(exc, "retry_after_s", 1))} if exc.type_name == "QueueFullError" else None
    return Response(orjson.dumps({"error": exc.message}), HTTP_STATUS[exc.kind], headers, "application/json")


def protocol_errors(endpoint: Endpoint) -> Endpoint:
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except DMSError as exc:
            return oip_error(exc)

    return wrapped


def infer_forwarder(
    dataplane: DataPlane, metrics: ServerMetrics, extra_headers: tuple[tuple[str, str], ...] = ()
) -> Forwarder:
    """``POST /v2/models/{model}[/versions/{version}]/infer`` (with ``extra_headers``, ``/explain``): gzip/deflate
    bodies, OIP error bodies."""
    return Forwarder(
        dataplane, metrics, protocol=PROTOCOL_V2_REST, on_error=oip_error, compression=True, extra_headers=extra_headers
    )


def oip_routes(dataplane: DataPlane) -> list[Route]:
    """The protocol's routes but ``infer``, which the inference API's route table has (``infer_forwarder``)."""

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        is_ready = dataplane.healthy()
        return json_response({"ready": is_ready}, 200 if is_ready else 400)

    async def server_metadata(request: Request) -> Response:
        return json_response(queries.server_metadata())

    async def metadata(request: Request) -> Response:
        p = request.path_params
        return json_response(model_metadata(dataplane, p["model_name"], p.get("model_version")))

    async def model_is_ready(request: Request) -> Response:
        p = request.path_params
        is_ready = model_ready(dataplane, p["model_name"], p.get("model_version"))
        return json_response({"name": p["model_name"], "ready": is_ready}, 200 if is_ready else 400)

    async def stats(request: Request) -> Response:
        p = request.path_params
        return json_response({"model_stats": statistics(dataplane, p.get("model_name"), p.get("model_version"))})

    base = "/v2/models/{model_name}"
    versioned = base + "/versions/{model_version}"
    return [
        Route("/v2/health/live", protocol_errors(live), methods=["GET"]),
        Route("/v2/health/ready", protocol_errors(ready), methods=["GET"]),
        Route("/v2", protocol_errors(server_metadata), methods=["GET"]),
        Route("/v2/models/stats", protocol_errors(stats), methods=["GET"]),
        Route(base + "/stats", protocol_errors(stats), methods=["GET"]),
        Route(versioned + "/stats", protocol_errors(stats), methods=["GET"]),
        Route(base, protocol_errors(metadata), methods=["GET"]),
        Route(versioned, protocol_errors(metadata), methods=["GET"]),
        Route(base + "/ready", protocol_errors(model_is_ready), methods=["GET"]),
        Route(versioned + "/ready", protocol_errors(model_is_ready), methods=["GET"]),
    ]
