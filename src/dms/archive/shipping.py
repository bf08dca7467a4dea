"""A model's files carried to machines that do not share the server's filesystem, extracted once per machine.

The server packs a model version's folder as it extracted it (an uncompressed tar: the files inside, ONNX
weights and the like, compress poorly and are read once) and names the pack by its SHA-256. A machine that
receives it keeps one extraction per name under its cache folder, made under a file lock, so the workers of
one model that land on one machine (and every model of the same archive) share it and the bytes travel to
each machine at most once. The same bomb and path checks as for archives apply when it is unpacked.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dms.archive.reader import extract_tar_members
from dms.errors import ArchiveError

NODE_CACHE_ENV = "DMS_NODE_MODEL_CACHE"
"""Where a machine keeps the model folders it received (default: ``<tmp>/dms-node-models``)."""
_DONE = ".dms-shipped"


@dataclass(frozen=True)
class ModelPack:
    digest: str
    """SHA-256 of ``data``: the pack's name on every machine."""
    data: bytes
    """The model folder as an uncompressed tar."""


def pack_model_dir(model_dir: Path, only: list[str] | None = None) -> ModelPack:
    """Pack ``model_dir`` (or, with ``only``, just those files of it: a bare model file beside others)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        names = only if only is not None else sorted(p.name for p in model_dir.iterdir())
        for name in names:
            if name == ".dms-extracted":
                continue
            tar.add(model_dir / name, arcname=name, filter=_plain)
    data = buffer.getvalue()
    return ModelPack(hashlib.sha256(data).hexdigest(), data)


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Files and folders only, with no owner or time (the same files make the same pack; links never travel)."""
    if not (info.isfile() or info.isdir()):
        return None
    info.uid = info.gid = info.mtime = 0
    info.uname = info.gname = ""
    return info


def node_cache_dir() -> Path:
    return Path(os.environ.get(NODE_CACHE_ENV) or Path(tempfile.gettempdir()) / "dms-node-models")


def unpacked(digest: str, fetch: Callable[[], bytes], max_bytes: int, cache_dir: Path | None = None) -> Path:
    """The folder of pack ``digest`` on this machine: extracted from ``fetch()`` by the first worker here to need
    it (the others wait on its lock, then reuse it). ``fetch`` is called only when it is not here yet."""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ArchiveError(f"a model pack's name must be a SHA-256 in hex, not {digest!r}")
    root = cache_dir or node_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / digest
    if (target / _DONE).is_file():
        return target
    with (root / f"{digest}.lock").open("wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / _DONE).is_file():
            return target
        data = fetch()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArchiveError(f"the model pack {digest[:12]} arrived altered (its SHA-256 differs)")
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                extract_tar_members(tar, staging, max_bytes, lambda: len(data))
            (staging / _DONE).touch()
            shutil.rmtree(target, ignore_errors=True)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target
