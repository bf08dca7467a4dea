"""TorchServe's ``config.properties``, read as DMS settings (``dms serve --ts-config FILE``).

KServe's TorchServe runtime hands its server one (``/mnt/models/config/config.properties``); a TorchServe
deployment has one too. Each key TorchServe documents that DMS has an equivalent for becomes that setting:
addresses, the model store, the models to load and their per-model settings (``models``, ``model_snapshot``),
worker and queue defaults, size limits, allowed URLs, token authorization and the service envelope. With
``enable_envvars_config=true``, ``TS_<KEY>`` environment variables (``TS_SERVICE_ENVELOPE``) override the
file's keys, as in TorchServe. Keys DMS has no use for are returned by name, for the server to log once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import javaproperties

KNOWN_KEYS = (
    "inference_address",
    "management_address",
    "metrics_address",
    "grpc_inference_address",
    "grpc_inference_port",
    "grpc_management_address",
    "grpc_management_port",
    "model_store",
    "load_models",
    "models",
    "model_snapshot",
    "default_workers_per_model",
    "job_queue_size",
    "enable_envvars_config",
    "allowed_urls",
    "disable_token_authorization",
    "max_request_size",
    "max_response_size",
    "service_envelope",
    "default_response_timeout",
    "metrics_format",
    "certificate_file",
    "private_key_file",
    "enable_grpc_ssl",
)
"""What DMS reads; ``metrics_format`` only as ``prometheus``, the one format DMS serves."""

MODEL_KEYS = {
    "minWorkers": "initial_workers",
    "maxWorkers": "max_workers",
    "batchSize": "batch_size",
    "maxBatchDelay": "max_batch_delay_ms",
    "responseTimeout": "response_timeout_s",
    "startupTimeout": "startup_timeout_s",
    "jobQueueSize": "job_queue_size",
}
"""A model's entry in ``models`` / ``model_snapshot``, as ``ModelConfig`` keys (``marName`` and
``defaultVersion`` are read apart)."""


class TorchServeConfigError(ValueError):
    """A ``config.properties`` DMS cannot serve as asked: the message names the key."""


@dataclass
class TorchServeConfig:
    settings: dict[str, Any] = field(default_factory=dict)
    """``ServerSettings`` fields."""
    unused: list[str] = field(default_factory=list)
    """Keys present that DMS does not use."""


def read_torchserve_config(path: Path, environ: Mapping[str, str] | None = None) -> TorchServeConfig:
    """The settings ``path`` asks for; raise ``TorchServeConfigError`` naming a key DMS cannot honour."""
    try:
        with path.open(encoding="utf-8") as source:
            properties: dict[str, str] = dict(javaproperties.load(source))
    except OSError as exc:
        raise TorchServeConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise TorchServeConfigError(f"{path} is not a properties file: {exc}") from exc
    environ = os.environ if environ is None else environ
    if _flag(properties, "enable_envvars_config"):
        for key in KNOWN_KEYS:
            value = environ.get(f"TS_{key.upper()}", "")
            if value.strip():  # KServe renders a label that is not set as an empty value
                properties[key] = value
    return TorchServeConfig(_settings(properties, path), sorted(set(properties) - set(KNOWN_KEYS)))


def _settings(properties: dict[str, str], path: Path) -> dict[str, Any]:
    # TorchServe's management API starts no worker for a model registered without initial_workers.
    # Its dashboards read TorchServe's metric names.
    settings: dict[str, Any] = {"registered_model_workers": 0, "torchserve_metrics": True}
    settings.update(_tls(properties, path))
    for key in ("inference_address", "management_address", "metrics_address"):
        if key in properties:
            settings[key] = _address(key, properties[key], tls="tls_certificate_file" in settings)
    for kind, setting, beside in (
        ("inference", "grpc_address", "inference_address"),
        ("management", "grpc_management_address", "management_address"),
    ):
        if f"grpc_{kind}_port" in properties:
            host = properties.get(f"grpc_{kind}_address", "").strip()
            if not host:
                host = _host(settings.get(beside, "127.0.0.1:8080"))
            settings[setting] = f"{_bracketed(host)}:{_integer(properties, f'grpc_{kind}_port')}"
    if "model_store" in properties:
        store = Path(properties["model_store"].strip())
        settings["model_store"] = store if store.is_absolute() else path.parent / store
    for key, setting in (
        ("default_workers_per_model", "default_workers_per_model"),
        ("job_queue_size", "job_queue_size"),
        ("max_request_size", "max_request_size_bytes"),
        ("max_response_size", "max_response_size_bytes"),
        ("default_response_timeout", "response_timeout_s"),
    ):
        if key in properties:
            settings[setting] = _integer(properties, key)
    if "allowed_urls" in properties:
        settings["allowed_urls"] = [url.strip() for url in properties["allowed_urls"].split(",") if url.strip()]
    if "disable_token_authorization" in properties:
        settings["token_auth"] = not _flag(properties, "disable_token_authorization")
    if "service_envelope" in properties:
        settings["service_envelope"] = properties["service_envelope"].strip()
    if properties.get("metrics_format", "prometheus").strip().lower() != "prometheus":
        raise TorchServeConfigError(f"metrics_format={properties['metrics_format']}: DMS serves prometheus only")
    settings.update(_models(properties))
    return settings


def _models(properties: dict[str, str]) -> dict[str, Any]:
    """``models`` (per-model settings of the models ``load_models`` names) and ``model_snapshot`` (models to load,
    with their settings), as the ``models``, ``model_settings`` and ``default_versions`` settings."""
    entries: dict[str, dict[str, dict[str, Any]]] = {}
    load: list[str] = []
    if "model_snapshot" in properties:
        snapshot = _json(properties, "model_snapshot")
        models = snapshot.get("models", {}) if isinstance(snapshot, dict) else None
        entries.update(_model_entries("model_snapshot", models))
        for name, versions in entries.items():
            for version, entry in versions.items():
                if not isinstance(entry.get("marName"), str):
                    raise TorchServeConfigError(f"model_snapshot: model {name} {version} has no marName")
                load.append(f"{name}={entry['marName']}")
    if "models" in properties:
        entries.update(_model_entries("models", _json(properties, "models")))
    if properties.get("load_models", "").strip() and properties["load_models"].strip() != "standalone":
        load = [part.strip() for part in properties["load_models"].split(",") if part.strip()]
    settings: dict[str, Any] = {}
    if load:
        settings["models"] = load
    model_settings: dict[str, dict[str, Any]] = {}
    default_versions: dict[str, str] = {}
    for name, versions in entries.items():
        chosen = next((v for v, e in versions.items() if e.get("defaultVersion") is True), None)
        if chosen is not None and len(versions) > 1:
            default_versions[name] = chosen
        entry = versions[chosen or next(iter(versions))]
        model_settings[name] = {MODEL_KEYS[key]: value for key, value in entry.items() if key in MODEL_KEYS}
    if model_settings:
        settings["model_settings"] = model_settings
    if default_versions:
        settings["default_versions"] = default_versions
    return settings


def _model_entries(key: str, models: Any) -> dict[str, dict[str, dict[str, Any]]]:
    if not isinstance(models, dict) or not all(
        isinstance(versions, dict) and versions and all(isinstance(e, dict) for e in versions.values())
        for versions in models.values()
    ):
        raise TorchServeConfigError(f'{key} must map each model name to {{"version": {{settings}}}}')
    return models


def _tls(properties: dict[str, str], path: Path) -> dict[str, Any]:
    """``certificate_file`` and ``private_key_file`` (PEM, relative to the file), and ``enable_grpc_ssl``."""
    given = [key for key in ("certificate_file", "private_key_file") if properties.get(key, "").strip()]
    if not given:
        return {}
    if len(given) == 1:
        raise TorchServeConfigError(f"{given[0]} needs its pair: give certificate_file and private_key_file")
    files = {key: Path(properties[key].strip()) for key in given}
    return {
        "tls_certificate_file": _beside(files["certificate_file"], path),
        "tls_private_key_file": _beside(files["private_key_file"], path),
        "grpc_tls": _flag(properties, "enable_grpc_ssl"),
    }


def _beside(file: Path, config: Path) -> Path:
    return file if file.is_absolute() else config.parent / file


def _address(key: str, value: str, tls: bool) -> str:
    """``http(s)://HOST:PORT`` as ``HOST:PORT``; ``https`` needs the certificate (DMS then serves TLS on every HTTP
    port: docs/torchserve.md)."""
    parts = urlsplit(value.strip())
    if parts.scheme == "https" and not tls:
        raise TorchServeConfigError(
            f"{key}={value}: https needs certificate_file and private_key_file (PEM; DMS reads no Java keystore)"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise TorchServeConfigError(f"{key}={value}: expected http://HOST:PORT or https://HOST:PORT")
    return f"{_bracketed(parts.hostname)}:{parts.port}"


def _host(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _integer(properties: dict[str, str], key: str) -> int:
    try:
        return int(properties[key].strip())
    except ValueError:
        raise TorchServeConfigError(f"{key}={properties[key]}: expected a whole number") from None


def _flag(properties: dict[str, str], key: str) -> bool:
    return properties.get(key, "false").strip().lower() == "true"


def _json(properties: dict[str, str], key: str) -> Any:
    try:
        return json.loads(properties[key])
    except json.JSONDecodeError as exc:
        raise TorchServeConfigError(f"{key} is not valid JSON: {exc}") from None
