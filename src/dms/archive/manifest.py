"""``MAR-INF/MANIFEST.json``: written as TorchServe's archiver does, read from any of the three.

DMS and ``torch-model-archiver`` manifests carry ``createdOn``, ``runtime``, ``model`` and
``archiverVersion``; MMS 1.x's ``model-archiver`` adds ``specificationVersion`` and ``engine``
and may leave out ``modelVersion``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dms.errors import ArchiveError
from dms.naming import validate_model_name, validate_model_version

MANIFEST_PATH = "MAR-INF/MANIFEST.json"
DEFAULT_VERSION = "1.0"


@dataclass(frozen=True)
class Manifest:
    raw: dict[str, Any]
    model_name: str
    model_version: str
    handler: str
    serialized_file: str | None
    config_file: str | None
    origin: str
    """``dms``, ``torchserve``, ``mms`` or ``legacy`` (a DMS 0.x ``.model``): which archiver wrote it."""


def parse_manifest(raw: Any, origin: str | None = None) -> Manifest:
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise ArchiveError("the archive's MANIFEST.json has no 'model' section")
    model = raw["model"]
    name = model.get("modelName")
    if not isinstance(name, str):
        raise ArchiveError("the archive's MANIFEST.json has no model.modelName")
    version = str(model.get("modelVersion") or DEFAULT_VERSION)
    archiver = str(raw.get("archiverVersion", ""))
    if origin is None:
        if "specificationVersion" in raw or "engine" in raw:
            origin = "mms"
        elif archiver.startswith("dms"):
            origin = "dms"
        else:
            origin = "torchserve"
    return Manifest(
        raw=raw,
        model_name=validate_model_name(name),
        model_version=validate_model_version(version),
        handler=str(model.get("handler") or ""),
        serialized_file=model.get("serializedFile"),
        config_file=model.get("configFile"),
        origin=origin,
    )
