"""The web console on the management port: its page and assets (public, no secrets in them) and a
small JSON API behind the management key — a summary for the tables and sparklines, and "try it"
calls that go through the data plane like any inference request.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dms.dataplane import DataPlane
from dms.messages import PROTOCOL_RAW, PROTOCOL_V2_REST
from dms.observability.metrics import ServerMetrics
from dms.rest.common import json_response
from dms.rest.errors import error_response
from dms.rest.forwarding import Forwarder
from dms.rest.oip import oip_error

if TYPE_CHECKING:
    from dms.frontends.group import FrontendGroup

STATIC = Path(str(resources.files("dms.console") / "static"))
OPEN_PREFIXES = ("/console/static/",)
OPEN_PATHS = ("/console", "/console/")


PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""The console page may not be framed by another site (clickjacking) and loads only its own assets."""


def is_console_asset(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def console_routes(
    dataplane: DataPlane, metrics: ServerMetrics, frontends: FrontendGroup | None = None
) -> list[Route | Mount]:
    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    async def summary(request: Request) -> Response:
        models: list[dict[str, Any]] = []
        for model in dataplane.registry:
            pool = model.pool
            models.append(
                {
                    "name": model.name,
                    "version": model.version,
                    "isDefault": dataplane.registry.default_version(model.name) == model.version,
                    "status": pool.state.value,
                    "handler": model.archive.manifest.handler,
                    "readyWorkers": pool.ready_count(),
                    "targetWorkers": pool.target,
                    "queue": model.batcher.pending,
                    "batchSize": model.config.batch_size,
                    "lastError": pool.last_error,
                    **metrics.totals(model.name, model.version),
                }
            )
        if frontends is not None:
            for row in models:
                _add_other_frontends(row, await frontends.others(row["name"], row["version"]))
        return json_response({"models": models})

    try_predict = Forwarder(dataplane, metrics, protocol=PROTOCOL_RAW, on_error=error_response).endpoint()
    try_infer = Forwarder(dataplane, metrics, protocol=PROTOCOL_V2_REST, on_error=oip_error).endpoint()

    return [
        Route("/console", page, methods=["GET"]),
        Route("/console/", page, methods=["GET"]),
        Route("/console/api/summary", summary, methods=["GET"]),
        Route("/console/api/predict/{model_name}", try_predict, methods=["POST"]),
        Route("/console/api/infer/{model_name}", try_infer, methods=["POST"]),
        Mount("/console/static", app=StaticFiles(directory=STATIC), name="console-static"),
    ]


def _add_other_frontends(row: dict[str, Any], others: list[dict[str, Any]]) -> None:
    """One console row for the whole server: the other frontends' workers, queues and requests added in."""
    for other in others:
        row["readyWorkers"] += other["ready"]
        row["targetWorkers"] += other["target"]
        row["queue"] += other["pending"]
        for key, value in other["totals"].items():
            row[key] += value
