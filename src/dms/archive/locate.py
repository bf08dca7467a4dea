"""Turn a registration ``url`` into a local archive path, inside what the operator allowed.

A ``url`` is an archive name in the model store, a local path, or an http(s) URL. Remote URLs
must match one of ``allowed_urls`` (regular expressions; none by default), redirects included;
downloads are capped in size and time. Local paths outside the model store are accepted from
the operator's own command line, and from the management API only when ``allowed_urls``
matches their ``file://`` URL.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from dms.errors import ArchiveError, ForbiddenError, InputError, ModelNotFoundError
from dms.settings import ServerSettings

_MAX_REDIRECTS = 5


ARCHIVE_SUFFIXES = (".mar", ".tar.gz")
"""The files a model store holds archives in (a folder is an archive too)."""


def archive_stem(name: str) -> str:
    """An archive's file name without its suffix: the model name a store knows it by."""
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def url_allowed(url: str, allowed: list[str]) -> bool:
    return any(re.fullmatch(pattern, url) for pattern in allowed)


MAX_URL_LENGTH = 4096
"""The longest registration ``url`` (Linux's longest path)."""


def locate_archive(url: str, settings: ServerSettings, trusted_local: bool) -> Path:
    if not url:
        raise InputError("parameter 'url' is required")
    if len(url) > MAX_URL_LENGTH:
        raise InputError(f"parameter 'url' is {len(url)} characters long; at most {MAX_URL_LENGTH} are allowed")
    if not url.isprintable():
        raise InputError("parameter 'url' holds a control character (a NUL byte, a newline, ...)")
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        return download_archive(url, settings)
    if scheme == "file":
        path = Path(unquote(urlparse(url).path))
    elif scheme and len(scheme) > 1:
        raise ForbiddenError(f"URL scheme {scheme!r} is not supported; use a model-store name, a path or http(s)")
    else:
        path = _in_store(url, settings) or Path(url)
    path = path.expanduser().resolve()
    store = settings.model_store.resolve() if settings.model_store else None
    inside_store = store is not None and path.is_relative_to(store)
    if not (trusted_local or inside_store or url_allowed(path.as_uri(), settings.allowed_urls)):
        raise ForbiddenError(
            f"{url!r} is outside the model store; only archives in the model store can be "
            "registered through the API unless allowed_urls matches their file:// URL"
        )
    if not path.exists():
        where = f" (model store: {store})" if store else " (no model store is configured)"
        raise ModelNotFoundError(f"model archive {url!r} was not found{where}")
    return path


def _in_store(name: str, settings: ServerSettings) -> Path | None:
    """A bare file name means an archive in the model store, whether or not it exists."""
    if settings.model_store is None or "/" in name or "\\" in name or name in (".", ".."):
        return None
    candidate = settings.model_store / name
    return candidate if candidate.exists() or not Path(name).exists() else None


def download_archive(url: str, settings: ServerSettings) -> Path:
    if not url_allowed(url, settings.allowed_urls):
        raise ForbiddenError(
            f"remote model URL {url!r} is not allowed: no pattern in allowed_urls matches it "
            "(by default no remote URL is allowed)"
        )
    name = Path(urlparse(url).path).name or "model.mar"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise InputError(f"cannot derive a safe file name from {url!r}")
    downloads = settings.state_dir / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    target_dir = Path(tempfile.mkdtemp(prefix="download-", dir=downloads))
    target = target_dir / name
    import httpx  # only when downloading: importing it costs ~80 ms of every server's start

    try:
        try:
            _fetch(url, target, settings)
        except httpx.HTTPError as exc:
            raise ArchiveError(f"downloading {url!r} failed: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        shutil.rmtree(target_dir, ignore_errors=True)  # nothing half-downloaded stays behind
        raise
    return target


def _fetch(url: str, target: Path, settings: ServerSettings) -> None:
    """Download ``url`` (redirects included) to ``target`` within ``download_timeout_s`` in all."""
    import httpx

    limit_s = settings.download_timeout_s
    deadline = time.monotonic() + limit_s
    current = url
    with httpx.Client(timeout=limit_s, follow_redirects=False) as client:
        for _ in range(_MAX_REDIRECTS + 1):
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise ArchiveError(f"downloading {url!r} took longer than download_timeout_s ({limit_s:g} s)")
            with client.stream("GET", current, timeout=left_s) as response, _cut_off_at(response, deadline) as cut:
                if response.is_redirect:
                    current = str(response.url.join(response.headers.get("location", "")))
                    if not url_allowed(current, settings.allowed_urls):
                        raise ForbiddenError(f"{url!r} redirects to {current!r}, which allowed_urls does not allow")
                    continue
                if response.status_code != 200:
                    raise ArchiveError(f"downloading {url!r} failed with HTTP {response.status_code}")
                try:
                    _save_capped(response, target, settings.max_download_bytes)
                except httpx.HTTPError:
                    if cut.is_set():
                        raise ArchiveError(
                            f"downloading {url!r} took longer than download_timeout_s ({limit_s:g} s)"
                        ) from None
                    raise
                return
    raise ArchiveError(f"{url!r} redirected more than {_MAX_REDIRECTS} times")


@contextlib.contextmanager
def _cut_off_at(response: Any, deadline: float) -> Iterator[threading.Event]:
    """Shut the response's socket at ``deadline`` (monotonic), waking a read blocked on it, so a server that drips
    its bytes cannot stretch a download past the deadline; the event tells whether it was cut off."""
    cut = threading.Event()
    stream = response.extensions.get("network_stream")
    sock: socket.socket | None = stream.get_extra_info("socket") if stream is not None else None

    def cut_off() -> None:
        cut.set()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), cut_off) if sock is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield cut
    finally:
        if timer is not None:
            timer.cancel()


def _save_capped(response: Any, target: Path, cap: int) -> None:
    """Write an ``httpx`` streaming response to ``target``, refusing more than ``cap`` bytes."""
    size = 0
    with target.open("wb") as out:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise ArchiveError(f"download exceeds max_download_bytes ({cap} bytes)")
            out.write(chunk)
