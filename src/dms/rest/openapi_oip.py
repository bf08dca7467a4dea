"""OpenAPI paths of the Open Inference Protocol (v2), KServe v1 and the model repository extension."""

from __future__ import annotations

from typing import Any

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"},
        "parameters": {"type": "object"},
        "data": {},
    },
}
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
    },
}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _answer("error", _ERROR) for code in codes}


def _get(op_id: str, summary: str, params: list[dict[str, Any]], *errors: int, ok: str = "OK") -> dict[str, Any]:
    return {
        "get": {
            "operationId": op_id,
            "summary": summary,
            "parameters": params,
            "responses": {"200": _answer(ok), **_errors(*errors)},
        }
    }


_MODEL = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}}


def _infer(op_id: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "post": {
            "operationId": op_id,
            "summary": "Run inference (JSON, or JSON header + binary data with Inference-Header-Content-Length)",
            "parameters": [
                *params,
                {
                    "name": "Inference-Header-Content-Length",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _INFER_REQUEST},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "responses": {
                "200": {
                    "description": "outputs (binary ones after the JSON header)",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                **_errors(400, 404, 408, 413, 415, 500, 503, 504),
            },
        }
    }


def oip_paths() -> dict[str, Any]:
    model, versioned = [_MODEL], [_MODEL, _VERSION]
    return {
        "/v2/health/live": _get("serverLive", "Liveness", []),
        "/v2/health/ready": _get("serverReady", "Readiness of the server and its models", [], 400),
        "/v2": _get("serverMetadata", "Server name, version and extensions", []),
        "/v2/models/stats": _get("allModelStatistics", "Statistics of every model", []),
        "/v2/models/{model_name}/stats": _get("modelStatistics", "Statistics of a model", model, 404),
        "/v2/models/{model_name}/versions/{model_version}/stats": _get(
            "modelVersionStatistics", "Statistics of a model version", versioned, 404
        ),
        "/v2/models/{model_name}": _get("modelMetadata", "Inputs, outputs, platform", model, 404),
        "/v2/models/{model_name}/versions/{model_version}": _get(
            "modelVersionMetadata", "Inputs, outputs, platform", versioned, 404
        ),
        "/v2/models/{model_name}/ready": _get("modelReady", "Readiness of a model", model, 400, 404),
        "/v2/models/{model_name}/versions/{model_version}/ready": _get(
            "modelVersionReady", "Readiness of a model version", versioned, 400, 404
        ),
        "/v2/models/{model_name}/infer": _infer("modelInfer", model),
        "/v2/models/{model_name}/versions/{model_version}/infer": _infer("modelVersionInfer", versioned),
        "/v2/models/{model_name}/explain": _explained(_infer("modelExplain", model)),
        "/v2/models/{model_name}/versions/{model_version}/explain": _explained(
            _infer("modelVersionExplain", versioned)
        ),
        "/v1/models": _get("v1ListModels", "KServe v1: model names", []),
        "/v1/models/{model_name}": _get("v1ModelReady", "KServe v1: name and readiness", model, 404),
        "/v1/models/{model_name}:predict": {
            "post": {
                "operationId": "v1Predict",
                "summary": 'KServe v1: {"instances": [...]} or {"inputs": ...}',
                "parameters": model,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {
                    "200": _answer('{"predictions": ...} or {"outputs": ...}'),
                    **_errors(400, 404, 408, 413, 500, 503, 504),
                },
            }
        },
        "/v1/models/{model_name}:explain": {
            "post": {
                "operationId": "v1Explain",
                "summary": "KServe v1: the handler's explanation (TorchServe's explain_handle)",
                "parameters": model,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": _answer("the explanation"), **_errors(400, 404, 408, 413, 500, 503, 504)},
            }
        },
    }


def _explained(operation: dict[str, Any]) -> dict[str, Any]:
    """An inference operation as its explanation twin: the handler's ``explain_handle`` answers it."""
    post = operation["post"]
    return {"post": {**post, "summary": "The handler's explanation of an inference request (explain_handle)"}}


def console_paths() -> dict[str, Any]:
    page = {
        "get": {
            "operationId": "consolePage",
            "summary": "The web console (HTML)",
            "responses": {"200": {"description": "the page", "content": {"text/html": {"schema": {}}}}},
        }
    }
    try_body = {"required": True, "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}

    def try_it(op_id: str, summary: str) -> dict[str, Any]:
        return {
            "post": {
                "operationId": op_id,
                "summary": summary,
                "parameters": [_MODEL],
                "requestBody": try_body,
                "responses": {
                    "200": {"description": "the model's answer", "content": {"*/*": {"schema": {}}}},
                    **_errors(400, 404, 408, 413, 500, 503, 504),
                },
            }
        }

    return {
        "/console": page,
        "/console/": {"get": {**page["get"], "operationId": "consolePageSlash"}},
        "/console/api/summary": _get("consoleSummary", "Models, workers, queues and request totals", []),
        "/console/api/predict/{model_name}": try_it("consolePredict", "Try a model as /predictions does"),
        "/console/api/infer/{model_name}": try_it("consoleInfer", "Try a model with an Open Inference Protocol body"),
    }


def repository_paths() -> dict[str, Any]:
    def post(op_id: str, summary: str, params: list[dict[str, Any]], *errors: int) -> dict[str, Any]:
        return {
            "post": {
                "operationId": op_id,
                "summary": summary,
                "parameters": params,
                "responses": {"200": _answer("done"), **_errors(*errors)},
            }
        }

    index = post("repositoryIndex", "Models loaded and available in the model store", [], 400)
    index["post"]["requestBody"] = {
        "required": False,
        "content": {"application/json": {"schema": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}},
    }
    return {
        "/v2/repository/index": index,
        "/v2/repository/models/{model_name}/load": post(
            "repositoryLoad", "Register the model store's archive for a model", [_MODEL], 400, 404, 503
        ),
        "/v2/repository/models/{model_name}/unload": post(
            "repositoryUnload", "Unregister every version of a model", [_MODEL], 404
        ),
    }


_GENERATE_REQUEST = {
    "type": "object",
    "required": ["text_input"],
    "properties": {"text_input": {"type": "string"}, "parameters": {"type": "object"}},
}
_OPENAI_REQUEST = {"type": "object", "required": ["model"], "properties": {"model": {"type": "string"}}}
_OPENAI_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "object"}}}
_STREAMED = {"text/event-stream": {"schema": {"type": "string"}}}


def _generation(
    op_id: str, summary: str, params: list[dict[str, Any]], body: dict[str, Any], error: dict[str, Any]
) -> dict[str, Any]:
    failed = {"description": "error", "content": {"application/json": {"schema": error}}}
    errors = {str(code): failed for code in (400, 404, 408, 413, 500, 503, 504)}
    return {
        "post": {
            "operationId": op_id,
            "summary": summary,
            "parameters": params,
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {
                "200": {
                    "description": "the generated text: one JSON answer, or server-sent events as it is made",
                    "content": {"application/json": {"schema": {"type": "object"}}, **_STREAMED},
                },
                **errors,
            },
        }
    }


def generation_paths() -> dict[str, Any]:
    """Text generation for ``generative: true`` models (``dms.rest.generation``)."""
    model, versioned = [_MODEL], [_MODEL, _VERSION]
    whole, streamed = "Generate text (the generate extension)", "Generate text as server-sent events"
    return {
        "/v2/models/{model_name}/generate": _generation("generate", whole, model, _GENERATE_REQUEST, _ERROR),
        "/v2/models/{model_name}/versions/{model_version}/generate": _generation(
            "versionGenerate", whole, versioned, _GENERATE_REQUEST, _ERROR
        ),
        "/v2/models/{model_name}/generate_stream": _generation(
            "generateStream", streamed, model, _GENERATE_REQUEST, _ERROR
        ),
        "/v2/models/{model_name}/versions/{model_version}/generate_stream": _generation(
            "versionGenerateStream", streamed, versioned, _GENERATE_REQUEST, _ERROR
        ),
        "/v1/completions": _generation(
            "completions", "OpenAI-compatible text completion", [], _OPENAI_REQUEST, _OPENAI_ERROR
        ),
        "/v1/chat/completions": _generation(
            "chatCompletions", "OpenAI-compatible chat completion", [], _OPENAI_REQUEST, _OPENAI_ERROR
        ),
    }
