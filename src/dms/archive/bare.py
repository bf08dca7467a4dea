"""A bare model: a model file, or a folder holding one, with no archive manifest around it.

This is how KServe's storage initializer leaves ONNX and scikit-learn models in ``/mnt/models``
(``model.onnx``, ``model.joblib``). Such a model is served as an archive would be with the built-in ``tensor``
handler, the runtime chosen by the file's suffix; it is named by whoever registers it (``--models NAME=PATH``)
and has version 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dms.errors import ArchiveError

MODEL_SUFFIXES = (".onnx", ".pt2", ".pt", ".pth", ".skops", ".joblib", ".pkl", ".pickle", ".keras")
"""Serialized files the built-in runtimes load (``dms.runtimes``)."""
BARE_VERSION = "1"


BARE_ARCHIVER = "dms-bare"
"""The ``archiverVersion`` of a bare model file's manifest: only its one file is the model."""


def is_bare_model_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in MODEL_SUFFIXES


def bare_manifest(folder: Path, file: str | None = None) -> dict[str, Any] | None:
    """The manifest of the bare model ``file`` in ``folder``, or of the one model file the folder holds (``None``
    when it holds none); raise ``ArchiveError`` when it holds several, naming them, since which one to serve is
    not for DMS to guess."""
    found = [file] if file else sorted(p.name for p in folder.iterdir() if is_bare_model_file(p))
    if not found:
        return None
    if len(found) > 1:
        raise ArchiveError(f"{folder} holds several model files ({', '.join(found)}): leave one, or archive them")
    return {
        "archiverVersion": BARE_ARCHIVER,
        "model": {"modelName": "model", "modelVersion": BARE_VERSION, "handler": "tensor", "serializedFile": found[0]},
    }
