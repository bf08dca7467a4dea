"""A Ray cluster of a head and two worker nodes on this machine, started and stopped by the tests' own process.

``ray.cluster_utils.Cluster`` starts each node's daemons (GCS, raylet) as this process's children; stopping it
ends them through their process handles, and whatever they left (a worker of a node the test killed) is ended
by pid, never by name (``ray stop`` would find every Ray process on the machine).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

NODE_CPUS = 3
OBJECT_STORE_BYTES = 80_000_000


@dataclass
class LocalRayCluster:
    cluster: Any
    nodes: list[Any]
    """The worker nodes (the head takes no workers: it has no CPUs to give)."""
    node_cache: Path
    """Where the nodes unpack the model files shipped to them (``DMS_NODE_MODEL_CACHE``)."""

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def node_ids(self) -> set[str]:
        return {node.node_id for node in self.nodes}

    def add_node(self) -> Any:
        node = self.cluster.add_node(num_cpus=NODE_CPUS, object_store_memory=OBJECT_STORE_BYTES)
        self.nodes.append(node)
        self.cluster.wait_for_nodes()
        return node

    def kill_node(self, node_id: str) -> None:
        """End every process of a worker node at once (its raylet and its workers), as a machine dying would."""
        [node] = [node for node in self.nodes if node.node_id == node_id]
        self.nodes.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)


def _descendants() -> dict[int, psutil.Process]:
    return {child.pid: child for child in psutil.Process().children(recursive=True)}


@pytest.fixture(scope="package")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRayCluster]:
    pytest.importorskip("ray", reason="needs Ray: pip install 'deep-model-server[ray]' (scripts/test.sh does)")
    from ray.cluster_utils import Cluster

    node_cache = tmp_path_factory.mktemp("ray-node-cache")
    before = set(_descendants())
    saved = os.environ.get("DMS_NODE_MODEL_CACHE")
    os.environ["DMS_NODE_MODEL_CACHE"] = str(node_cache)  # the nodes' daemons, and so their workers, inherit it
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False},
    )
    started = LocalRayCluster(cluster, [], node_cache)
    seen: dict[int, psutil.Process] = {}
    try:
        for _ in range(2):
            started.add_node()
        yield started
    finally:
        seen = {pid: process for pid, process in _descendants().items() if pid not in before}
        cluster.shutdown()
        if saved is None:
            os.environ.pop("DMS_NODE_MODEL_CACHE", None)
        else:
            os.environ["DMS_NODE_MODEL_CACHE"] = saved
        for process in seen.values():  # what the nodes left behind, by pid
            try:
                process.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(list(seen.values()), timeout=10)
