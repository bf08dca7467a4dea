"""The metrics port (8082): Prometheus text format from the server's own registry."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dms.observability.metrics import ServerMetrics
from dms.rest.errors import EXCEPTION_HANDLERS


def build_metrics_app(metrics: ServerMetrics) -> Starlette:
    async def exposition(request: Request) -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(routes=[Route("/metrics", exposition, methods=["GET"])], exception_handlers=EXCEPTION_HANDLERS)
