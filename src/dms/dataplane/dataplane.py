"""Every operation on models, for any transport: register, scale, predict, describe, stop.

A ``DataPlane`` owns its registry and holds no global state, so several can live in one
process (tests do) and another server could host one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from dms.archive.locate import locate_archive
from dms.archive.reader import extraction_of, open_archive, remove_extraction
from dms.dataplane.autoscaling import Autoscaler
from dms.dataplane.registry import ModelRegistry, ModelVersion
from dms.dataplane.snapshot import SnapshotEntry, located, read_snapshot, relative_location, write_snapshot
from dms.engine.batcher import Batcher
from dms.engine.chunk_streams import ChunkReader
from dms.engine.stats import BatchObserver
from dms.engine.supervision import Placement, PoolSettings, PoolState
from dms.engine.workers import WorkersFactory, local_workers
from dms.errors import DMSError, InputError, InsufficientStorageError, ModelUnavailableError, WorkersFailedError
from dms.messages import LoadModel, RequestItem, RequestLimits, ResponseItem
from dms.naming import validate_model_name
from dms.settings import ServerSettings

log = logging.getLogger("dms.dataplane")

ObserverFactory = Callable[[str, str], BatchObserver]
"""(model name, version) → what the version's batcher reports to (metrics)."""


class DataPlane:
    def __init__(
        self,
        settings: ServerSettings,
        observers: ObserverFactory | None = None,
        frontend_index: int = 0,
        workers: WorkersFactory = local_workers,
        autoscale: bool = False,
    ) -> None:
        self.settings = settings
        self._workers = workers
        """What runs each model version's workers (``dms.engine.workers``): local processes unless told."""
        self._frontend_index = frontend_index
        self._observers = observers
        self.registry = ModelRegistry()
        self._stopping = False
        self._starting = True  # until start-up models are in place: not healthy, no snapshots
        self._autoscaler: asyncio.Task[None] | None = None
        """With ``autoscale``: grows and shrinks workers between min_worker and max_worker (``autoscaling``)."""
        self._autoscale = autoscale

    # -- inference ----------------------------------------------------------------------------
    def submit(
        self, name: str, version: str | None, item: RequestItem, reader: ChunkReader | None = None
    ) -> asyncio.Future[ResponseItem]:
        """Queue one request; the future resolves to its response item. A request with ``item.stream`` has the chunks
        of its answer handed to ``reader`` as they come (``dms.engine.chunk_streams``)."""
        model = self.registry.get(name, version)
        if model.pool.state == PoolState.FAILED:
            raise ModelUnavailableError(
                f"model {name} version {model.version} failed to start: {model.pool.last_error}"
            )
        return model.batcher.submit(item, reader)

    def version_of(self, name: str, version: str | None) -> str:
        """The version a request for (name, version) went to, or what it asked for (for logs and metrics)."""
        try:
            return self.registry.get(name, version).version
        except DMSError:
            return version or ""

    def healthy(self) -> bool:
        """Start-up models are registered and every model version has its workers."""
        return not self._starting and all(model.pool.healthy for model in self.registry)

    # -- management ---------------------------------------------------------------------------
    async def register(
        self,
        url: str,
        *,
        name: str | None = None,
        overrides: dict[str, Any] | None = None,
        handler: str | None = None,
        synchronous: bool = True,
        trusted_local: bool = False,
        loaded_at_startup: bool = False,
        default_workers: int | None = None,
    ) -> ModelVersion:
        """Register an archive; with ``synchronous``, return once its workers are up. ``default_workers``: the
        workers it starts when neither ``overrides`` nor its archive's config say (else the settings')."""
        if self._stopping:
            raise ModelUnavailableError("the server is stopping")
        if name is not None:
            validate_model_name(name)
        path = await asyncio.to_thread(locate_archive, url, self.settings, trusted_local)
        archive = await asyncio.to_thread(
            open_archive, path, self.settings.archive_cache_dir, self.settings.max_archive_bytes
        )
        model_name = name or archive.manifest.model_name
        if archive.manifest.origin == "bare" and self.settings.trust_pickled_models:
            overrides = {"runtime": {**archive.config.runtime, "trusted": True}, **(overrides or {})}
        if default_workers is not None and archive.config.initial_workers is None:
            overrides = {**(overrides or {})}
            if overrides.get("initial_workers") is None:
                overrides["initial_workers"] = default_workers
        config = archive.config.merged(overrides or {}).resolve(self.settings)
        label = f"{model_name}:{archive.manifest.model_version}"
        manifest = dict(archive.manifest.raw)
        if handler:
            manifest["model"] = {**manifest["model"], "handler": handler}
        template = LoadModel(
            model_name=model_name,
            model_version=archive.manifest.model_version,
            model_dir=str(archive.model_dir),
            manifest=manifest,
            config=config.raw,
            batch_size=config.batch_size,
            gpu_id=None,
            worker_id="",
            cpu_threads=1,
            limits=RequestLimits(
                max_json_depth=self.settings.max_json_depth,
                max_tensor_elements=self.settings.max_tensor_elements,
                max_image_pixels=self.settings.max_image_pixels,
                max_multipart_parts=self.settings.max_multipart_parts,
                allow_pickle=self.settings.allow_pickle,
                max_response_bytes=self.settings.max_response_size_bytes or 0,
            ),
            service_envelope=self.settings.service_envelope,
        )
        pool = self._workers(
            label,
            template,
            PoolSettings(
                response_timeout_s=config.response_timeout_s,
                startup_timeout_s=config.startup_timeout_s,
                max_startup_failures=self.settings.max_startup_failures,
                restart_backoff_max_s=self.settings.restart_backoff_max_s,
                memory_limit_bytes=config.worker_memory_limit_mb * 2**20 if config.worker_memory_limit_mb else None,
                frontend_index=self._frontend_index,
                frontends=self.settings.frontends,
                placement=Placement(
                    num_cpus=config.ray.num_cpus,
                    num_gpus=config.ray.num_gpus,
                    memory_bytes=config.ray.memory_mb * 2**20 if config.ray.memory_mb else None,
                    resources=tuple(sorted(config.ray.resources.items())),
                    strategy=config.ray.strategy,
                ),
            ),
        )
        observer = self._observers(model_name, archive.manifest.model_version) if self._observers else None
        batcher: Batcher[Any] = Batcher(
            label,
            pool,
            config.batch_size,
            config.job_queue_size,
            observer,
            max_delay_ms=config.max_batch_delay_ms,
            continuous=config.continuous_batching,
        )
        model = ModelVersion(
            name=model_name,
            version=archive.manifest.model_version,
            url=url,
            archive=archive,
            config=config,
            pool=pool,
            batcher=batcher,
            loaded_at_startup=loaded_at_startup,
            overrides={k: v for k, v in (overrides or {}).items() if v is not None},
            handler_override=handler,
            min_workers=config.initial_workers,
            max_workers=config.max_workers,
        )
        self.registry.add(model)
        batcher.start()
        if self._autoscale and self._autoscaler is None:
            self._autoscaler = asyncio.ensure_future(Autoscaler(self.registry).run())
        await pool.scale(config.initial_workers, wait=synchronous)
        if synchronous and pool.state == PoolState.FAILED and not loaded_at_startup:
            await self._withdraw(model)
            raise ModelUnavailableError(f"model {model_name} failed to start: {pool.last_error}")
        try:
            self._changed()
        except InsufficientStorageError:  # not recorded: not registered either
            await self._withdraw(model)
            raise
        log.info(
            "registered %s from %s with %d workers (state %s)", label, url, config.initial_workers, pool.state.value
        )
        return model

    async def unregister(self, name: str, version: str | None = None) -> ModelVersion:
        model = self.registry.get(name, version)
        default = self.registry.default_version(model.name)
        self.registry.remove(model.name, model.version)
        try:
            self._changed()
        except InsufficientStorageError:  # still recorded: still registered, its workers untouched
            self.registry.add(model)
            self.registry.set_default(model.name, default)
            raise
        await self._stop_model(model, drain=True)
        await self._drop_extraction(model)
        return model

    async def _withdraw(self, model: ModelVersion) -> None:
        """Undo a registration that did not go through: the model version out of the registry, its workers
        stopped, its extraction dropped."""
        await self._stop_model(self.registry.remove(model.name, model.version), drain=False)
        await self._drop_extraction(model)

    async def _drop_extraction(self, model: ModelVersion) -> None:
        """Remove the extracted archive of a model version no longer registered, unless another registered version
        was extracted from the same archive (the cache is keyed by the archive's hash). With several frontends, which
        share the cache and are all told of the change, only the first removes it."""
        cache_dir = self.settings.archive_cache_dir
        entry = extraction_of(model.archive.model_dir, cache_dir)
        if entry is None or self._frontend_index != 0:
            return
        if any(extraction_of(other.archive.model_dir, cache_dir) == entry for other in self.registry):
            return
        await asyncio.to_thread(remove_extraction, entry)

    async def scale(
        self,
        name: str,
        version: str | None,
        min_workers: int,
        max_workers: int | None,
        synchronous: bool,
        gpu_workers: int | None = None,
    ) -> ModelVersion:
        if min_workers < 0 or (max_workers is not None and max_workers < min_workers):
            raise InputError("min_worker must be >= 0 and max_worker >= min_worker")
        ceiling = self.settings.max_workers_per_model
        if min_workers > ceiling:
            raise InputError(f"min_worker {min_workers} is over max_workers_per_model ({ceiling})")
        model = self.registry.get(name, version)
        target_before, bounds_before = model.pool.target, (model.min_workers, model.max_workers)
        model.min_workers, model.max_workers = min_workers, max(min_workers, max_workers or min_workers)
        await model.pool.scale(min_workers, wait=synchronous, gpu_workers=gpu_workers)
        try:
            self._changed()
        except InsufficientStorageError:  # not recorded: back to the workers it had
            model.min_workers, model.max_workers = bounds_before
            await model.pool.scale(target_before, wait=False)
            raise
        if synchronous and min_workers and model.pool.state == PoolState.FAILED:
            raise WorkersFailedError(f"the workers of model {model.name} failed to start: {model.pool.last_error}")
        return model

    def set_default(self, name: str, version: str) -> None:
        before = self.registry.default_version(name)
        self.registry.set_default(name, version)
        try:
            self._changed()
        except InsufficientStorageError:
            self.registry.set_default(name, before)
            raise

    # -- snapshots ----------------------------------------------------------------------------
    def _changed(self) -> None:
        if self.settings.snapshot and not self._starting and not self._stopping:
            write_snapshot(self.settings.snapshot_file, self.snapshot_entries())

    def snapshot_entries(self) -> list[SnapshotEntry]:
        return [
            SnapshotEntry(
                name=model.name,
                version=model.version,
                url=model.url,
                archive=str(model.archive.source),
                workers=model.min_workers,
                is_default=self.registry.default_version(model.name) == model.version,
                overrides=model.overrides,
                handler=model.handler_override,
                relative=relative_location(model.archive.source, self.settings.model_store),
            )
            for model in self.registry
        ]

    async def register_entry(self, entry: SnapshotEntry, loaded_at_startup: bool = False) -> ModelVersion:
        """Register a snapshot entry's model again: its local archive, workers, overrides, handler and URL."""
        model = await self.register(
            located(entry, self.settings.model_store),
            name=entry.name,
            overrides={**entry.overrides, "initial_workers": entry.workers},
            handler=entry.handler,
            trusted_local=True,
            loaded_at_startup=loaded_at_startup,
        )
        model.url = entry.url
        return model

    async def restore_snapshot(self) -> int:
        """Register what the last snapshot held; return how many model versions came back."""
        entries = read_snapshot(self.settings.snapshot_file) if self.settings.snapshot else []
        restored = 0
        for entry in entries:
            try:
                await self.register_entry(entry, loaded_at_startup=True)
            except DMSError as exc:
                log.error("could not restore %s %s from the snapshot: %s", entry.name, entry.version, exc.message)
                continue
            restored += 1
        for entry in entries:
            if entry.is_default:
                with contextlib.suppress(DMSError):
                    self.registry.set_default(entry.name, entry.version)
        return restored

    def startup_complete(self) -> None:
        """Start-up models are registered: report healthy from now on, start writing snapshots, write one now."""
        self._starting = False
        try:
            self._changed()
        except InsufficientStorageError as exc:  # serving matters more than the record of it; the next change retries
            log.error("%s", exc.message)

    async def _stop_model(self, model: ModelVersion, drain: bool) -> None:
        if drain:
            await model.batcher.drain(model.config.response_timeout_s)
        await model.batcher.close()
        await model.pool.stop()

    async def shutdown(self, grace_s: float) -> None:
        """Finish queued work (up to ``grace_s``), then stop every worker."""
        self._stopping = True
        if self._autoscaler is not None:
            self._autoscaler.cancel()
        models = list(self.registry)
        await asyncio.gather(*(m.batcher.drain(grace_s) for m in models))
        await asyncio.gather(*(self._stop_model(m, drain=False) for m in models), return_exceptions=True)

    # -- descriptions -------------------------------------------------------------------------
    def describe(self, name: str, version: str | None) -> list[dict[str, Any]]:
        models = self.registry.versions(name) if version == "all" else [self.registry.get(name, version)]
        default = self.registry.default_version(name)
        return [self._describe_one(model, model.version == default) for model in models]

    def _describe_one(self, model: ModelVersion, is_default: bool) -> dict[str, Any]:
        pool, config = model.pool, model.config
        return {
            "modelName": model.name,
            "modelVersion": model.version,
            "modelUrl": model.url,
            "runtime": model.archive.manifest.raw.get("runtime", "python"),
            "handler": model.archive.manifest.handler,
            "archiveFormat": model.archive.manifest.origin,
            "isDefault": is_default,
            "status": pool.state.value,
            "lastError": pool.last_error,
            "minWorkers": model.min_workers,
            "maxWorkers": max(pool.target, model.max_workers),
            "currentWorkers": pool.target,
            "batchSize": config.batch_size,
            "maxBatchDelay": config.max_batch_delay_ms,
            "responseTimeout": config.response_timeout_s,
            "loadedAtStartup": model.loaded_at_startup,
            "restarts": pool.restarts,
            "workers": pool.describe_workers(),
            "jobQueueStatus": {
                "remainingCapacity": config.job_queue_size - model.batcher.pending,
                "pendingRequests": model.batcher.pending,
            },
        }

    def list_models(self, limit: int, token: int) -> tuple[list[dict[str, str]], int | None]:
        names = self.registry.names()
        page = names[token : token + limit]
        rows = [{"modelName": name, "modelUrl": self.registry.get(name).url} for name in page]
        next_token = token + limit if token + limit < len(names) else None
        return rows, next_token


__all__ = ["DMSError", "DataPlane"]
