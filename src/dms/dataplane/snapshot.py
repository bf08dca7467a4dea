"""The registered models, written atomically on every change and read back at the next start."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec

from dms.state_files import write_atomically

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
    """Replace the snapshot with ``entries``; ``InsufficientStorageError`` (nothing changed on disk) if it cannot."""
    write_atomically(path, msgspec.json.format(msgspec.json.encode(Snapshot(models=entries)), indent=2))


def read_snapshot(path: Path) -> list[SnapshotEntry]:
    if not path.is_file():
        return []
    try:
        return msgspec.json.decode(path.read_bytes(), type=Snapshot).models
    except msgspec.DecodeError as exc:
        log.error("ignoring the unreadable snapshot %s: %s", path, exc)
        return []
