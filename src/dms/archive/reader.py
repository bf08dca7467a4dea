"""Open a model archive (zip ``.mar``, tgz or folder) and extract it safely, once, into a cache.

Extraction refuses absolute paths, ``..``, links, device files and duplicate names, and stops at
a total size cap and a compression-ratio cap checked as it writes, for every member of every format
(bombs). A finished extraction lives in
``<cache>/<sha256 of the archive>`` and is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from dms.archive.bare import bare_manifest, is_bare_model_file
from dms.archive.manifest import MANIFEST_PATH, Manifest, parse_manifest
from dms.errors import ArchiveError
from dms.legacy.archive import LEGACY_MANIFEST, is_legacy_archive, translate_manifest
from dms.model_config import ModelConfig, parse_model_config

_COMPLETE_MARKER = ".dms-extracted"
_MAX_RATIO = 100
_RATIO_FLOOR_BYTES = 4 * 1024 * 1024
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ExtractedArchive:
    source: Path
    model_dir: Path
    manifest: Manifest
    config: ModelConfig


def open_archive(path: Path, cache_dir: Path, max_bytes: int) -> ExtractedArchive:
    if is_bare_model_file(path):  # model.onnx, model.joblib...: served as they are (dms.archive.bare)
        return _bare(path, path.parent, bare_manifest(path.parent, path.name))
    if path.is_dir():
        model_dir = path
    elif path.is_file():
        model_dir = _extract_cached(path, cache_dir, max_bytes)
    else:
        raise ArchiveError(f"archive {path} does not exist")
    model_dir = _model_root(model_dir)
    if path.is_dir() and not (model_dir / MANIFEST_PATH).is_file() and not is_legacy_archive(model_dir):
        bare = bare_manifest(model_dir)
        if bare is not None:
            return _bare(path, model_dir, bare)
    manifest = _read_manifest(model_dir)
    config = ModelConfig()
    if manifest.config_file:
        config_path = _inside(model_dir, manifest.config_file)
        if not config_path.is_file():
            raise ArchiveError(f"the manifest's configFile {manifest.config_file!r} is not in the archive")
        config = parse_model_config(config_path.read_bytes(), manifest.config_file)
    return ExtractedArchive(source=path, model_dir=model_dir, manifest=manifest, config=config)


def _bare(source: Path, model_dir: Path, raw: dict[str, Any] | None) -> ExtractedArchive:
    config = ModelConfig(single_input_any_name=True)
    return ExtractedArchive(source, model_dir, parse_manifest(raw, origin="bare"), config)


def _model_root(extracted: Path) -> Path:
    """The folder holding MAR-INF: the top, or the single folder TorchServe's tgz wraps it in."""
    if (extracted / "MAR-INF").is_dir():
        return extracted
    entries = [p for p in extracted.iterdir() if p.name != _COMPLETE_MARKER]
    if len(entries) == 1 and (entries[0] / "MAR-INF").is_dir():
        return entries[0]
    return extracted


def _read_manifest(model_dir: Path) -> Manifest:
    legacy = is_legacy_archive(model_dir)
    manifest_file = model_dir / (LEGACY_MANIFEST if legacy else MANIFEST_PATH)
    if not manifest_file.is_file():
        raise ArchiveError(f"not a model archive: {MANIFEST_PATH} is missing")
    try:
        raw = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{manifest_file.name} is not valid JSON: {exc}") from exc
    if legacy:
        return parse_manifest(translate_manifest(raw, model_dir), origin="legacy")
    return parse_manifest(raw)


def _inside(root: Path, relative: str) -> Path:
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root.resolve()):
        raise ArchiveError(f"path {relative!r} points outside the archive")
    return candidate


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _extract_cached(path: Path, cache_dir: Path, max_bytes: int) -> Path:
    target = cache_dir / file_sha256(path)[:40]
    if (target / _COMPLETE_MARKER).is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache_dir))
    try:
        try:
            if zipfile.is_zipfile(path):
                _extract_zip(path, staging, max_bytes)
            elif tarfile.is_tarfile(path):
                _extract_tar(path, staging, max_bytes)
            else:
                raise ArchiveError(f"{path.name} is neither a zip (.mar) nor a tar archive")
        except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
            # A file and a folder of one name, a corrupt member, a truncated stream: the archive is bad.
            raise ArchiveError(f"{path.name} cannot be extracted: {exc}") from exc
        (staging / _COMPLETE_MARKER).touch()
        if target.exists():
            shutil.rmtree(target)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def remove_extraction(entry: Path) -> None:
    """Delete an extraction (a cache folder, as ``extraction_of`` names it); the caller makes sure nothing
    registered uses it any more."""
    shutil.rmtree(entry, ignore_errors=True)


def extraction_of(model_dir: Path, cache_dir: Path) -> Path | None:
    """The cache folder holding ``model_dir``, or None when it is not in the cache."""
    try:
        relative = model_dir.resolve().relative_to(cache_dir.resolve())
    except ValueError:
        return None
    return cache_dir / relative.parts[0] if relative.parts else None


def safe_member_path(name: str) -> PurePosixPath:
    """Validate an archive member name; return it as a relative path."""
    if not name or "\x00" in name:
        raise ArchiveError("archive member with an empty or NUL-containing name")
    normalized = name.replace("\\", "/")
    member = PurePosixPath(normalized)
    if member.is_absolute() or normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise ArchiveError(f"archive member {name!r} has an absolute path")
    if ".." in member.parts:
        raise ArchiveError(f"archive member {name!r} climbs out of the archive ('..')")
    return member


class _MemberCheck:
    """Validates each member name once per archive; returns where it lands."""

    def __init__(self, destination: Path) -> None:
        self.destination = destination
        self.seen: set[str] = set()

    def target(self, name: str, is_dir: bool) -> Path | None:
        """Where the member lands; None for a folder entry naming the archive's root."""
        member = safe_member_path(name)
        if not member.parts or member == PurePosixPath("."):
            if is_dir:
                return None
            raise ArchiveError(f"archive member {name!r} names no file")
        key = str(member)
        if key in self.seen:
            raise ArchiveError(f"archive member {name!r} appears twice")
        self.seen.add(key)
        return self.destination / member


class _Budget:
    """What an extraction may still write: ``max_archive_bytes`` in all, and never more than ``_MAX_RATIO`` times
    the compressed bytes read so far (past ``_RATIO_FLOOR_BYTES``), checked as each chunk is written, so a bomb
    stops a few megabytes in whatever its format and however its members are cut."""

    def __init__(self, max_bytes: int, compressed_read: Callable[[], int]) -> None:
        self.left = max_bytes
        self.max_bytes = max_bytes
        self.written = 0
        self.compressed_read = compressed_read
        """The archive's bytes read so far (for a zip: the compressed sizes of the members taken so far)."""

    def copy(self, source: IO[bytes], destination: Path, name: str) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with destination.open("xb") as out:
            while chunk := source.read(_CHUNK):
                self.left -= len(chunk)
                self.written += len(chunk)
                if self.left < 0:
                    raise ArchiveError(f"archive extracts to more than {self.max_bytes} bytes")
                if self.written > _RATIO_FLOOR_BYTES and self.written > _MAX_RATIO * max(1, self.compressed_read()):
                    raise ArchiveError(
                        f"archive expands more than {_MAX_RATIO}:1 (at member {name!r}): a decompression bomb?"
                    )
                out.write(chunk)


def _extract_zip(path: Path, destination: Path, max_bytes: int) -> None:
    taken = [0]  # compressed bytes of the members taken so far
    budget = _Budget(max_bytes, lambda: taken[0])
    members = _MemberCheck(destination)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if sum(info.file_size for info in infos) > max_bytes:
            raise ArchiveError(f"archive declares more than {max_bytes} bytes of content")
        for info in infos:
            target = members.target(info.filename, info.is_dir())
            if target is None:
                continue
            file_type = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
            if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise ArchiveError(f"archive member {info.filename!r} is a link or special file")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > _RATIO_FLOOR_BYTES and ratio > _MAX_RATIO:
                raise ArchiveError(f"archive member {info.filename!r} compresses {ratio:.0f}:1 (zip bomb?)")
            taken[0] += info.compress_size  # zipfile reads no more of a member than this
            with zf.open(info) as source:
                budget.copy(source, target, info.filename)


def _extract_tar(path: Path, destination: Path, max_bytes: int) -> None:
    with path.open("rb") as raw, tarfile.open(fileobj=raw) as tar:  # compressed or not, as tarfile finds it
        extract_tar_members(tar, destination, max_bytes, raw.tell)


def extract_tar_members(
    tar: tarfile.TarFile, destination: Path, max_bytes: int, compressed_read: Callable[[], int]
) -> None:
    """Extract an open tar into ``destination`` under the checks every archive gets (names, links, sizes)."""
    budget = _Budget(max_bytes, compressed_read)
    members = _MemberCheck(destination)
    for info in tar:
        target = members.target(info.name, info.isdir())
        if target is None:
            continue
        if info.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if not info.isfile():
            raise ArchiveError(f"archive member {info.name!r} is a link or special file")
        source = tar.extractfile(info)
        if source is None:
            raise ArchiveError(f"archive member {info.name!r} cannot be read")
        with source:
            budget.copy(source, target, info.name)
