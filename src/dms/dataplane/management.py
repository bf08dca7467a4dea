"""TorchServe's management calls over the data plane, as both transports answer them: REST on the management port
(``dms.rest.management``) and gRPC's ``ManagementAPIsService`` (``dms.grpc.torchserve_management``).

Each call's rules (what a registration may name, TorchServe's defaults) and the text of its answer are written here
once; a transport only reads its parameters into these and writes the answer its own way.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from dms.dataplane.dataplane import DataPlane
from dms.errors import DMSError, InputError

log = logging.getLogger("dms.frontends")

HANDLER_RUNTIMES = ("python", "python3")
"""The ``runtime`` values a registration may name (TorchServe's for a Python handler)."""
LIST_PAGE_DEFAULT = 100


@dataclass(frozen=True, slots=True)
class Registration:
    """``POST /models`` or ``RegisterModel``: an archive to serve; None is "not given" (the archive's config or
    the settings decide)."""

    url: str
    model_name: str | None = None
    handler: str | None = None
    runtime: str | None = None
    initial_workers: int | None = None
    batch_size: int | None = None
    max_batch_delay_ms: float | None = None
    response_timeout_s: float | None = None
    startup_timeout_s: float | None = None
    synchronous: bool = True


@dataclass(frozen=True, slots=True)
class Registered:
    message: str
    workers_started: bool
    """The workers were waited for (a synchronous registration): REST answers 200, else 202."""


async def register(dataplane: DataPlane, call: Registration) -> Registered:
    if not call.url:
        raise InputError("parameter 'url' is required: an archive name in the model store, a path, or an allowed URL")
    if call.runtime and call.runtime not in HANDLER_RUNTIMES:
        raise InputError(f"runtime {call.runtime!r} is not one DMS runs handlers with ({', '.join(HANDLER_RUNTIMES)})")
    if call.startup_timeout_s == 0:
        raise InputError("startup_timeout must be over 0 seconds: no worker can start in 0 s")
    overrides: dict[str, Any] = {
        "initial_workers": call.initial_workers,
        "batch_size": call.batch_size,
        "max_batch_delay_ms": call.max_batch_delay_ms,
        "response_timeout_s": call.response_timeout_s,
        "startup_timeout_s": call.startup_timeout_s,
    }
    model = await dataplane.register(
        call.url,
        name=call.model_name or None,
        overrides=overrides,
        handler=call.handler or None,
        synchronous=call.synchronous,
        default_workers=dataplane.settings.registered_model_workers,
    )
    workers = model.config.initial_workers
    message = f'Model "{model.name}" Version: {model.version} registered with {workers} initial workers'
    if not call.synchronous:
        message += "; workers are starting"
    return Registered(message, workers_started=call.synchronous)


@dataclass(frozen=True, slots=True)
class Scaling:
    """``PUT /models/{m}[/{v}]`` or ``ScaleWorker``, with TorchServe's defaults: ``min_worker`` 1, ``max_worker``
    ``min_worker``, not synchronous."""

    model_name: str
    model_version: str | None = None
    min_workers: int = 1
    max_workers: int | None = None
    synchronous: bool = False
    gpu_workers: int | None = None
    """``number_gpu``: at most this many of the workers on GPUs, the rest on the CPU (None: all, when any)."""


async def scale(dataplane: DataPlane, call: Scaling) -> Registered:
    model = await dataplane.scale(
        call.model_name, call.model_version, call.min_workers, call.max_workers, call.synchronous, call.gpu_workers
    )
    if call.synchronous:
        return Registered(f"Workers scaled to {call.min_workers} for model: {model.name}", workers_started=True)
    return Registered("Processing worker updates...", workers_started=False)


async def unregister(dataplane: DataPlane, name: str, version: str | None) -> str:
    model = await dataplane.unregister(name, version)
    return f'Model "{model.name}" version {model.version} unregistered'


def set_default(dataplane: DataPlane, name: str, version: str) -> str:
    dataplane.set_default(name, version)
    return f'Default version successfully updated for model "{name}" to "{version}"'


def model_list(dataplane: DataPlane, limit: int | None, token: int | None) -> dict[str, Any]:
    """A page of ``GET /models``: ``limit`` models (100 when not given) from ``token`` on, and the next page's
    token when there is one."""
    rows, next_token = dataplane.list_models(limit or LIST_PAGE_DEFAULT, token or 0)
    body: dict[str, Any] = {"models": rows}
    if next_token is not None:
        body["nextPageToken"] = str(next_token)
    return body


class Followers(Protocol):
    """The other frontends, which make every change too (``dms.frontends.group.FrontendGroup``)."""

    async def sync(self) -> None: ...

    async def add_workers(self, rows: list[dict[str, Any]]) -> None: ...


_BACKGROUND: set[asyncio.Task[None]] = set()


def follow_later(followers: Followers) -> None:
    """A change answered before its workers started (202): the other frontends make it in the background, and a
    frontend that cannot is logged."""

    async def logged() -> None:
        try:
            await followers.sync()
        except DMSError as exc:
            log.error("%s", exc.message)

    task = asyncio.ensure_future(logged())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
