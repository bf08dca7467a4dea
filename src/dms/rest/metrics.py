"""The metrics port (8082): Prometheus text format from the server's own registry, and the port's OpenAPI
document (``OPTIONS /``, ``GET /api-description``), as on TorchServe's metrics port."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dms.observability.metrics import ServerMetrics
from dms.rest.common import json_response
from dms.rest.errors import EXCEPTION_HANDLERS
from dms.rest.openapi import metrics_openapi

if TYPE_CHECKING:
    from dms.frontends.group import FrontendGroup


def build_metrics_app(metrics: ServerMetrics, frontends: FrontendGroup | None = None) -> Starlette:
    """With several frontends, one exposition for the whole server: theirs merged into frontend 0's."""

    async def exposition(request: Request) -> Response:
        text = metrics.exposition()
        if frontends is not None:
            from dms.observability.merging import merge_expositions

            text = merge_expositions(text, await frontends.expositions())
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    document = metrics_openapi()

    async def api_description(request: Request) -> Response:
        return json_response(document)

    routes = [
        Route("/metrics", exposition, methods=["GET"]),
        Route("/api-description", api_description, methods=["GET"]),
        Route("/", api_description, methods=["OPTIONS"]),
    ]
    return Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
