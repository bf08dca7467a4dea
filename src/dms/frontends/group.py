"""Frontend 0's side: start the other frontends, keep them running, send them the registry, ask them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec

from dms.dataplane.snapshot import Snapshot, SnapshotEntry
from dms.errors import InternalError
from dms.settings import ServerSettings

log = logging.getLogger("dms.frontends")

SETTINGS_ENV = "DMS_FRONTEND_SETTINGS"
INDEX_ENV = "DMS_FRONTEND_INDEX"
CONTROL_ENV = "DMS_FRONTEND_CONTROL"
READY_TIMEOUT_S = 60.0
RESTART_BACKOFF_MAX_S = 30.0


class FrontendGroup:
    """Frontends 1..N-1 of this server, each a ``dms.replica`` process with a control socket."""

    def __init__(self, settings: ServerSettings, registry: Callable[[], list[SnapshotEntry]]) -> None:
        self.settings = settings
        self.registry = registry
        self.indexes = range(1, settings.frontends)
        self._folder: Path | None = None
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._clients: dict[int, httpx.AsyncClient] = {}
        self._watchers: list[asyncio.Task[None]] = []
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per control request
        self._lock = asyncio.Lock()
        self._stopping = False

    def control_path(self, index: int) -> Path:
        assert self._folder is not None, "not started"
        return self._folder / f"frontend-{index}.sock"

    # -- lifetime -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every other frontend and give it the registry; raise ``InternalError`` if one cannot start."""
        self._folder = Path(tempfile.mkdtemp(prefix="dms-frontends-"))  # mode 0700: this user's only
        self._clients = {
            index: httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(self.control_path(index))),
                base_url="http://frontend",
                timeout=httpx.Timeout(None, connect=5.0),
            )
            for index in self.indexes
        }
        await asyncio.gather(*(self._launch(index) for index in self.indexes))
        await self.sync()
        self._watchers = [asyncio.create_task(self._watch(index)) for index in self.indexes]

    async def _launch(self, index: int) -> None:
        replica_settings = self.settings.model_copy(update={"snapshot": False, "models": [], "default_model": False})
        env = {
            **os.environ,
            SETTINGS_ENV: json.dumps(replica_settings.model_dump(mode="json")),
            INDEX_ENV: str(index),
            CONTROL_ENV: str(self.control_path(index)),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dms.replica", stdin=asyncio.subprocess.PIPE, env=env
        )
        self._processes[index] = process
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
        while True:
            if process.returncode is not None:
                raise InternalError(f"frontend {index} exited with code {process.returncode} while starting")
            with contextlib.suppress(httpx.TransportError):
                if (await self._clients[index].get("/health")).status_code == 200:
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise InternalError(f"frontend {index} did not answer within {READY_TIMEOUT_S:g} s")
            await asyncio.sleep(0.05)

    async def _watch(self, index: int) -> None:
        """Start a frontend again when it dies, and give it the registry (backing off while it keeps dying)."""
        backoff = 1.0
        while not self._stopping:
            code = await self._processes[index].wait()
            if self._stopping:
                return
            log.error("frontend %d exited with code %s; starting it again in %g s", index, code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(RESTART_BACKOFF_MAX_S, backoff * 2)
            try:
                await self._launch(index)
                await self.sync()
                backoff = 1.0
            except InternalError as exc:
                log.error("frontend %d: %s", index, exc.message)

    async def stop(self, grace_s: float) -> None:
        """SIGTERM each frontend (it finishes accepted requests for up to ``grace_s``), then SIGKILL."""
        self._stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        live = [p for p in self._processes.values() if p.returncode is None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in live)), grace_s + 10.0)
        except TimeoutError:
            for process in live:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await asyncio.gather(*(p.wait() for p in live))
        await asyncio.gather(*(client.aclose() for client in self._clients.values()))
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    # -- the registry ---------------------------------------------------------------------------
    async def sync(self) -> None:
        """Give every running frontend the registry frontend 0 holds now; return once each holds it."""
        async with self._lock:
            body = msgspec.json.encode(Snapshot(models=self.registry()))
            answers = await self._to_each("POST", "/sync", content=body)
        problems = []
        for index, answer in answers:
            if isinstance(answer, BaseException):
                problems.append(f"frontend {index} did not answer: {answer!r}")
            elif answer.status_code != 200:
                problems.append(f"frontend {index}: {answer.json().get('message', answer.text)}")
        if problems:
            raise InternalError("the change was made on frontend 0 but not on every frontend: " + "; ".join(problems))

    def _running(self, index: int) -> bool:
        process = self._processes.get(index)
        return process is not None and process.returncode is None

    # -- what frontend 0 adds to its answers ----------------------------------------------------
    async def expositions(self) -> list[bytes]:
        """Each running frontend's Prometheus exposition (one that does not answer is left out, and logged)."""
        return [answer.content for answer in await self._ask("/metrics", {})]

    async def others(self, name: str, version: str) -> list[dict[str, Any]]:
        """What each other running frontend has of (name, version): ``workers`` (as ``describe`` lists them),
        ``pending``, ``ready`` and ``target`` worker counts, and request ``totals`` (as the console shows)."""
        answers = await self._ask("/workers", {"model": name, "version": version})
        return [answer.json() for answer in answers]

    async def add_workers(self, rows: list[dict[str, Any]]) -> None:
        """Add the other frontends' workers and queued requests to ``describe``'s rows, in place."""
        for row in rows:
            queue = row["jobQueueStatus"]
            capacity = queue["remainingCapacity"] + queue["pendingRequests"]  # each frontend has its own queue
            for found in await self.others(row["modelName"], row["modelVersion"]):
                row["workers"].extend(found["workers"])
                queue["pendingRequests"] += found["pending"]
                queue["remainingCapacity"] += capacity - found["pending"]

    async def _to_each(
        self, method: str, path: str, **options: Any
    ) -> list[tuple[int, httpx.Response | BaseException]]:
        """The same request to every running frontend at once: (index, its answer or what went wrong)."""
        indexes = [index for index in self.indexes if self._running(index)]
        answers = await asyncio.gather(
            *(self._clients[index].request(method, path, **options) for index in indexes), return_exceptions=True
        )
        return list(zip(indexes, answers, strict=True))

    async def _ask(self, path: str, params: dict[str, str]) -> list[httpx.Response]:
        found = []
        for index, answer in await self._to_each("GET", path, params=params):
            if isinstance(answer, BaseException) or answer.status_code != 200:
                log.warning("frontend %d gave no answer to %s: %r", index, path, answer)
            else:
                found.append(answer)
        return found
