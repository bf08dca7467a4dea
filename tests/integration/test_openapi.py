"""Each port's OpenAPI document is valid and describes exactly the routes that port serves."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from dms.auth import KeyStore
from dms.dataplane import DataPlane
from dms.observability.metrics import ServerMetrics
from dms.rest.calls import CallRouter
from dms.rest.inference import build_inference_app
from dms.rest.management import build_management_app
from dms.rest.metrics import build_metrics_app
from dms.settings import ServerSettings


def served_operations(app: Starlette | CallRouter) -> set[tuple[str, str]]:
    """The routes of the app (the inference API's Starlette app, under its router, holds the route table's too)."""
    starlette = app.app if isinstance(app, CallRouter) else app
    assert isinstance(starlette, Starlette)
    operations = set()
    for route in starlette.routes:
        if isinstance(route, Mount):
            continue  # static files (the console's assets), not an API
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", route.path)
        operations |= {(path, method.lower()) for method in (route.methods or ()) if method != "HEAD"}
    return operations


def documented_operations(document: dict[str, object]) -> set[tuple[str, str]]:
    paths = document["paths"]
    assert isinstance(paths, dict)
    return {(path, method) for path, item in paths.items() for method in item}


@pytest.mark.parametrize("auth", [False, True])
@pytest.mark.parametrize("build", [build_inference_app, build_management_app])
def test_document_is_valid_and_complete(build, auth, tmp_path):
    settings = ServerSettings(
        archive_cache_dir=tmp_path, state_dir=tmp_path, token_auth=auth, inference_token_auth=auth
    )
    keys = KeyStore(settings.key_file) if auth else None
    dataplane = DataPlane(settings)
    app = build(dataplane, ServerMetrics(dataplane), keys)
    headers = (
        {"Authorization": f"Bearer {keys.key('management' if build is build_management_app else 'inference')}"}
        if keys
        else {}
    )

    async def fetch() -> tuple[dict[str, object], dict[str, object]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
            described = (await client.get("/api-description")).json()
            options = (await client.options("/")).json()
        return described, options

    document, options = asyncio.run(fetch())
    validate(document)
    assert options == document
    assert documented_operations(document) == served_operations(app)
    assert ("securitySchemes" in document["components"]) is auth


def test_the_metrics_port_describes_itself_as_torchserves_does():
    app = build_metrics_app(ServerMetrics())

    async def fetch() -> tuple[dict[str, object], dict[str, object], str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            described = (await client.get("/api-description")).json()
            options = (await client.options("/")).json()
            exposition = (await client.get("/metrics")).text
        return described, options, exposition

    document, options, exposition = asyncio.run(fetch())
    validate(document)
    assert options == document
    assert documented_operations(document) == served_operations(app)
    assert "# TYPE" in exposition
