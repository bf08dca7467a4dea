"""KServe v1 on the inference port: list, describe, ``:predict``. Errors answer ``{"error": ...}``."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dms.dataplane import DataPlane
from dms.dataplane.queries import model_ready
from dms.messages import PROTOCOL_V1
from dms.observability.metrics import ServerMetrics
from dms.rest.common import json_response
from dms.rest.forwarding import Forwarder
from dms.rest.oip import oip_error, protocol_errors


def predict_forwarder(
    dataplane: DataPlane, metrics: ServerMetrics, extra_headers: tuple[tuple[str, str], ...] = ()
) -> Forwarder:
    """``POST /v1/models/{model}:predict`` (with ``extra_headers``, ``:explain``)"""
    return Forwarder(dataplane, metrics, protocol=PROTOCOL_V1, on_error=oip_error, extra_headers=extra_headers)


def v1_routes(dataplane: DataPlane) -> list[Route]:
    """KServe v1's routes but ``:predict``, which the inference API's route table has (``predict_forwarder``).

    ``/v1/models`` is also where OpenAI's clients list models: one answer serves both, KServe's ``models`` (every
    model's name) beside OpenAI's ``object`` and ``data`` (the generative models, ``dms.rest.generation``); and a
    model's description carries OpenAI's ``id``, ``object``, ``created`` and ``owned_by`` beside KServe's fields."""
    created = int(time.time())

    def openai_model(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": "dms"}

    async def list_models(request: Request) -> Response:
        generative = sorted({m.name for m in dataplane.registry if m.config.generative})
        data = [openai_model(name) for name in generative]
        return json_response({"models": dataplane.registry.names(), "object": "list", "data": data})

    async def describe(request: Request) -> Response:
        name = request.path_params["model_name"]
        described = {"name": name, "ready": model_ready(dataplane, name, None)}
        if any(m.name == name and m.config.generative for m in dataplane.registry):
            described.update(openai_model(name))
        return json_response(described)

    return [
        Route("/v1/models", protocol_errors(list_models), methods=["GET"]),
        Route("/v1/models/{model_name}", protocol_errors(describe), methods=["GET"]),
    ]
