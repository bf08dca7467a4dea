"""The registered models, written atomically on every change and read back at the next start."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger("dms.snapshot")


class SnapshotEntry(msgspec.Struct):
    name: str
    version: str
    url: str
    """What the model was registered from (for describe)."""
    archive: str
    """The local archive path it was loaded from (downloads included), registered again at start."""
    workers: int
    is_default: bool
    overrides: dict[str, Any] = {}
    handler: str | None = None


class Snapshot(msgspec.Struct):
    models: list[SnapshotEntry]
    format: int = 1


def write_snapshot(path: Path, entries: list[SnapshotEntry]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_bytes(msgspec.json.format(msgspec.json.encode(Snapshot(models=entries)), indent=2))
    os.replace(temporary, path)


def read_snapshot(path: Path) -> list[SnapshotEntry]:
    if not path.is_file():
        return []
    try:
        return msgspec.json.decode(path.read_bytes(), type=Snapshot).models
    except msgspec.DecodeError as exc:
        log.error("ignoring the unreadable snapshot %s: %s", path, exc)
        return []
