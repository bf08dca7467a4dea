"""KServe's ServingRuntime and InferenceService, as JSON schemas written here from the fields KServe's API
reference documents (serving.kserve.io/v1alpha1 ServingRuntimeSpec, v1beta1 InferenceServiceSpec), for the fields
a runtime or a predictor uses; plus the rules KServe's webhook adds. No KServe file is copied. Containers are
checked apart, as core Kubernetes objects (``kubernetes-validate``)."""

from __future__ import annotations

from typing import Any

import jsonschema

PROTOCOLS = ["v1", "v2", "grpc-v1", "grpc-v2"]
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    "additionalProperties": False,
}
MODEL_FORMAT = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "version": {"type": "string"},
        "autoSelect": {"type": "boolean"},
        "priority": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": False,
}
SERVING_RUNTIME = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1alpha1"},
        "kind": {"enum": ["ServingRuntime", "ClusterServingRuntime"]},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "annotations": STRING_MAP,
                "labels": STRING_MAP,
                "supportedModelFormats": {"type": "array", "items": MODEL_FORMAT},
                "protocolVersions": {"type": "array", "items": {"enum": PROTOCOLS}, "uniqueItems": True},
                "multiModel": {"type": "boolean"},
                "disabled": {"type": "boolean"},
                "grpcEndpoint": {"type": "string"},
                "grpcDataEndpoint": {"type": "string"},
                "httpDataEndpoint": {"type": "string"},
                "replicas": {"type": "integer", "minimum": 0},
                "containers": {"type": "array", "minItems": 1, "items": {"type": "object"}},
                "volumes": {"type": "array", "items": {"type": "object"}},
                "nodeSelector": STRING_MAP,
                "tolerations": {"type": "array", "items": {"type": "object"}},
                "affinity": {"type": "object"},
                "imagePullSecrets": {"type": "array", "items": {"type": "object"}},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
PREDICTOR_MODEL = {
    "type": "object",
    "required": ["modelFormat"],
    "properties": {
        "modelFormat": MODEL_FORMAT,
        "runtime": {"type": "string"},
        "protocolVersion": {"enum": ["v1", "v2", "grpc-v2"]},
        "storageUri": {"type": "string", "pattern": "^(gs|s3|pvc|https?|hdfs|webhdfs|oci|hf)://"},
        "args": {"type": "array", "items": {"type": "string"}},
        "env": {"type": "array", "items": {"type": "object"}},
        "ports": {"type": "array", "items": {"type": "object"}},
        "resources": {"type": "object"},
        "image": {"type": "string"},
    },
    "additionalProperties": False,
}
INFERENCE_SERVICE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["predictor"],
            "properties": {
                "predictor": {
                    "type": "object",
                    "properties": {
                        "model": PREDICTOR_MODEL,
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 0},
                        "serviceAccountName": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
                "transformer": {"type": "object"},
                "explainer": {"type": "object"},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


def serving_runtime_problems(document: dict[str, Any]) -> list[str]:
    """What is wrong with ``document`` as a (Cluster)ServingRuntime: schema errors, then KServe's own rules."""
    problems = [error.message for error in jsonschema.Draft202012Validator(SERVING_RUNTIME).iter_errors(document)]
    if problems:
        return problems
    spec = document["spec"]
    names = [entry["name"] for entry in spec.get("supportedModelFormats", [])]
    if len(names) != len(set(names)):
        problems.append("a model format is listed twice")
    for entry in spec.get("supportedModelFormats", []):
        if "priority" in entry and not entry.get("autoSelect"):
            problems.append(f"model format {entry['name']}: priority is only allowed with autoSelect: true")
    if not any(container.get("name") == "kserve-container" for container in spec["containers"]):
        problems.append("no container is named kserve-container")
    return problems


def inference_service_problems(document: dict[str, Any]) -> list[str]:
    return [error.message for error in jsonschema.Draft202012Validator(INFERENCE_SERVICE).iter_errors(document)]
