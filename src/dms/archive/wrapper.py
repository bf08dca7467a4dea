"""The archive ``dms serve --wrapper/--model-dir`` serves: a folder in the state folder, handler ``wrapper``."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from dms.archive.manifest import MANIFEST_PATH
from dms.settings import ServerSettings

WRAPPER_MODEL_NAME = "model"


def wrapper_archive(settings: ServerSettings) -> Path:
    """Write (again) the folder archive for the wrapper workflow and return it."""
    folder = settings.state_dir / "wrapper-model"
    (folder / "MAR-INF").mkdir(parents=True, exist_ok=True)
    model_dir = (settings.model_dir or Path.cwd()).resolve()
    wrapper = settings.wrapper.resolve() if settings.wrapper else None
    manifest = {
        "runtime": "python",
        "model": {
            "modelName": WRAPPER_MODEL_NAME,
            "modelVersion": "1.0",
            "handler": "wrapper",
            "configFile": "model-config.yaml",
        },
        "archiverVersion": "dms-wrapper",
    }
    (folder / MANIFEST_PATH).write_text(json.dumps(manifest, indent=2))
    config = {"handler": {"model_dir": str(model_dir), "wrapper": str(wrapper) if wrapper else None}}
    (folder / "model-config.yaml").write_text(yaml.safe_dump(config))
    return folder
