"""Legacy ``.model`` archives: a zip with ``MANIFEST.json``, ``signature.json``, labels, weights and a service.

The manifest keeps the original layout (``Model-Archive-Version``, ``License``, ``Model-Server``,
``Engine``, ``Created-By``, and ``Model`` with ``Parameters``, ``Symbol``, ``Signature``,
``Model-Format``, ``Model-Name``, ``Service``). Weights may be ONNX or PyTorch (TorchScript or a
``torch.export`` program); MXNet symbol/params archives are refused with the way to convert them.
Reading translates the manifest into the ``model`` section every other archive has, so the rest
of the server serves a legacy archive like any other.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

from dms import __version__
from dms.errors import ArchiveError
from dms.naming import validate_model_name

LEGACY_MANIFEST = "MANIFEST.json"
SIGNATURE = "signature.json"
DEFAULT_SERVICE = "legacy_vision"
ARCHIVE_VERSION = 1.0
_CONFIG = "model-config.yaml"
_FORMATS = {".onnx": "ONNX", ".pt": "PyTorch", ".pth": "PyTorch", ".pt2": "PyTorch"}

MXNET_RETIRED = (
    "this archive holds an MXNet model ({detail}); MXNet is retired (moved to the Apache Attic in 2023) and DMS "
    "does not run it. Convert it to ONNX with MXNet's last release (mxnet.onnx.export_model(sym, params, "
    "in_shapes, in_types, 'model.onnx')), then export the .onnx file again with deep-model-export"
)


def is_legacy_archive(model_dir: Path) -> bool:
    return (model_dir / LEGACY_MANIFEST).is_file() and not (model_dir / "MAR-INF").exists()


def translate_manifest(raw: Any, model_dir: Path) -> dict[str, Any]:
    """The legacy manifest as the ``{"model": {...}}`` manifest the rest of DMS reads."""
    if not isinstance(raw, dict) or not isinstance(raw.get("Model"), dict):
        raise ArchiveError(f"{LEGACY_MANIFEST} of a .model archive needs a 'Model' section")
    model = raw["Model"]
    fmt = str(model.get("Model-Format", ""))
    symbol = str(model.get("Symbol") or "")
    parameters = str(model.get("Parameters") or "")
    if fmt.lower().startswith("mxnet") or symbol or parameters.endswith(".params"):
        raise ArchiveError(MXNET_RETIRED.format(detail=f"Model-Format {fmt or '?'}, {symbol or parameters}"))
    if not parameters:
        raise ArchiveError(f"{LEGACY_MANIFEST} names no Model.Parameters (the weights file)")
    name = model.get("Model-Name")
    if not isinstance(name, str):
        raise ArchiveError(f"{LEGACY_MANIFEST} names no Model.Model-Name")
    section: dict[str, Any] = {
        "modelName": name,
        "modelVersion": "1.0",
        "serializedFile": parameters,
        "handler": str(model.get("Service") or DEFAULT_SERVICE),
    }
    if (model_dir / _CONFIG).is_file():
        section["configFile"] = _CONFIG
    return {"model": section, "legacy": raw}


def export_legacy_archive(
    model_name: str,
    model_path: Path,
    export_path: Path,
    service_file: Path | None = None,
    license_name: str = "unspecified",
) -> Path:
    """Pack every file of ``model_path`` (and the service file) into ``export_path/NAME.model``."""
    validate_model_name(model_name)
    if not model_path.is_dir():
        raise ArchiveError(f"--model-path {model_path} is not a folder")
    files = sorted(p for p in model_path.iterdir() if p.is_file())
    names = {p.name for p in files}
    if SIGNATURE not in names:
        raise ArchiveError(f"{model_path} has no {SIGNATURE} describing the model's inputs and outputs")
    read_signature(model_path)
    mxnet = [n for n in names if n.endswith(("-symbol.json", ".params"))]
    if mxnet:
        raise ArchiveError(MXNET_RETIRED.format(detail=", ".join(sorted(mxnet))))
    weights = [p for p in files if p.suffix in _FORMATS]
    if len(weights) != 1:
        raise ArchiveError(
            f"{model_path} must hold exactly one weights file (.onnx, or TorchScript .pt/.pth, or torch.export "
            f".pt2); found {len(weights)}: {', '.join(p.name for p in weights) or 'none'}"
        )
    if service_file is not None and not service_file.is_file():
        raise ArchiveError(f"--service-file-path {service_file} does not exist")
    manifest = {
        "Model-Archive-Version": ARCHIVE_VERSION,
        "Model-Archive-Description": model_name,
        "License": license_name,
        "Model-Server": ARCHIVE_VERSION,
        "Engine": {_FORMATS[weights[0].suffix]: "any"},
        "Model": {
            "Parameters": weights[0].name,
            "Symbol": "",
            "Signature": SIGNATURE,
            "Description": model_name,
            "Model-Format": _FORMATS[weights[0].suffix],
            "Model-Name": model_name,
            "Service": service_file.name if service_file else DEFAULT_SERVICE,
        },
        "Created-By": {"Author": f"deep-model-export (DMS {__version__})", "Author-Email": ""},
    }
    export_path.mkdir(parents=True, exist_ok=True)
    target = export_path / f"{model_name}.model"
    staging = target.with_suffix(".model.part")
    with zipfile.ZipFile(staging, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(LEGACY_MANIFEST, json.dumps(manifest, indent=2))
        for path in files:
            if path.name != LEGACY_MANIFEST:
                archive.write(path, path.name)
        if service_file is not None:
            archive.write(service_file, service_file.name)
    shutil.move(staging, target)
    return target


def read_signature(model_dir: Path) -> dict[str, Any]:
    """``signature.json`` of a model folder, checked to name at least one input's ``data_name``."""
    path = model_dir / SIGNATURE
    try:
        signature = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"{SIGNATURE} is missing or not JSON: {exc}") from exc
    inputs = signature.get("inputs") if isinstance(signature, dict) else None
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, dict) and "data_name" in i for i in inputs):
        raise ArchiveError(f'{SIGNATURE} needs "inputs": [{{"data_name": ..., "data_shape": [...]}}, ...]')
    result: dict[str, Any] = signature
    return result
