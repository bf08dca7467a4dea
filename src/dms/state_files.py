"""The server's state files (the key file, the snapshot) written whole or not at all.

Each write goes to a temporary file beside its target, is flushed to disk, and replaces the target in
one rename. If any step fails (a full disk, a quota, a read-only folder), the temporary file is removed,
the target keeps what it held, and the caller gets ``InsufficientStorageError`` (507) naming the file
and the cause, so it can undo the change the file was to record.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from dms.errors import InsufficientStorageError


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (created with ``mode``), or raise leaving ``path`` and its folder as they were."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.chmod(temporary, mode)  # whatever the umask made of it
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise InsufficientStorageError(
            f"could not write {path}: {exc.strerror or exc} (is its disk full?); the change was not made"
        ) from exc
