"""The inference API (port 8080): ``/ping``, ``/predictions/{model}[/{version}]``, its OpenAPI, the Open
Inference Protocol and KServe v1 routes, and the original DMS ``/{model}/predict``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dms.auth import KeyStore
from dms.dataplane import DataPlane
from dms.messages import PROTOCOL_RAW
from dms.observability.metrics import ServerMetrics
from dms.rest.auth import TokenAuthMiddleware
from dms.rest.common import json_response
from dms.rest.errors import EXCEPTION_HANDLERS, error_response
from dms.rest.forwarding import Forwarder
from dms.rest.kserve_v1 import predict_forwarder, v1_routes
from dms.rest.oip import infer_forwarder, oip_routes
from dms.rest.openapi import inference_openapi, with_bearer_auth


def _is_health(path: str) -> bool:
    return path == "/ping" or path.startswith("/v2/health/")


def predictions_forwarder(dataplane: DataPlane, metrics: ServerMetrics) -> Forwarder:
    """TorchServe's ``/predictions/{model}[/{version}]``: query parameters reach the handler, TorchServe's errors."""
    return Forwarder(dataplane, metrics, protocol=PROTOCOL_RAW, on_error=error_response, pass_query=True)


@dataclass(frozen=True)
class InferenceForwarders:
    """The inference API's routes that forward to a model, built once and shared by the Starlette routes
    and the lean ASGI path in front of them (``dms.rest.fastpath``)."""

    predictions: Forwarder
    """``/predictions/{model}[/{version}]`` (and the original ``/{model}/predict``)"""
    infer: Forwarder
    """``/v2/models/{model}[/versions/{version}]/infer``"""
    v1_predict: Forwarder
    """``/v1/models/{model}:predict``"""


def inference_forwarders(dataplane: DataPlane, metrics: ServerMetrics) -> InferenceForwarders:
    return InferenceForwarders(
        predictions=predictions_forwarder(dataplane, metrics),
        infer=infer_forwarder(dataplane, metrics),
        v1_predict=predict_forwarder(dataplane, metrics),
    )


def build_inference_app(
    dataplane: DataPlane,
    metrics: ServerMetrics,
    keys: KeyStore | None = None,
    forwarders: InferenceForwarders | None = None,
) -> Starlette:
    forwarders = forwarders or inference_forwarders(dataplane, metrics)

    async def ping(request: Request) -> Response:
        if dataplane.healthy():
            return json_response({"status": "Healthy"})
        return json_response({"status": "Unhealthy"}, status=500)

    predict = forwarders.predictions.endpoint()

    document = inference_openapi()
    if keys is not None and dataplane.settings.inference_token_auth:
        document = with_bearer_auth(document, open_paths={"/ping", "/v2/health/live", "/v2/health/ready"})

    async def api_description(request: Request) -> Response:
        return json_response(document)

    routes = [
        Route("/ping", ping, methods=["GET"]),
        Route("/predictions/{model_name}", predict, methods=["POST", "PUT"]),
        Route("/predictions/{model_name}/{model_version}", predict, methods=["POST", "PUT"]),
        Route("/api-description", api_description, methods=["GET"]),
        Route("/", api_description, methods=["OPTIONS"]),
        *oip_routes(dataplane, forwarders.infer),
        *v1_routes(dataplane, forwarders.v1_predict),
        # The original DMS interface: multipart fields named by the archive's signature.json.
        Route("/{model_name}/predict", predict, methods=["POST"]),
    ]
    middleware = []
    if keys is not None and dataplane.settings.inference_token_auth:
        middleware.append(Middleware(TokenAuthMiddleware, keys=keys, kind="inference", is_open=_is_health))
    return Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, middleware=middleware)
