"""The model repository extension of the Open Inference Protocol, on the management port (same key, same binding)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dms.dataplane import DataPlane
from dms.dataplane.queries import repository_index, repository_load, repository_unload
from dms.errors import InputError
from dms.rest.common import json_response
from dms.rest.oip import protocol_errors


def repository_routes(dataplane: DataPlane) -> list[Route]:
    async def index(request: Request) -> Response:
        body = await request.body()
        try:
            options = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise InputError(f"the index request is not valid JSON: {exc}") from exc
        ready_only = bool(options.get("ready", False)) if isinstance(options, dict) else False
        return json_response(repository_index(dataplane, ready_only))

    async def load(request: Request) -> Response:
        await repository_load(dataplane, request.path_params["model_name"])
        return json_response({})

    async def unload(request: Request) -> Response:
        await repository_unload(dataplane, request.path_params["model_name"])
        return json_response({})

    return [
        Route("/v2/repository/index", protocol_errors(index), methods=["POST"]),
        Route("/v2/repository/models/{model_name}/load", protocol_errors(load), methods=["POST"]),
        Route("/v2/repository/models/{model_name}/unload", protocol_errors(unload), methods=["POST"]),
    ]
