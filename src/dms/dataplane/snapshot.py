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
    relative: str | None = None
    """``archive`` as ``store:<path in the model store>`` or ``package:<path in the dms package>``, so that a
    restore finds it again when the store or the installation has moved since (``located``)."""


PACKAGE = Path(__file__).resolve().parent.parent
"""The installed ``dms`` package (the bundled default model lives in it)."""


def relative_location(archive: Path, model_store: Path | None) -> str | None:
    """Where ``archive`` is, relative to the model store or the dms package, if it is in either."""
    resolved = archive.resolve()
    for prefix, root in (("store", model_store), ("package", PACKAGE)):
        if root is not None and resolved.is_relative_to(root.resolve()):
            return f"{prefix}:{resolved.relative_to(root.resolve()).as_posix()}"
    return None


def located(entry: SnapshotEntry, model_store: Path | None) -> str:
    """The archive to register ``entry`` from: its recorded path while it exists, else the same file found
    relative to today's model store or dms package (an installation or a store that moved)."""
    if Path(entry.archive).exists() or not entry.relative:
        return entry.archive
    prefix, _, rest = entry.relative.partition(":")
    root = model_store if prefix == "store" else PACKAGE if prefix == "package" else None
    if root is not None and (root / rest).exists():
        return str(root / rest)
    return entry.archive


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
