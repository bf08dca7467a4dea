"""A frontend after the first: how it takes frontend 0's registry, and the private API it answers on.

Frontend 0 reaches each of the others on a Unix socket in a folder only this user can open, never on a
network port. ``POST /sync`` carries the registry frontend 0 holds (the entries its snapshot would hold);
the frontend makes its own registry match: it registers what it lacks from the same local archives,
unregisters what frontend 0 dropped, scales to the same worker counts and takes the same default versions,
then answers. ``GET /metrics`` and ``GET /workers`` give what frontend 0 adds to its own answers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dms.auth import KeyStore
from dms.dataplane import DataPlane
from dms.dataplane.snapshot import Snapshot, SnapshotEntry
from dms.errors import DMSError, ModelNotFoundError
from dms.observability.metrics import ServerMetrics
from dms.rest.common import json_response
from dms.rest.errors import EXCEPTION_HANDLERS

log = logging.getLogger("dms.frontends")


class RegistryFollower:
    """Makes one frontend's registry match the entries frontend 0 sends; one change at a time."""

    def __init__(self, dataplane: DataPlane, keys: KeyStore | None) -> None:
        self.dataplane = dataplane
        self.keys = keys
        self._lock = asyncio.Lock()
        self.first_registry = asyncio.Event()
        """Set once the first registry is in place: the frontend then opens the shared ports."""
        self.ports_open = asyncio.Event()
        """Set once it has tried to (the first sync answers after that)."""

    async def follow(self, entries: list[SnapshotEntry]) -> None:
        async with self._lock:
            if self.keys is not None:
                self.keys.reload()
            dataplane = self.dataplane
            wanted = {(entry.name, entry.version): entry for entry in entries}
            for model in list(dataplane.registry):
                if (model.name, model.version) not in wanted:
                    await dataplane.unregister(model.name, model.version)
            for entry in entries:
                await self._follow_one(entry)
            for entry in entries:
                if entry.is_default:
                    dataplane.set_default(entry.name, entry.version)
        self.first_registry.set()
        await self.ports_open.wait()

    async def _follow_one(self, entry: SnapshotEntry) -> None:
        dataplane = self.dataplane
        try:
            model = dataplane.registry.get(entry.name, entry.version)
        except ModelNotFoundError:
            await dataplane.register_entry(entry)
            return
        if model.pool.target != entry.workers:
            await dataplane.scale(entry.name, entry.version, entry.workers, None, synchronous=True)


def build_control_app(follower: RegistryFollower, dataplane: DataPlane, metrics: ServerMetrics) -> Starlette:
    async def health(request: Request) -> Response:
        return json_response({"serving": follower.ports_open.is_set()})

    async def sync(request: Request) -> Response:
        try:
            snapshot = msgspec.json.decode(await request.body(), type=Snapshot)
        except msgspec.DecodeError as exc:
            return json_response({"message": f"not a registry: {exc}"}, status=400)
        try:
            await follower.follow(snapshot.models)
        except DMSError as exc:
            log.error("could not take frontend 0's registry: %s", exc.message)
            return json_response({"message": exc.message}, status=500)
        return json_response({"models": len(snapshot.models)})

    async def exposition(request: Request) -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def workers(request: Request) -> Response:
        name, version = request.query_params["model"], request.query_params["version"]
        try:
            model = dataplane.registry.get(name, version)
        except ModelNotFoundError:
            return json_response({"workers": [], "pending": 0, "ready": 0, "target": 0, "totals": {}})
        body: dict[str, Any] = {
            "workers": model.pool.describe_workers(),
            "pending": model.batcher.pending,
            "ready": model.pool.ready_count(),
            "target": model.pool.target,
            "totals": metrics.totals(name, version),
        }
        return json_response(body)

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/sync", sync, methods=["POST"]),
        Route("/metrics", exposition, methods=["GET"]),
        Route("/workers", workers, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
