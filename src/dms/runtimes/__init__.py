"""Runtimes, chosen by the serialized file's format. Heavy frameworks import only when used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dms.errors import ArchiveError
from dms.runtimes.base import Runtime, TensorSpec

__all__ = ["Runtime", "TensorSpec", "load_runtime"]


def load_runtime(path: Path, options: dict[str, Any], cpu_threads: int = 1) -> Runtime:
    """Load ``path`` with the runtime its suffix calls for."""
    if not path.is_file():
        raise ArchiveError(f"serialized file {path.name} is not in the archive")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from dms.runtimes.onnx import OnnxRuntime

        return OnnxRuntime(path, options, cpu_threads)
    raise ArchiveError(f"no runtime for serialized file {path.name!r}: supported formats are .onnx")
