"""Run the three HTTP servers and the data plane in one event loop, and stop them cleanly.

Start-up: bind every port, load the start-up models, start the other frontends (``frontends > 1``:
``dms.frontends``), write the pid file and print one ready line. SIGTERM/SIGINT: stop accepting, let
accepted requests finish (up to the grace period), then stop the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from importlib import resources
from pathlib import Path
from typing import Any

from dms.archive.locate import ARCHIVE_SUFFIXES, archive_stem
from dms.auth import KEY_KINDS, KeyKind, KeyStore, supplied_keys
from dms.dataplane import DataPlane
from dms.dataplane.executors import workers_for
from dms.engine import interpreters
from dms.errors import DMSError, ModelAlreadyExistsError
from dms.listeners import Listeners, PortError
from dms.observability.metrics import ServerMetrics
from dms.settings import ServerSettings, parse_address

log = logging.getLogger("dms.server")
READY_LINE = "DMS is ready"


def default_model_archive() -> Path:
    return Path(str(resources.files("dms") / "default_model" / "digits.mar"))


def startup_models(settings: ServerSettings, default_allowed: bool = True) -> list[tuple[str | None, str]]:
    """``(name or None, url)`` pairs from ``--models``, TorchServe's flag syntax."""
    items = settings.model_items
    if settings.wrapper is not None or settings.model_dir is not None:
        from dms.archive.wrapper import WRAPPER_MODEL_NAME, wrapper_archive

        return [(WRAPPER_MODEL_NAME, str(wrapper_archive(settings)))]
    if not items:
        use_default = settings.default_model and default_allowed
        return [("digits", str(default_model_archive()))] if use_default else []
    pairs: list[tuple[str | None, str]] = []
    for item in items:
        if item == "all":
            if settings.model_store is None:
                raise DMSError("--models all needs --model-store")
            pairs.extend(
                (None, p.name)
                for p in sorted(settings.model_store.iterdir())
                if not p.name.startswith(".") and (p.name.endswith(ARCHIVE_SUFFIXES) or p.is_dir())
            )
        elif "=" in item:
            name, url = item.split("=", 1)
            pairs.append((name, url))
        else:
            pairs.append((None, item))
    return pairs


def _warn_about_exposure(settings: ServerSettings) -> None:
    for what, address in (("management API", settings.management_address), ("metrics", settings.metrics_address)):
        host, _ = parse_address(address)
        if not _is_loopback(host):
            log.warning("the %s listens on %s, beyond this machine: put it behind TLS and a firewall", what, address)
    if not settings.token_auth:
        log.warning("token auth is disabled: anyone who reaches the management API can register and run code")
    if settings.allow_pickle:
        log.warning("--allow-pickle: pickled request bodies will be unpickled; every client must be trusted")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve_forever(settings: ServerSettings) -> int:
    try:
        given_keys = supplied_keys(settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    _warn_about_exposure(settings)
    metrics = ServerMetrics()
    try:
        workers, leave_cluster = workers_for(settings)
    except DMSError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        return 1
    try:
        return await _serve(
            settings,
            given_keys,
            metrics,
            DataPlane(settings, metrics.observer_for, workers=workers, autoscale=settings.ray_address is not None),
        )
    finally:
        leave_cluster()


async def _serve(
    settings: ServerSettings, given_keys: dict[KeyKind, str], metrics: ServerMetrics, dataplane: DataPlane
) -> int:
    metrics.attach(dataplane)
    keys = None
    if settings.token_auth or settings.inference_token_auth:
        keys = KeyStore(settings.key_file, given_keys)
        if len(keys.supplied) < len(KEY_KINDS):
            log.info("API keys are in %s (readable by this user only)", settings.key_file)
    frontends = None
    if settings.frontends > 1:
        from dms.frontends.group import FrontendGroup  # httpx: imported only when it is needed

        frontends = FrontendGroup(settings, dataplane.snapshot_entries)
    listeners = Listeners(settings, dataplane, metrics, keys, frontends)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await listeners.open()
    except PortError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)  # one line, where the operator looks
        await interpreters.discard_prestarted()
        await dataplane.shutdown(0)
        return 1
    try:
        await _load_startup_models(dataplane, settings)
        if frontends is not None:
            await frontends.start()
    except DMSError as exc:
        log.error("start-up failed: %s", exc.message)
        await listeners.close(0)
        if frontends is not None:
            await frontends.stop(0)
        await dataplane.shutdown(0)
        return 1
    _write_pid_file(settings.pid_file)
    print(f"{READY_LINE}: {listeners.describe()}", flush=True)
    grace = settings.graceful_shutdown_s
    idle_watch = None
    if settings.kill_after_s is not None:
        idle_watch = asyncio.ensure_future(_stop_when_idle(metrics, settings.kill_after_s, stop))
    try:
        await stop.wait()
        if idle_watch is not None:
            idle_watch.cancel()
        log.info("stopping: no new connections; finishing accepted requests (up to %g s)", grace)
        await asyncio.gather(listeners.close(grace), *([frontends.stop(grace)] if frontends is not None else []))
        await dataplane.shutdown(grace)
    finally:
        with contextlib.suppress(FileNotFoundError):
            if settings.pid_file.read_text().strip() == str(os.getpid()):
                settings.pid_file.unlink()
    log.info("stopped")
    return 0


async def _stop_when_idle(metrics: ServerMetrics, idle_s: float, stop: asyncio.Event) -> None:
    """--killafter: stop the server once no request has come for ``idle_s`` seconds."""
    while not stop.is_set():
        idle = metrics.idle_seconds()
        if idle >= idle_s:
            log.info("no request for %g s (--killafter): stopping", idle_s)
            stop.set()
            return
        await asyncio.sleep(min(1.0, idle_s - idle))


async def _load_startup_models(dataplane: DataPlane, settings: ServerSettings) -> None:
    """The last snapshot's models, then ``--models`` (the default model only when there is nothing else).

    Then the worker interpreters ``dms serve`` started ahead of need and no worker took are ended.
    """
    try:
        await _load_models(dataplane, settings)
    finally:
        await interpreters.discard_prestarted()


async def _load_models(dataplane: DataPlane, settings: ServerSettings) -> None:
    named = bool(settings.model_items) or settings.wrapper is not None or settings.model_dir is not None
    restored = 0
    if not named:  # models named on the command line are what this run serves; the snapshot is for plain restarts
        restored = await dataplane.restore_snapshot()
    elif settings.snapshot and settings.snapshot_file.is_file():
        log.info("not restoring %s: models were named on the command line", settings.snapshot_file)
    if restored:
        log.info(
            "restored %d model versions from %s (the last run's; name models, or --no-snapshot, to start without)",
            restored,
            settings.snapshot_file,
        )

    async def load(name: str | None, url: str) -> None:
        overrides = settings.model_settings.get(name or archive_stem(url.rstrip("/").rpartition("/")[2]))
        try:
            await dataplane.register(url, name=name, overrides=overrides, trusted_local=True, loaded_at_startup=True)
        except ModelAlreadyExistsError:
            log.info("model %s is already registered (from the snapshot)", name or url)
        except DMSError as exc:
            raise DMSError(f"model {name or url}: {exc.message}") from exc

    wanted = startup_models(settings, default_allowed=restored == 0)
    await asyncio.gather(*(load(name, url) for name, url in wanted))
    for name, version in settings.default_versions.items():
        try:
            dataplane.registry.set_default(name, version)
        except DMSError as exc:
            raise DMSError(f"default_versions: model {name}: {exc.message}") from exc
    dataplane.startup_complete()


def _write_pid_file(pid_file: Path) -> None:
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")


def run(settings: ServerSettings) -> int:
    return run_on_uvloop(serve_forever(settings))


def run_on_uvloop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop where it is installed (asyncio's own loop elsewhere)."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - Windows
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(ServerSettings()))
