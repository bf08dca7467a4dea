"""A model worker as a Ray actor: the same ``ModelService`` a local worker process runs, called by Ray.

The server (``dms.engine.ray_workers``) makes one actor per worker and talks to it in the same typed messages
as to a local worker, msgpack-encoded: ``load`` takes a ``LoadModel`` and answers ``ModelLoaded`` or
``LoadFailed``; ``run_batch`` takes a ``Batch`` and answers a ``BatchResult``. Both run in the actor's default
concurrency group (one thread, one call at a time, in the order sent). ``watch`` (which never returns, so the
server learns of the actor's death, or its node's, the moment Ray does) and ``memory`` run in a group of their
own beside them. The model's files come as a pack in Ray's object store, extracted once per machine.

Ray is imported here only inside the actor's methods: this module is imported by Ray's worker processes, where
Ray is present, and never on the server's default path.
"""

from __future__ import annotations

import os
import threading
import traceback
from typing import Any

import msgspec

from dms.errors import DMSError
from dms.messages import Batch, ErrorInfo, LoadFailed, LoadModel, ModelLoaded

CONTROL_GROUP = "control"
"""The concurrency group of ``watch`` and ``memory``: they answer while a batch runs."""
CONCURRENCY_GROUPS = {CONTROL_GROUP: 2}

_encoder = msgspec.msgpack.Encoder()
_load_decoder = msgspec.msgpack.Decoder(LoadModel)
_batch_decoder = msgspec.msgpack.Decoder(Batch)


class PlacedOn(msgspec.Struct, frozen=True):
    """Where Ray put a worker: its node and process."""

    node_id: str
    node_ip: str
    pid: int
    gpu_ids: list[str]


class WorkerActor:
    def __init__(self) -> None:
        self._service: Any = None
        self._stopped = threading.Event()

    def placed_on(self) -> bytes:
        """Where this worker runs (the first call: it returns once Ray has placed and started the actor)."""
        import ray

        context = ray.get_runtime_context()
        return _encoder.encode(
            PlacedOn(
                node_id=context.get_node_id(),
                node_ip=ray.util.get_node_ip_address(),
                pid=os.getpid(),
                gpu_ids=[str(gpu) for gpu in context.get_accelerator_ids().get("GPU", [])],
            )
        )

    def load(self, load_frame: bytes, pack: list[Any], max_bytes: int) -> bytes:
        """Load the model from the pack ``[digest, object ref]`` (extracted on this machine once): answer
        ``ModelLoaded``, or ``LoadFailed`` naming why."""
        from dms.worker.service import ModelService

        load = _load_decoder.decode(load_frame)
        try:
            model_dir = _model_dir(pack, max_bytes)
            load = msgspec.structs.replace(load, model_dir=str(model_dir), gpu_id=0 if _has_gpu() else None)
            self._service = ModelService(load)
        except DMSError as exc:
            return _encoder.encode(LoadFailed(error=ErrorInfo(exc.type_name, exc.message)))
        except Exception as exc:
            traceback.print_exc()
            message = f"model {load.model_name} failed to load: {type(exc).__name__}: {exc}"
            return _encoder.encode(LoadFailed(error=ErrorInfo("HandlerError", message[:1000])))
        loaded: ModelLoaded = self._service.loaded_message(os.getpid())
        return _encoder.encode(loaded)

    def run_batch(self, batch_frame: bytes) -> bytes:
        batch = _batch_decoder.decode(batch_frame)
        try:
            result = self._service.run_batch(batch)
        except Exception as exc:  # each request's own errors are handled inside; this is the last resort
            result = self._service.failed_batch(batch, exc)
        return _encoder.encode(result)

    def watch(self) -> None:
        """Never returns while the actor lives: the server keeps one call of it open to learn of its death."""
        self._stopped.wait()

    def memory(self) -> int:
        """Resident memory of this worker's process, in bytes."""
        import psutil

        return int(psutil.Process().memory_info().rss)


def _model_dir(pack: list[Any], max_bytes: int) -> Any:
    import ray

    from dms.archive.shipping import unpacked

    digest, ref = pack
    return unpacked(digest, lambda: bytes(ray.get(ref)), max_bytes)


def _has_gpu() -> bool:
    import ray

    return bool(ray.get_runtime_context().get_accelerator_ids().get("GPU"))
