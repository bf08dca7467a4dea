"""The metrics port (8082): Prometheus text format from the server's own registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dms.observability.metrics import ServerMetrics
from dms.rest.errors import EXCEPTION_HANDLERS

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

    return Starlette(routes=[Route("/metrics", exposition, methods=["GET"])], exception_handlers=EXCEPTION_HANDLERS)
