"""The server's connection to a Ray cluster: make worker actors, ship model files, say why one cannot be placed.

Imported only when the server runs its workers on Ray (``--ray-address``): Ray is an optional extra.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import ray

from dms.archive.bare import BARE_ARCHIVER
from dms.archive.shipping import ModelPack, pack_model_dir
from dms.engine.supervision import Placement
from dms.errors import DMSError
from dms.messages import LoadModel
from dms.worker.ray_actor import CONCURRENCY_GROUPS, WorkerActor

log = logging.getLogger("dms.ray")

NAMESPACE = "dms"
INLINE_ENV = "RAY_max_direct_call_object_size"
INLINE_BYTES = 8 * 2**20
"""Batches and answers up to this size travel inside the actor call rather than through Ray's object store
(Ray's default stops at 100 KiB). Measured on one machine (bench.ray_workers' probe): a 400 KB batch's round
trip took 3.4 ms through the object store and 2.2-2.4 ms inline. Set ``RAY_max_direct_call_object_size`` in the
server's environment to choose another limit; it is handed to the workers too."""


class RayCluster:
    """One server process's handle on a Ray cluster it joined as a driver: its actors live as long as it does
    (Ray ends a driver's actors when the driver goes), so a server that dies leaves no workers behind."""

    def __init__(self, address: str, namespace: str = NAMESPACE) -> None:
        self.address = address
        self.namespace = namespace
        self._actor_class: Any = None

    def connect(self) -> None:
        """Join the cluster (blocking; in the server's main thread, before its ports open)."""
        if not ray.is_initialized():
            inline = os.environ.setdefault(INLINE_ENV, str(INLINE_BYTES))  # read by Ray in this process
            try:
                ray.init(
                    address=self.address,
                    namespace=self.namespace,
                    logging_level=logging.WARNING,
                    runtime_env={"env_vars": {INLINE_ENV: inline}},  # and in its workers
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise DMSError(f"cannot join the Ray cluster at {self.address}: {exc}") from exc
        self._actor_class = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(WorkerActor)
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        log.info("joined the Ray cluster at %s: %d nodes, %s", self.address, len(nodes), ray.cluster_resources())

    def disconnect(self) -> None:
        if ray.is_initialized():
            ray.shutdown()

    def new_actor(self, placement: Placement) -> Any:
        """A worker actor (not yet placed: Ray places it once a node has room). Ray never restarts it: the
        server replaces a dead worker itself, wherever the cluster then has room."""
        options: dict[str, Any] = {
            "num_cpus": placement.num_cpus,
            "num_gpus": placement.num_gpus,
            "max_restarts": 0,
            "scheduling_strategy": placement.strategy,
        }
        if placement.memory_bytes:
            options["memory"] = placement.memory_bytes
        if placement.resources:
            options["resources"] = dict(placement.resources)
        return self._actor_class.options(**options).remote()

    @staticmethod
    def kill(actor: Any) -> None:
        ray.kill(actor, no_restart=True)

    async def ship(self, load: LoadModel) -> tuple[str, Any]:
        """Pack the folder of the model ``load`` names (of a bare model file, that file only) and put it in the
        object store: ``(digest, object ref)``, for ``WorkerActor.load``. The caller keeps the ref while its workers
        may still start (the object lives as long as a ref does)."""
        bare = load.manifest.get("archiverVersion") == BARE_ARCHIVER
        only = [str(load.manifest["model"]["serializedFile"])] if bare else None
        pack: ModelPack = await asyncio.to_thread(pack_model_dir, Path(load.model_dir), only)
        ref = await asyncio.to_thread(ray.put, pack.data)
        return pack.digest, ref

    async def unplaceable(self, placement: Placement) -> str | None:
        """Why no node of the cluster as it is now could ever take a worker asking for ``placement`` (None when
        one could, room or not)."""
        nodes = await asyncio.to_thread(ray.nodes)
        return unplaceable_reason(placement.demand(), [n["Resources"] for n in nodes if n.get("Alive")])


def unplaceable_reason(demand: dict[str, float], nodes: list[dict[str, float]]) -> str | None:
    """None when one of ``nodes`` (each node's total resources) has all of ``demand``; else the reason."""
    if any(all(node.get(name, 0.0) >= amount for name, amount in demand.items()) for node in nodes):
        return None
    offered = "; ".join(demand_text({name: node.get(name, 0.0) for name in demand}) for node in nodes)
    return (
        f"no node of the Ray cluster offers what each worker asks ({demand_text(demand)}); "
        f"its nodes offer: {offered or 'none'}"
    )


def demand_text(amounts: dict[str, float]) -> str:
    """Resources as a reader wants them: ``CPU 1, GPU 1, memory 4096 MiB``, by name."""
    return ", ".join(f"{name} {_amount(name, amounts[name])}" for name in sorted(amounts))


def _amount(name: str, amount: float) -> str:
    if name == "memory":
        return f"{amount / 2**20:.0f} MiB"
    return f"{amount:g}"
