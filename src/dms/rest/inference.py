"""The inference API (port 8080): ``/ping``, ``/predictions/{model}[/{version}]``, its OpenAPI, the Open
Inference Protocol and KServe v1 routes, and the original DMS ``/{model}/predict``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dms.auth import KeyStore
from dms.dataplane import DataPlane
from dms.messages import PROTOCOL_GENERATE, PROTOCOL_RAW
from dms.observability.metrics import ServerMetrics
from dms.rest.calls import CallRouter, ForwardRoute, RouteTable
from dms.rest.common import json_response
from dms.rest.errors import EXCEPTION_HANDLERS, error_response
from dms.rest.forwarding import ErrorFormat, Forwarder
from dms.rest.generation import Generation, oip_generate_error, openai_error
from dms.rest.kserve_v1 import predict_forwarder, v1_routes
from dms.rest.oip import infer_forwarder, oip_routes
from dms.rest.openapi import inference_openapi, with_bearer_auth


def _is_health(path: str) -> bool:
    return path == "/ping" or path.startswith("/v2/health/")


EXPLAIN = (("explain", "True"),)
"""The request header TorchServe's frontend adds to an explanation request, which its ``BaseHandler.handle`` reads
to call ``explain_handle`` rather than ``inference``."""


def predictions_forwarder(dataplane: DataPlane, metrics: ServerMetrics, explain: bool = False) -> Forwarder:
    """TorchServe's ``/predictions/{model}[/{version}]`` (``explain``: ``/explanations/...``): query parameters
    reach the handler, TorchServe's errors."""
    extra = EXPLAIN if explain else ()
    return Forwarder(
        dataplane, metrics, protocol=PROTOCOL_RAW, on_error=error_response, pass_query=True, extra_headers=extra
    )


@dataclass(frozen=True)
class InferenceForwarders:
    """The inference API's forwarders, one per protocol (``inference_routes`` gives them their paths)."""

    predictions: Forwarder
    """``/predictions/{model}[/{version}]`` (and the original ``/{model}/predict``)"""
    infer: Forwarder
    """``/v2/models/{model}[/versions/{version}]/infer``"""
    v1_predict: Forwarder
    """``/v1/models/{model}:predict``"""
    explanations: Forwarder | None = None
    """``/explanations/{model}[/{version}]``: the handler's ``explain_handle`` (TorchServe's header)"""
    v1_explain: Forwarder | None = None
    """``/v1/models/{model}:explain``"""
    v2_explain: Forwarder | None = None
    """``/v2/models/{model}[/versions/{version}]/explain``"""
    generation: GenerationForwarders | None = None
    """The generative models' text routes (``dms.rest.generation``)"""


@dataclass(frozen=True)
class GenerationForwarders:
    generate: Forwarder
    """``/v2/models/{model}[/versions/{version}]/generate``"""
    generate_stream: Forwarder
    """``/v2/models/{model}[/versions/{version}]/generate_stream``"""
    completions: Forwarder
    """``/v1/completions`` (OpenAI's; the model is named in the body)"""
    chat: Forwarder
    """``/v1/chat/completions``"""


def generation_forwarders(dataplane: DataPlane, metrics: ServerMetrics) -> GenerationForwarders:
    def forwarder(kind: str, on_error: ErrorFormat) -> Forwarder:
        generation = Generation(dataplane, kind)
        return Forwarder(dataplane, metrics, protocol=PROTOCOL_GENERATE, on_error=on_error, generation=generation)

    return GenerationForwarders(
        generate=forwarder("oip", oip_generate_error),
        generate_stream=forwarder("oip_stream", oip_generate_error),
        completions=forwarder("completions", openai_error),
        chat=forwarder("chat", openai_error),
    )


def inference_forwarders(dataplane: DataPlane, metrics: ServerMetrics) -> InferenceForwarders:
    return InferenceForwarders(
        predictions=predictions_forwarder(dataplane, metrics),
        infer=infer_forwarder(dataplane, metrics),
        v1_predict=predict_forwarder(dataplane, metrics),
        explanations=predictions_forwarder(dataplane, metrics, explain=True),
        v1_explain=predict_forwarder(dataplane, metrics, extra_headers=EXPLAIN),
        v2_explain=infer_forwarder(dataplane, metrics, extra_headers=EXPLAIN),
        generation=generation_forwarders(dataplane, metrics),
    )


_POST_PUT = frozenset({"POST", "PUT"})
_POST = frozenset({"POST"})


def inference_routes(forwarders: InferenceForwarders) -> RouteTable:
    """The inference API's routes that forward to a model: the one table (``dms.rest.calls``)."""
    predictions, infer = forwarders.predictions, forwarders.infer
    explaining = []
    if forwarders.explanations is not None:
        explaining += [
            ForwardRoute("/explanations/{model_name}", _POST_PUT, forwarders.explanations),
            ForwardRoute("/explanations/{model_name}/{model_version}", _POST_PUT, forwarders.explanations),
        ]
    if forwarders.v1_explain is not None:
        explaining.append(ForwardRoute("/v1/models/{model_name}:explain", _POST, forwarders.v1_explain))
    if forwarders.v2_explain is not None:
        explaining += [
            ForwardRoute("/v2/models/{model_name}/explain", _POST, forwarders.v2_explain),
            ForwardRoute("/v2/models/{model_name}/versions/{model_version}/explain", _POST, forwarders.v2_explain),
        ]
    generating = []
    if forwarders.generation is not None:
        generation = forwarders.generation
        for verb, forwarder in (("generate", generation.generate), ("generate_stream", generation.generate_stream)):
            generating += [
                ForwardRoute(f"/v2/models/{{model_name}}/{verb}", _POST, forwarder),
                ForwardRoute(f"/v2/models/{{model_name}}/versions/{{model_version}}/{verb}", _POST, forwarder),
            ]
        generating += [
            ForwardRoute("/v1/completions", _POST, generation.completions),
            ForwardRoute("/v1/chat/completions", _POST, generation.chat),
        ]
    return RouteTable(
        [
            ForwardRoute("/predictions/{model_name}", _POST_PUT, predictions),
            ForwardRoute("/predictions/{model_name}/{model_version}", _POST_PUT, predictions),
            ForwardRoute("/v2/models/{model_name}/infer", _POST, infer),
            ForwardRoute("/v2/models/{model_name}/versions/{model_version}/infer", _POST, infer),
            ForwardRoute("/v1/models/{model_name}:predict", _POST, forwarders.v1_predict),
            *explaining,
            *generating,
            # The original DMS interface: multipart fields named by the archive's signature.json.
            ForwardRoute("/{model_name}/predict", _POST, predictions),
        ]
    )


def build_inference_app(
    dataplane: DataPlane,
    metrics: ServerMetrics,
    keys: KeyStore | None = None,
    forwarders: InferenceForwarders | None = None,
) -> CallRouter:
    """The inference API as one ASGI app (the one DMS's own connections run, and a user may mount elsewhere):
    the route table's requests to their models, the rest to a Starlette app, the inference key checked first
    when ``inference_token_auth`` is on (health stays open)."""
    table = inference_routes(forwarders or inference_forwarders(dataplane, metrics))

    async def ping(request: Request) -> Response:
        if dataplane.healthy():
            return json_response({"status": "Healthy"})
        return json_response({"status": "Unhealthy"}, status=500)

    auth = keys is not None and dataplane.settings.inference_token_auth
    document = inference_openapi()
    if auth:
        document = with_bearer_auth(document, open_paths={"/ping", "/v2/health/live", "/v2/health/ready"})

    async def api_description(request: Request) -> Response:
        return json_response(document)

    routes = [
        *table.starlette_routes(),  # answered by the table; here for 405s and the OpenAPI listing
        Route("/ping", ping, methods=["GET"]),
        Route("/api-description", api_description, methods=["GET"]),
        Route("/", api_description, methods=["OPTIONS"]),
        *oip_routes(dataplane),
        *v1_routes(dataplane),
    ]
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    return CallRouter(app, table, keys if auth else None, "inference", _is_health)
