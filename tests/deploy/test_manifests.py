"""The Kubernetes and KServe manifests: rendered by ``kubectl kustomize`` offline, every object validated against a
pinned Kubernetes version's schemas (``kubernetes-validate``, strict: an unknown field is an error), their
cross-references checked, and DMS run with the Deployment's own container arguments, environment and config:
its probes, the metric the autoscaler reads and the key its Secret holds, against a real server."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from tests.conftest import make_squeezenet_archive
from tests.deploy.kserve_types import inference_service_problems, serving_runtime_problems
from tests.deploy.kuberay_types import ray_cluster_problems
from tests.e2e.test_user_flow import SQUEEZENET_CONFIG
from tests.support import REPO, running_server, shared_path

KUBERNETES = "1.32.0"
"""The Kubernetes version the manifests are checked against."""
BASE = REPO / "deploy" / "kubernetes"
KSERVE = REPO / "deploy" / "kserve"


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    """``kubectl kustomize`` of the base, by kind, in a network namespace of its own (kubectl must reach nothing)."""
    if shutil.which("kubectl") is None:
        pytest.skip("needs kubectl (scripts/test.sh installs kubernetes-client)")
    done = subprocess.run(
        ["unshare", "-n", "kubectl", "kustomize", str(BASE)], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0 and "unshare" in done.stderr and "Operation not permitted" in done.stderr:
        pytest.skip("needs `unshare -n` (root) to keep kubectl off the network")
    assert done.returncode == 0, done.stderr
    objects = list(yaml.safe_load_all(done.stdout))
    by_kind = {document["kind"]: document for document in objects}
    assert len(by_kind) == len(objects) == 5
    return by_kind


def pod_spec(rendered: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = rendered["Deployment"]["spec"]["template"]["spec"]
    return spec


def test_every_object_is_valid_for_kubernetes(rendered):
    assert set(rendered) == {"ConfigMap", "Service", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    adapter_rules = yaml.safe_load((BASE / "prometheus-adapter" / "rules.yaml").read_text())
    for document in [*rendered.values(), adapter_rules]:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_a_typo_is_caught(rendered):
    broken = yaml.safe_load(yaml.safe_dump(rendered["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_the_objects_point_at_each_other(rendered):
    deployment = rendered["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert rendered["Service"]["spec"]["selector"].items() <= labels.items()
    assert rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = rendered["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (container,) = pod_spec(rendered)["containers"]
    port_names = {port["name"] for port in container["ports"]}
    service_ports = {port["name"]: port for port in rendered["Service"]["spec"]["ports"]}
    assert {port["targetPort"] for port in service_ports.values()} <= port_names
    assert "management" not in service_ports  # per pod: see docs/deploy.md
    assert service_ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in port_names
    volumes = {volume["name"]: volume for volume in pod_spec(rendered)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == rendered["ConfigMap"]["metadata"]["name"]  # the hashed name
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and "/tmp" in mounts
    assert mounts["/mnt/models/model-store"]["readOnly"] is True
    grace = pod_spec(rendered)["terminationGracePeriodSeconds"]
    drain = tomllib.loads(rendered["ConfigMap"]["data"]["dms.toml"])
    assert grace > drain["graceful_shutdown_s"] + container["lifecycle"]["preStop"]["sleep"]["seconds"]


def test_dms_as_the_deployment_runs_it(rendered, tmp_path: Path):
    model = shared_path("models/squeezenet/squeezenet_v1.1.onnx")
    store = tmp_path / "model-store"
    make_squeezenet_archive(model, store, SQUEEZENET_CONFIG)
    config = tmp_path / "dms.toml"
    config.write_text(rendered["ConfigMap"]["data"]["dms.toml"])
    secret = tmp_path / "management-key"
    secret.write_text("a-key-of-the-dms-management-key-secret")
    (container,) = pod_spec(rendered)["containers"]
    mounted = {"/etc/dms/dms.toml": str(config), "/var/run/secrets/dms/management-key": str(secret)}
    args = [mounted.get(arg, arg) for arg in container["args"]]
    env = {entry["name"]: mounted.get(entry["value"], entry["value"]) for entry in container["env"]}
    env["DMS_MODEL_STORE"] = str(store)  # the image's environment names /mnt/models/model-store
    with running_server(tmp_path, args, env) as server:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            response = httpx.get(server.inference_url + container[probe]["httpGet"]["path"], timeout=30)
            assert response.status_code == 200, (probe, response.text)
        assert server.predict("squeezenet", shared_path("images/kitten.jpg").read_bytes()).status_code == 200
        unauthorized = httpx.get(f"{server.management_url}/models/squeezenet", timeout=30)
        assert unauthorized.status_code == 401
        keyed = httpx.get(
            f"{server.management_url}/models/squeezenet",
            headers={"Authorization": f"Bearer {secret.read_text()}"},
            timeout=30,
        )
        assert keyed.status_code == 200 and keyed.json()[0]["batchSize"] == 4  # [model_settings.squeezenet]
        # The autoscaler's metric, with the label its selector picks, as prometheus-adapter's rule reads it.
        hpa_metric = rendered["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]
        exposition = httpx.get(f"{server.metrics_url}/metrics", timeout=30).text
        wanted = f'{hpa_metric["name"]}{{model="{hpa_metric["selector"]["matchLabels"]["model"]}",version="1.0"}}'
        assert wanted in exposition
        rules = yaml.safe_load(
            yaml.safe_load((BASE / "prometheus-adapter" / "rules.yaml").read_text())["data"]["config.yaml"]
        )["rules"]
        assert any(rule["name"]["as"] == hpa_metric["name"] for rule in rules)
        assert all(hpa_metric["name"] in rule["seriesQuery"] for rule in rules)


def test_the_kserve_runtime_and_a_torchserve_inference_service_are_what_kserve_accepts():
    runtime = yaml.safe_load((KSERVE / "clusterservingruntime.yaml").read_text())
    assert serving_runtime_problems(runtime) == []
    for container in runtime["spec"]["containers"]:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": {"containers": [container]}}
        kubernetes_validate.validate(pod, KUBERNETES, strict=True)
    service = yaml.safe_load((KSERVE / "inferenceservice-mnist.yaml").read_text())
    assert inference_service_problems(service) == []
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {entry["name"] for entry in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]


def test_the_kserve_checks_can_fail():
    runtime = yaml.safe_load((KSERVE / "clusterservingruntime.yaml").read_text())
    runtime["spec"]["supportedModelFormats"][0]["autoSelect"] = False
    runtime["spec"]["containers"][0]["name"] = "dms"
    runtime["spec"]["protocolVersions"].append("v3")
    assert len(serving_runtime_problems(runtime)) == 1  # the schema's error comes first
    runtime["spec"]["protocolVersions"].pop()
    assert len(serving_runtime_problems(runtime)) == 2


KUBERAY = REPO / "deploy" / "kuberay" / "raycluster.yaml"


def _ray_documents() -> tuple[dict[str, Any], dict[str, Any]]:
    cluster, service = yaml.safe_load_all(KUBERAY.read_text())
    return cluster, service


def test_the_kuberay_cluster_is_what_kuberay_and_kubernetes_accept():
    cluster, service = _ray_documents()
    assert ray_cluster_problems(cluster) == []
    kubernetes_validate.validate(service, KUBERNETES, strict=True)
    spec = cluster["spec"]
    for template in [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": template["spec"]}
        kubernetes_validate.validate(pod, KUBERNETES, strict=True)


def test_the_kuberay_cluster_holds_together():
    cluster, service = _ray_documents()
    head = cluster["spec"]["headGroupSpec"]
    containers = {c["name"]: c for c in head["template"]["spec"]["containers"]}
    dms, ray_head = containers["dms"], containers["ray-head"]
    # The dms container is a driver of the head's Ray: the GCS port it names, and the head's sockets it shares.
    gcs = next(p["containerPort"] for p in ray_head["ports"] if p["name"] == "gcs")
    assert f"--ray-address=127.0.0.1:{gcs}" in dms["args"]
    for container in (dms, ray_head):
        assert {"name": "ray-tmp", "mountPath": "/tmp/ray"} in container["volumeMounts"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # no model workers beside the front
    # Every Ray container runs the same DMS image (a worker actor runs DMS's own worker code).
    workers = [c for g in cluster["spec"]["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    assert {c["image"] for c in [dms, ray_head, *workers]} == {dms["image"]}
    # The Service reaches the front's named ports on the pods KubeRay labels as this cluster's head.
    assert service["spec"]["selector"] == {"ray.io/cluster": cluster["metadata"]["name"], "ray.io/node-type": "head"}
    named = {p["name"] for p in dms["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= named
    gpu = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert gpu["minReplicas"] == 0 and cluster["spec"]["enableInTreeAutoscaling"] is True


def test_the_kuberay_checks_can_fail():
    cluster, _ = _ray_documents()
    cluster["spec"]["workerGroupSpecs"][0]["minReplicas"] = 20
    assert any("minReplicas 20 is over" in problem for problem in ray_cluster_problems(cluster))
    cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    assert ray_cluster_problems(cluster) != []
