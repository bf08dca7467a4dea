"""Runtimes, chosen by the serialized file's format (or ``runtime: {kind: ...}`` in the model config).

Heavy frameworks are imported only inside the worker that loads such a model.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from dms.errors import ArchiveError
from dms.runtimes.base import Runtime, TensorSpec, declared_specs

__all__ = ["KINDS", "Runtime", "TensorSpec", "detect_kind", "load_runtime"]

KINDS = ("onnx", "torchscript", "torch_export", "torch_eager", "sklearn", "keras")
_TORCH_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".bin")


def detect_kind(path: Path, model_file: Path | None) -> str:
    suffix = path.suffix.lower()
    if suffix == ".keras" or (path.is_dir() and any(path.glob("*.keras"))):
        return "keras"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".pt2":
        return "torch_export"
    if suffix in (".skops", ".joblib", ".pkl", ".pickle"):
        return "sklearn"
    if suffix in _TORCH_SUFFIXES:
        if zipfile.is_zipfile(path):
            names = zipfile.ZipFile(path).namelist()
            if any("/code/" in name or name.endswith("constants.pkl") for name in names):
                return "torchscript"
        return "torch_eager"
    raise ArchiveError(
        f"no runtime for serialized file {path.name!r}: supported are .onnx, .pt/.pth (TorchScript or a state_dict "
        "with --model-file), .pt2 (torch.export), .keras (or a folder of them), .skops and (trusted) .joblib/.pkl"
    )


def load_runtime(
    path: Path,
    options: dict[str, Any],
    cpu_threads: int = 1,
    model_file: Path | None = None,
    declared: dict[str, Any] | None = None,
) -> Runtime:
    """Load ``path`` with the runtime its format (or ``options["kind"]``) calls for.

    ``declared`` may carry ``inputs``/``outputs`` lists (name, datatype, shape) from the model
    config, for formats that do not record their signature.
    """
    if not path.exists():
        raise ArchiveError(f"serialized file {path.name} is not in the archive")
    kind = str(options.get("kind") or detect_kind(path, model_file))
    if kind not in KINDS:
        raise ArchiveError(f"runtime kind {kind!r} is not one of {', '.join(KINDS)}")
    runtime: Any
    if kind == "onnx":
        from dms.runtimes.onnx import OnnxRuntime

        runtime = OnnxRuntime(path, options, cpu_threads)
    elif kind == "keras":
        from dms.runtimes.keras import KerasRuntime

        runtime = KerasRuntime(path, options, cpu_threads)
    elif kind == "sklearn":
        from dms.runtimes.sklearn import SklearnRuntime

        runtime = SklearnRuntime(path, options)
    else:
        from dms.runtimes.torch import load_torch

        runtime = load_torch(kind, path, model_file, options, cpu_threads)
    _apply_declared(runtime, declared or {})
    result: Runtime = runtime
    return result


def _apply_declared(runtime: Any, declared: dict[str, Any]) -> None:
    for key in ("inputs", "outputs"):
        specs = declared_specs(declared.get(key))
        if specs:
            setattr(runtime, key, specs)
