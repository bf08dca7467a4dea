"""KServe v1 on the inference port: list, describe, ``:predict``. Errors answer ``{"error": ...}``."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dms.dataplane import DataPlane
from dms.dataplane.queries import model_ready
from dms.engine.messages import PROTOCOL_V1, RequestItem
from dms.errors import error_from_wire
from dms.rest.common import read_body, until_answered_or_gone
from dms.rest.oip import json_answer, oip_error, protocol_errors


def v1_routes(dataplane: DataPlane) -> list[Route]:
    max_bytes = dataplane.settings.max_request_size_bytes

    async def list_models(request: Request) -> Response:
        return json_answer({"models": dataplane.registry.names()})

    async def describe(request: Request) -> Response:
        name = request.path_params["model_name"]
        return json_answer({"name": name, "ready": model_ready(dataplane, name, None)})

    async def predict(request: Request) -> Response:
        item = RequestItem(
            request_id=request.headers.get("x-request-id") or uuid.uuid4().hex,
            body=await read_body(request, max_bytes),
            content_type=request.headers.get("content-type", ""),
            headers=request.headers.items(),
            query=[],
            protocol=PROTOCOL_V1,
        )
        result = await until_answered_or_gone(request, dataplane.submit(request.path_params["model_name"], None, item))
        if result is None:
            return Response(status_code=499)
        if result.error is not None:
            return oip_error(error_from_wire(result.error.type_name, result.error.message))
        return Response(result.body, result.status, media_type=result.content_type)

    return [
        Route("/v1/models", protocol_errors(list_models), methods=["GET"]),
        Route("/v1/models/{model_name}:predict", protocol_errors(predict), methods=["POST"]),
        Route("/v1/models/{model_name}", protocol_errors(describe), methods=["GET"]),
    ]
