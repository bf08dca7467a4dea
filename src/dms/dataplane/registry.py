"""Model names → versions → ``ModelVersion``, with one default version per name."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dms.archive.reader import ExtractedArchive
from dms.engine.batcher import Batcher
from dms.engine.workers import ModelWorkers
from dms.errors import ModelAlreadyExistsError, ModelNotFoundError
from dms.model_config import ResolvedModelConfig
from dms.naming import check_requested_name, loggable


@dataclass
class ModelVersion:
    name: str
    version: str
    url: str
    archive: ExtractedArchive
    config: ResolvedModelConfig
    pool: ModelWorkers
    """Its workers: local processes (``WorkerPool``) or whatever the data plane's ``WorkersFactory`` made."""
    batcher: Batcher[Any]
    loaded_at_startup: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    """Settings given at registration, kept so a snapshot can register the model the same way."""
    handler_override: str | None = None
    min_workers: int = 0
    """The workers asked for at registration or by the last scale (``min_worker``): the snapshot keeps it."""
    max_workers: int = 0
    """``max_worker``: with ``DataPlane(autoscale=True)`` the workers may grow up to it on load."""


class ModelRegistry:
    def __init__(self) -> None:
        self._models: dict[str, dict[str, ModelVersion]] = {}
        self._defaults: dict[str, str] = {}

    def add(self, model: ModelVersion) -> None:
        versions = self._models.setdefault(model.name, {})
        if model.version in versions:
            raise ModelAlreadyExistsError(f"model {model.name} version {model.version} is already registered")
        versions[model.version] = model
        self._defaults.setdefault(model.name, model.version)

    def remove(self, name: str, version: str) -> ModelVersion:
        model = self.get(name, version)
        versions = self._models[name]
        del versions[version]
        if not versions:
            del self._models[name]
            del self._defaults[name]
        elif self._defaults[name] == version:
            self._defaults[name] = next(iter(versions))
        return model

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        versions = self._models.get(name)
        if versions is None:
            check_requested_name(name)
            raise ModelNotFoundError(f"model {loggable(name)} is not registered")
        key = version or self._defaults[name]
        model = versions.get(key)
        if model is None:
            check_requested_name(key, "model version")
            raise ModelNotFoundError(f"model {name} has no version {loggable(key)}")
        return model

    def versions(self, name: str) -> list[ModelVersion]:
        if name not in self._models:
            check_requested_name(name)
            raise ModelNotFoundError(f"model {loggable(name)} is not registered")
        return list(self._models[name].values())

    def default_version(self, name: str) -> str:
        self.versions(name)
        return self._defaults[name]

    def set_default(self, name: str, version: str) -> None:
        self.get(name, version)
        self._defaults[name] = version

    def names(self) -> list[str]:
        return sorted(self._models)

    def has(self, name: str, version: str) -> bool:
        """``version`` of ``name`` is registered."""
        return version in self._models.get(name, ())

    def __iter__(self) -> Iterator[ModelVersion]:
        for versions in self._models.values():
            yield from versions.values()
