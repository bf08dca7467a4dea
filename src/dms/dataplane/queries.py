"""Read-only views of the data plane that the inference protocols ask for, transport-neutral."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dms import __version__
from dms.archive.locate import ARCHIVE_SUFFIXES, archive_stem
from dms.dataplane.dataplane import DataPlane
from dms.dataplane.registry import ModelVersion
from dms.engine.supervision import PoolState
from dms.errors import ModelNotFoundError

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "kserve_v1"]
"""The Open Inference Protocol extensions DMS serves, as server metadata names them."""


def server_metadata() -> dict[str, Any]:
    """The Open Inference Protocol's server metadata, the same over REST and gRPC."""
    return {"name": "dms", "version": __version__, "extensions": EXTENSIONS}


def _versions(dataplane: DataPlane, name: str | None, version: str | None) -> list[ModelVersion]:
    if name is None:
        return list(dataplane.registry)
    if version is None:
        return dataplane.registry.versions(name)
    return [dataplane.registry.get(name, version)]


def model_metadata(dataplane: DataPlane, name: str, version: str | None) -> dict[str, Any]:
    model = dataplane.registry.get(name, version)
    signature = model.pool.signature

    def tensors(kind: str) -> list[dict[str, Any]]:
        if signature is None:
            return []
        return [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in getattr(signature, kind)]

    return {
        "name": model.name,
        "versions": [v.version for v in dataplane.registry.versions(name)],
        "platform": signature.platform if signature else "python",
        "inputs": tensors("inputs"),
        "outputs": tensors("outputs"),
    }


def model_ready(dataplane: DataPlane, name: str, version: str | None) -> bool:
    model = dataplane.registry.get(name, version)
    return model.pool.state != PoolState.FAILED and model.pool.ready_count() > 0


def statistics(dataplane: DataPlane, name: str | None, version: str | None) -> list[dict[str, Any]]:
    return [
        {"name": model.name, "version": model.version, **model.batcher.stats.as_dict()}
        for model in _versions(dataplane, name, version)
    ]


def store_archives(dataplane: DataPlane) -> dict[str, Path]:
    """Archives in the model store by model name (the file or folder name without its suffix)."""
    store = dataplane.settings.model_store
    if store is None or not store.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(store.iterdir()):
        if path.name.startswith("."):
            continue
        if path.name.endswith(ARCHIVE_SUFFIXES) or path.is_dir():
            found.setdefault(archive_stem(path.name), path)
    return found


def repository_index(dataplane: DataPlane, ready_only: bool) -> list[dict[str, str]]:
    entries: list[dict[str, str]] = []
    for model in dataplane.registry:
        ready = model_ready(dataplane, model.name, model.version)
        entry = {"name": model.name, "version": model.version, "state": "READY" if ready else "UNAVAILABLE"}
        if not ready:
            entry["reason"] = model.pool.last_error or "workers are starting"
        entries.append(entry)
    loaded = set(dataplane.registry.names())
    for name in store_archives(dataplane):
        if name not in loaded:
            entries.append({"name": name, "version": "", "state": "UNAVAILABLE", "reason": "unloaded"})
    if ready_only:
        entries = [e for e in entries if e["state"] == "READY"]
    return sorted(entries, key=lambda e: (e["name"], e["version"]))


async def repository_load(dataplane: DataPlane, name: str) -> None:
    """Register the store's archive for ``name`` (already registered: nothing to do)."""
    if name in dataplane.registry.names():
        return
    archive = store_archives(dataplane).get(name)
    if archive is None:
        raise ModelNotFoundError(f"no archive for model {name!r} in the model store")
    await dataplane.register(archive.name, name=name)


async def repository_unload(dataplane: DataPlane, name: str) -> None:
    for model in dataplane.registry.versions(name):
        await dataplane.unregister(model.name, model.version)
