"""Write a model archive (``dms archive``), with the flags and layout of ``torch-model-archiver``."""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dms import __version__
from dms.archive.manifest import MANIFEST_PATH
from dms.errors import ArchiveError
from dms.handlers.builtin import BUILTIN_HANDLERS
from dms.naming import validate_model_name, validate_model_version

ArchiveFormat = Literal["default", "zip-store", "tgz", "no-archive"]
BUILTIN_HANDLER_NAMES = frozenset(BUILTIN_HANDLERS)


@dataclass
class ArchiveSpec:
    model_name: str
    version: str
    handler: str
    serialized_file: Path | None = None
    model_file: Path | None = None
    extra_files: list[Path] = field(default_factory=list)
    requirements_file: Path | None = None
    config_file: Path | None = None
    runtime: str = "python"
    extensions: dict[str, str] = field(default_factory=dict)


def _handler_entry(handler: str) -> tuple[str, Path | None]:
    """The manifest's handler value and, for a handler file, the file to pack."""
    if handler in BUILTIN_HANDLER_NAMES:
        return handler, None
    path_part, sep, function = handler.partition(":")
    candidate = Path(path_part)
    if candidate.suffix == ".py" or candidate.is_file():
        if not candidate.is_file():
            raise ArchiveError(f"handler file {candidate} does not exist")
        return candidate.name + (sep + function if sep else ""), candidate
    return handler, None  # module:function importable where the model runs


def build_manifest(spec: ArchiveSpec, handler_value: str) -> dict[str, object]:
    model: dict[str, object] = {
        "modelName": spec.model_name,
        "modelVersion": spec.version,
        "handler": handler_value,
    }
    for key, path in (
        ("serializedFile", spec.serialized_file),
        ("modelFile", spec.model_file),
        ("requirementsFile", spec.requirements_file),
        ("configFile", spec.config_file),
    ):
        if path is not None:
            model[key] = path.name
    if spec.extensions:
        model["extensions"] = spec.extensions
    return {
        "createdOn": time.strftime("%d/%m/%Y %H:%M:%S"),
        "runtime": spec.runtime,
        "model": model,
        "archiverVersion": f"dms-{__version__}",
    }


def write_archive(spec: ArchiveSpec, export_path: Path, fmt: ArchiveFormat = "default", force: bool = False) -> Path:
    """Pack ``spec`` into ``export_path`` and return the written archive's path."""
    validate_model_name(spec.model_name)
    validate_model_version(spec.version)
    handler_value, handler_file = _handler_entry(spec.handler)
    files = [
        p for p in (spec.serialized_file, spec.model_file, spec.requirements_file, spec.config_file, handler_file) if p
    ]
    for path in [*files, *spec.extra_files]:
        if not path.exists():
            raise ArchiveError(f"{path} does not exist")
    suffix = {"default": ".mar", "zip-store": ".mar", "tgz": ".tar.gz", "no-archive": ""}[fmt]
    target = export_path / f"{spec.model_name}{suffix}"
    if target.exists():
        if not force:
            raise ArchiveError(f"{target} already exists; use --force to overwrite it")
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    export_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dms-archive-") as tmp:
        staging = Path(tmp) / spec.model_name
        staging.mkdir()
        for path in [*files, *spec.extra_files]:
            destination = staging / path.name
            if path.is_dir():
                shutil.copytree(path, destination, dirs_exist_ok=True)
            else:
                shutil.copy2(path, destination)
        (staging / "MAR-INF").mkdir(exist_ok=True)
        manifest = build_manifest(spec, handler_value)
        (staging / MANIFEST_PATH).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _pack(staging, target, fmt)
    return target


def _pack(staging: Path, target: Path, fmt: ArchiveFormat) -> None:
    if fmt == "no-archive":
        shutil.copytree(staging, target)
        return
    entries = sorted(p for p in staging.rglob("*") if p.is_file())
    if fmt == "tgz":  # wrapped in a <model_name>/ folder, as torch-model-archiver does
        with tarfile.open(target, "w:gz") as tar:
            for path in entries:
                tar.add(path, arcname=str(staging.name / path.relative_to(staging)))
        return
    method = zipfile.ZIP_STORED if fmt == "zip-store" else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(target, "w", compression=method) as zf:
        for path in entries:
            zf.write(path, arcname=str(path.relative_to(staging)))
