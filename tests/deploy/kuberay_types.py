"""KubeRay's RayCluster (ray.io/v1), as a JSON schema written here from the fields KubeRay's API reference documents
(RayClusterSpec, HeadGroupSpec, WorkerGroupSpec, AutoscalerOptions) for the fields a cluster uses, plus the rules
KubeRay's validation adds. No KubeRay file is copied. Pod templates are checked apart, as core Kubernetes objects
(``kubernetes-validate``)."""

from __future__ import annotations

from typing import Any

import jsonschema

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
POD_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {"metadata": {"type": "object"}, "spec": {"type": "object", "required": ["containers"]}},
    "additionalProperties": False,
}
WORKER_GROUP = {
    "type": "object",
    "required": ["groupName", "template", "rayStartParams"],
    "properties": {
        "groupName": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "replicas": {"type": "integer", "minimum": 0},
        "minReplicas": {"type": "integer", "minimum": 0},
        "maxReplicas": {"type": "integer", "minimum": 0},
        "numOfHosts": {"type": "integer", "minimum": 1},
        "suspend": {"type": "boolean"},
        "rayStartParams": STRING_MAP,
        "template": POD_TEMPLATE,
    },
    "additionalProperties": False,
}
RAY_CLUSTER = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayCluster"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["headGroupSpec"],
            "properties": {
                "rayVersion": {"type": "string"},
                "enableInTreeAutoscaling": {"type": "boolean"},
                "autoscalerOptions": {
                    "type": "object",
                    "properties": {
                        "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
                        "idleTimeoutSeconds": {"type": "integer", "minimum": 0},
                        "resources": {"type": "object"},
                        "image": {"type": "string"},
                        "env": {"type": "array"},
                    },
                    "additionalProperties": False,
                },
                "headGroupSpec": {
                    "type": "object",
                    "required": ["template", "rayStartParams"],
                    "properties": {
                        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                        "enableIngress": {"type": "boolean"},
                        "rayStartParams": STRING_MAP,
                        "template": POD_TEMPLATE,
                    },
                    "additionalProperties": False,
                },
                "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP},
                "suspend": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


def ray_cluster_problems(document: dict[str, Any]) -> list[str]:
    """What is wrong with ``document`` as a RayCluster: schema errors, then KubeRay's own rules."""
    problems = [error.message for error in jsonschema.Draft202012Validator(RAY_CLUSTER).iter_errors(document)]
    if problems:
        return problems
    spec = document["spec"]
    groups = spec.get("workerGroupSpecs", [])
    names = [group["groupName"] for group in groups]
    if len(names) != len(set(names)):
        problems.append("two worker groups share a name")
    for group in groups:
        low, high = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
        if low > high:
            problems.append(f"worker group {group['groupName']}: minReplicas {low} is over maxReplicas {high}")
        if not low <= group.get("replicas", low) <= high:
            problems.append(f"worker group {group['groupName']}: replicas is outside [minReplicas, maxReplicas]")
    return problems
