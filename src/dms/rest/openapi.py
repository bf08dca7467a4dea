"""OpenAPI 3 documents of the inference and management ports (``GET /api-description``)."""

from __future__ import annotations

from typing import Any

from dms import __version__
from dms.rest.openapi_oip import console_paths, generation_paths, oip_paths, repository_paths

_ERROR = {"$ref": "#/components/schemas/Error"}
_COMPONENTS = {
    "schemas": {
        "Error": {
            "type": "object",
            "required": ["code", "type", "message"],
            "properties": {
                "code": {"type": "integer", "description": "HTTP status"},
                "type": {"type": "string", "description": "error class, e.g. ModelNotFoundError"},
                "message": {"type": "string"},
            },
        },
        "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
    }
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "invalid input",
        401: "no API key (Authorization: Bearer <key>)",
        403: "wrong API key, or not allowed",
        404: "unknown model or version",
        408: "the request was still arriving after request_read_timeout_s, or arrived slower than "
        "min_request_body_rate_bytes_s (the connection closes)",
        409: "already registered",
        413: "body over max_request_size_bytes",
        500: "handler error or worker died",
        503: "queue full or model unavailable",
        504: "model did not answer within response_timeout_s",
    }
    return {str(code): _json(_ERROR, text[code]) for code in codes}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _query(name: str, kind: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": description}


def _doc(title: str, paths: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": __version__},
        "paths": paths,
        "components": _COMPONENTS,
    }


_DESCRIBE = {
    "get": {
        "operationId": "apiDescription",
        "summary": "This OpenAPI document",
        "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document")},
    }
}
_OPTIONS = {
    "options": {
        "operationId": "apiDescriptionOptions",
        "summary": "This OpenAPI document",
        "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document")},
    }
}


def metrics_openapi() -> dict[str, Any]:
    """The metrics port's document (TorchServe answers ``OPTIONS /`` there too)."""
    exposition = {
        "get": {
            "operationId": "metrics",
            "summary": "The server's metrics in Prometheus' text format",
            "responses": {"200": {"description": "Prometheus exposition", "content": {"text/plain": {}}}},
        }
    }
    return _doc("DMS metrics API", {"/": _OPTIONS, "/api-description": _DESCRIBE, "/metrics": exposition})


def inference_openapi() -> dict[str, Any]:
    predict_body = {
        "required": True,
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {}},
            "multipart/form-data": {"schema": {"type": "object"}},
            "*/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    prediction = {
        "requestBody": predict_body,
        "responses": {
            "200": {"description": "The handler's answer (JSON, text or bytes)", "content": {"*/*": {"schema": {}}}},
            **_errors(400, 404, 408, 413, 500, 503, 504),
        },
    }

    def predict_ops(op_prefix: str, params: list[dict[str, Any]], summary: str = "Run a prediction") -> dict[str, Any]:
        return {
            method: {
                "operationId": f"{op_prefix}{method.title()}",
                "summary": summary,
                "parameters": params,
                **prediction,
            }
            for method in ("post", "put")
        }

    model = _path_param("model_name", "registered model name")
    version = _path_param("model_version", "model version")
    explained = "The handler's explanation of a prediction (TorchServe's explain_handle)"
    return _doc(
        "DMS inference API",
        {
            "/": _OPTIONS,
            "/api-description": _DESCRIBE,
            "/ping": {
                "get": {
                    "operationId": "ping",
                    "summary": "Health of the server and its models",
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Status"}, "Healthy"),
                        "500": _json({"$ref": "#/components/schemas/Status"}, "Unhealthy"),
                    },
                }
            },
            "/predictions/{model_name}": predict_ops("predictions", [model]),
            "/predictions/{model_name}/{model_version}": predict_ops("versionPredictions", [model, version]),
            "/explanations/{model_name}": predict_ops("explanations", [model], explained),
            "/explanations/{model_name}/{model_version}": predict_ops(
                "versionExplanations", [model, version], explained
            ),
            "/{model_name}/predict": {
                "post": {
                    "operationId": "legacyPredict",
                    "summary": "Run a prediction the original DMS way: multipart fields named by signature.json",
                    "parameters": [model],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {"schema": {"type": "object"}},
                            "*/*": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"prediction": {"type": "array"}}},
                            "The model's prediction, e.g. top-5 classes and probabilities",
                        ),
                        **_errors(400, 404, 408, 413, 500, 503, 504),
                    },
                }
            },
            **oip_paths(),
            **generation_paths(),
        },
    )


def with_bearer_auth(document: dict[str, Any], open_paths: set[str]) -> dict[str, Any]:
    """The document with a bearer-key requirement on every operation outside ``open_paths``."""
    components = {**document["components"], "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}}
    paths: dict[str, Any] = {}
    for path, item in document["paths"].items():
        if path in open_paths:
            paths[path] = {method: {**op, "security": []} for method, op in item.items()}
        else:
            paths[path] = {
                method: {**op, "responses": {**op["responses"], **_errors(401, 403)}} for method, op in item.items()
            }
    return {**document, "components": components, "security": [{"bearerAuth": []}], "paths": paths}


def management_openapi(token_rotation: bool = False) -> dict[str, Any]:
    model = _path_param("model_name", "registered model name")
    version = _path_param("model_version", "model version, or 'all' for describe")
    status = _json({"$ref": "#/components/schemas/Status"}, "done")
    described = _json({"type": "array", "items": {"type": "object"}}, "one entry per version")
    scale_params = [
        _query("min_worker", "integer", "workers to run (default 1)"),
        _query("max_worker", "integer", "upper bound of workers (default min_worker)"),
        _query("number_gpu", "integer", "TorchServe's; accepted, workers are spread over the visible GPUs"),
        _query("timeout", "integer", "TorchServe's; accepted, a retiring worker finishes its batch first"),
        _query("synchronous", "boolean", "wait until the workers are up (default false)"),
    ]
    register_params = [
        {**_query("url", "string", "archive name in the model store, local path, or allowed URL"), "required": True},
        _query("model_name", "string", "name to register under (default: the manifest's)"),
        _query("handler", "string", "override the manifest's handler"),
        _query("initial_workers", "integer", "workers to start"),
        _query("batch_size", "integer", "largest batch"),
        _query("max_batch_delay", "integer", "upper bound on batching delay, ms"),
        _query("response_timeout", "integer", "seconds a batch may take"),
        _query("startup_timeout", "integer", "seconds a worker may take to load the model"),
        _query("runtime", "string", "python or python3 (TorchServe's)"),
        _query("synchronous", "boolean", "wait until the workers are up (default true)"),
    ]
    paths: dict[str, Any] = {
        "/": _OPTIONS,
        "/api-description": _DESCRIBE,
        "/models": {
            "get": {
                "operationId": "listModels",
                "summary": "List registered models",
                "parameters": [
                    _query("limit", "integer", "page size (default 100)"),
                    _query("next_page_token", "string", "from the previous page"),
                ],
                "responses": {"200": _json({"type": "object"}, "models and nextPageToken"), **_errors(400)},
            },
            "post": {
                "operationId": "registerModel",
                "summary": "Register a model archive",
                "parameters": register_params,
                "responses": {"200": status, "202": status, **_errors(400, 403, 404, 409, 503)},
            },
        },
        "/models/{model_name}": {
            "get": {
                "operationId": "describeModel",
                "summary": "Describe the default version",
                "parameters": [model],
                "responses": {"200": described, **_errors(404)},
            },
            "put": {
                "operationId": "scaleModel",
                "summary": "Scale the default version's workers",
                "parameters": [model, *scale_params],
                "responses": {"200": status, "202": status, **_errors(400, 404)},
            },
            "delete": {
                "operationId": "unregisterModel",
                "summary": "Unregister the default version",
                "parameters": [model],
                "responses": {"200": status, **_errors(404)},
            },
        },
        "/models/{model_name}/{model_version}": {
            "get": {
                "operationId": "describeModelVersion",
                "summary": "Describe a version (or all)",
                "parameters": [model, version],
                "responses": {"200": described, **_errors(404)},
            },
            "put": {
                "operationId": "scaleModelVersion",
                "summary": "Scale one version's workers",
                "parameters": [model, version, *scale_params],
                "responses": {"200": status, "202": status, **_errors(400, 404)},
            },
            "delete": {
                "operationId": "unregisterModelVersion",
                "summary": "Unregister one version",
                "parameters": [model, version],
                "responses": {"200": status, **_errors(404)},
            },
        },
        "/models/{model_name}/{model_version}/set-default": {
            "put": {
                "operationId": "setDefaultVersion",
                "summary": "Make a version the default",
                "parameters": [model, version],
                "responses": {"200": status, **_errors(404)},
            },
        },
    }
    if token_rotation:
        paths["/token"] = {
            "post": {
                "operationId": "rotateKey",
                "summary": "Replace an API key (the key file is rewritten)",
                "parameters": [_query("type", "string", "management (default) or inference")],
                "responses": {"200": _json({"type": "object"}, "the new key"), **_errors(400, 401, 403)},
            }
        }
    paths.update(repository_paths())
    paths.update(console_paths())
    return _doc("DMS management API", paths)
