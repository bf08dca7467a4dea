"""Small helpers shared by the HTTP apps: JSON responses, bounded bodies, typed query values."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from dms.errors import InputError, PayloadTooLargeError
from dms.messages import ResponseItem


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def read_body(receive: Receive, declared: str | None, max_bytes: int) -> bytes | None:
    """The whole body from ASGI ``receive``, refusing (413) anything over ``max_bytes`` before reading
    (``declared``: the Content-Length header) or while reading it; None if the client disconnects first."""
    refuse_declared_size(declared, max_bytes)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # http.disconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        refuse_read_size(size, max_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def refuse_declared_size(declared: str | None, max_bytes: int) -> None:
    """413 for a body whose Content-Length (``declared``) is over ``max_bytes``, before any of it is read."""
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(f"request body of {declared} bytes is over max_request_size_bytes ({max_bytes})")


def refuse_read_size(size: int, max_bytes: int) -> None:
    """413 once the body read so far (``size`` bytes) is over ``max_bytes`` (chunked bodies declare no size)."""
    if size > max_bytes:
        raise PayloadTooLargeError(f"request body is over max_request_size_bytes ({max_bytes})")


def query_int(request: Request, key: str, default: int | None = None, minimum: int = 0) -> int | None:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"query parameter {key} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise InputError(f"query parameter {key} must be >= {minimum}, got {value}")
    return value


def query_float(request: Request, key: str, minimum: float = 0) -> float | None:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"query parameter {key} must be a number, got {raw!r}") from None
    if not value >= minimum:  # (nan too)
        raise InputError(f"query parameter {key} must be >= {minimum:g}, got {raw!r}")
    return value


def query_bool(request: Request, key: str, default: bool) -> bool:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise InputError(f"query parameter {key} must be true or false, got {raw!r}")


WATCH_FOR_DISCONNECT_AFTER_S = 0.02
"""How long an answer may take before the client's connection is watched for it going away.

Watching costs a task per request (an ASGI ``receive`` waiting on the socket); most answers come
sooner than this, and a request whose client left within it at worst runs once for nobody.
"""


async def until_answered_or_gone(
    receive: Callable[[], Awaitable[Any]], future: asyncio.Future[ResponseItem]
) -> ResponseItem | None:
    """The answer; or None when the client disconnects first (then no worker runs the request).

    Once the body is read, the next ASGI ``receive`` only returns when the client goes away.
    """
    watchers: list[asyncio.Future[Any]] = []

    def watch() -> None:
        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(lambda _: future.cancel())
        watchers.append(watcher)

    timer = asyncio.get_running_loop().call_later(WATCH_FOR_DISCONNECT_AFTER_S, watch)
    try:
        return await future
    except asyncio.CancelledError:
        if watchers and watchers[0].done() and not watchers[0].cancelled():
            return None
        raise
    finally:
        timer.cancel()
        for watcher in watchers:
            watcher.cancel()
