"""A frontend after the first (``python -m dms.replica``), started by frontend 0's ``FrontendGroup``.

It serves the inference API and gRPC on the ports frontend 0 shares with it, and its control API on a
Unix socket (``dms.frontends.control``); it has no management or metrics port of its own. It stops on
SIGTERM (finishing accepted requests), when frontend 0 closes its stdin (frontend 0 is gone, however it
ended), and ignores SIGINT, which a terminal sends to the whole process group: frontend 0 decides.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys

from dms.auth import KeyStore, supplied_keys
from dms.dataplane import DataPlane
from dms.frontends.control import RegistryFollower, build_control_app
from dms.frontends.group import CONTROL_ENV, INDEX_ENV, SETTINGS_ENV
from dms.observability.logs import configure_logging
from dms.observability.metrics import ServerMetrics
from dms.settings import ServerSettings

log = logging.getLogger("dms.frontends")


async def serve_replica(settings: ServerSettings, index: int, control_path: str) -> int:
    """Answer the control API at once; open the shared ports once the first registry is in place, so that
    no connection reaches a frontend without its models (one started again after a crash included)."""
    from dms.listeners import Listeners, PortError, unix_socket_server

    metrics = ServerMetrics()
    dataplane = DataPlane(settings, metrics.observer_for, frontend_index=index)
    metrics.attach(dataplane)
    keys = (
        KeyStore.reading(settings.key_file, supplied_keys(settings))
        if settings.token_auth or settings.inference_token_auth
        else None
    )
    follower = RegistryFollower(dataplane, keys)
    grace = settings.graceful_shutdown_s
    control = unix_socket_server(build_control_app(follower, dataplane, metrics), settings)
    listeners = Listeners(settings, dataplane, metrics, keys, second_frontend=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    await loop.connect_read_pipe(lambda: _ParentWatch(stop), sys.stdin)
    await control.start_unix(control_path)
    waits = [asyncio.create_task(follower.first_registry.wait()), asyncio.create_task(stop.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for waiting in waits:
        waiting.cancel()
    opened = not stop.is_set()
    if opened:
        try:
            await listeners.open()
        except PortError as exc:
            log.error("frontend %d: %s", index, exc)
            opened = False
    follower.ports_open.set()
    if opened:
        dataplane.startup_complete()
        log.info("frontend %d (pid %d) serves %s", index, os.getpid(), listeners.describe())
        await stop.wait()
        await listeners.close(grace)
    await control.stop(0)
    await dataplane.shutdown(grace)
    return 0 if opened else 1


class _ParentWatch(asyncio.Protocol):
    """Frontend 0 holds the other end of this frontend's stdin: when it closes, frontend 0 is gone."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop.set()


def main() -> None:
    settings = ServerSettings(**json.loads(os.environ[SETTINGS_ENV]))
    configure_logging(settings.log_level, settings.log_format, dict(settings.logger_levels), settings.access_log)
    from dms.server import run_on_uvloop

    sys.exit(run_on_uvloop(serve_replica(settings, int(os.environ[INDEX_ENV]), os.environ[CONTROL_ENV])))


if __name__ == "__main__":
    main()
