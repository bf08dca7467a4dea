"""Server settings: one validated model.

Precedence, lowest to highest: field defaults, a TOML file (``--config``), TorchServe's
``config.properties`` (``--ts-config``), ``DMS_*`` environment variables, CLI flags.
``load_settings`` is the only place that reads them; nothing reads the environment at import time.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _default_workers() -> int:
    """Two workers on a 2-core machine, at most four: each worker runs its own threads."""
    return max(1, min(4, os.cpu_count() or 1))


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dms" / "archives"


def _default_state_dir() -> Path:
    return Path.home() / ".dms"


_ANY_ADDRESS = {"0.0.0.0", "::", ""}


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6); raise ValueError when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address {address!r} is not host:port")
    return host.strip("[]"), int(port)


class ServerSettings(BaseSettings):
    """Everything the server process needs to know, validated at start-up."""

    model_config = SettingsConfigDict(env_prefix="DMS_", extra="forbid", validate_default=True)

    inference_address: str = "127.0.0.1:8080"
    """Where the inference API listens (host:port)."""
    management_address: str = "127.0.0.1:8081"
    """Where the management API listens (host:port)."""
    metrics_address: str = "127.0.0.1:8082"
    """Where Prometheus metrics are served (host:port)."""

    grpc_address: str = "127.0.0.1:7070"
    """Where gRPC inference listens (host:port): the Open Inference Protocol's service and TorchServe's
    ``InferenceAPIsService``."""
    grpc_management_address: str | None = None
    """Where TorchServe's gRPC management API (``ManagementAPIsService``) listens (host:port; TorchServe's is
    ``127.0.0.1:7071``, which a ``config.properties`` with ``grpc_management_port`` sets). None: not served."""
    tls_certificate_file: Path | None = None
    """A PEM certificate (chain): with ``tls_private_key_file``, every port serves TLS (HTTPS, and gRPC over TLS
    with ALPN ``h2`` unless ``grpc_tls`` is false) and nothing in plain text. TorchServe's ``certificate_file``."""
    tls_private_key_file: Path | None = None
    """The certificate's PEM private key (not encrypted). TorchServe's ``private_key_file``."""
    grpc_tls: bool = True
    """With a certificate, the gRPC ports serve TLS too; false leaves them plain (TorchServe's ``enable_grpc_ssl``,
    false unless set, which a ``config.properties`` carries over)."""
    torchserve_metrics: bool = False
    """``/metrics`` also carries TorchServe's metric names (``Requests2XX``, ``ts_inference_requests_total``, ...;
    ``dms.observability.torchserve_names``), for dashboards built on TorchServe's. On when serving from a
    TorchServe ``config.properties``."""
    grpc_enabled: bool = True
    grpc_server: Literal["dms", "grpcio"] = "dms"
    """What serves gRPC: DMS's own HTTP/2 connections over zttp (``dms.grpc.server``), which spend about half the
    CPU per inference call that grpcio's asyncio server does and end HTTP/2 floods sooner (docs/performance.md);
    or grpcio's asyncio server. ``uvicorn``, the name of the first, is taken as ``dms``."""
    grpc_max_concurrent_streams: int = Field(default=128, ge=1)
    """Calls one gRPC connection may have open at once; a call past it is refused (REFUSED_STREAM)."""
    max_connections: int | None = Field(default=None, ge=1)
    """Connections the server may have open at once, over all its ports; one more is refused at once (HTTP: 503
    with ``Retry-After``; gRPC: GOAWAY). None: the process's descriptor limit (raised to its hard limit at
    start) less an eighth of it (at least 64) kept for the server itself: worker sockets, archives, logs."""
    grpc_stream_idle_timeout_s: float = Field(default=300.0, gt=0)
    """A ``ModelStreamInfer`` stream that brings no request for this long, with none of its requests in flight,
    ends with DEADLINE_EXCEEDED naming this setting (streams dropped or held open by a client end)."""
    grpc_max_message_bytes: int | None = Field(default=None, ge=1024)
    """Largest gRPC request message, before and after decompression (inflated only up to it); larger ends the
    call with RESOURCE_EXHAUSTED naming this setting. None: ``max_request_size_bytes``, REST's body limit, as
    TorchServe bounds its gRPC messages by ``max_request_size`` too."""

    model_store: Path | None = None
    """Folder of model archives that ``--models`` and the management API name."""
    models: list[str] = Field(default_factory=list)
    """Models to load at start-up: ``name=archive``, bare archive names, or ``all``."""
    model_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Settings of the models loaded at start-up, by model name: the keys of a model config (``initial_workers``,
    ``max_workers``, ``batch_size``, ``max_batch_delay_ms``, ``response_timeout_s``...), over the archive's own.
    A model named by its archive alone is looked up by the archive's file name without its extension."""
    default_versions: dict[str, str] = Field(default_factory=dict)
    """The version to serve by default, by model name, for models loaded at start-up in several versions."""
    default_model: bool = True
    """Serve the bundled ``digits`` model when no model is named."""
    allowed_urls: list[str] = Field(default_factory=list)
    """Regular expressions; a remote archive URL must match one. Empty: no remote URL."""
    archive_cache_dir: Path = Field(default_factory=_default_cache_dir)
    """Where archives are extracted, one folder per archive hash."""
    max_archive_bytes: int = 8 * 1024**3
    """Largest total size an archive may extract to."""
    max_download_bytes: int = 2 * 1024**3
    """Largest archive downloaded from an allowed URL."""
    download_timeout_s: float = Field(default=300.0, gt=0)
    """The most a whole download (redirects included) may take, however its server paces its bytes."""

    default_workers_per_model: int = Field(default_factory=_default_workers, ge=0)
    """Workers per model version when neither its config nor the request says."""
    registered_model_workers: int | None = Field(default=None, ge=0)
    """Workers a model registered through the management API (``POST /models``) starts when neither the request
    (``initial_workers``) nor its archive's config (``minWorkers``) says; None: ``default_workers_per_model``, so
    that a registered model serves at once. TorchServe starts none, and a TorchServe ``config.properties``
    (``--ts-config``) sets 0, as a TorchServe deployment expects."""
    max_workers_per_model: int = Field(default=64, ge=1)
    """Ceiling on the workers one model version may be scaled to."""
    max_batch_size: int = Field(default=1024, ge=1)
    """Ceiling on a model version's batch size."""
    batch_size: int = Field(default=1, ge=1)
    max_batch_delay_ms: float = Field(default=100.0, ge=0)
    """Upper bound on the wait of a batch that is not full. DMS waits at most 2 ms of it, and only while the
    frontend is still busy bringing requests; a lone request on a quiet server leaves at once (0: never wait)."""
    response_timeout_s: float = Field(default=120.0, gt=0)
    """How long a worker may take over a batch; it is killed and replaced past it. For a streamed answer, how long it
    may go without sending a chunk (while its client reads)."""
    stream_stall_timeout_s: float = Field(default=30.0, gt=0)
    """How long a streamed answer waits for a client that takes none of it (its connection's buffers full) before
    giving that client up: its connection is closed and the model stops making its answer. Meanwhile the worker
    has sent at most a few chunks ahead (``STREAM_WINDOW``) and waits, its ``response_timeout_s`` not counting."""
    startup_timeout_s: float = Field(default=120.0, gt=0)
    job_queue_size: int = Field(default=100, ge=1)
    max_startup_failures: int = Field(default=3, ge=1)
    """Consecutive failed worker starts after which a model version is marked failed."""
    restart_backoff_max_s: float = Field(default=30.0, ge=0)

    max_request_size_bytes: int = Field(default=6_553_500, ge=1)
    """Largest request body accepted (TorchServe's default); larger gets 413."""
    max_response_size_bytes: int | None = Field(default=None, ge=1)
    """Largest answer body a model may send back; a larger answer becomes a 500 naming this setting (the
    worker drops it before it travels). None: no limit. TorchServe's ``max_response_size``."""
    request_read_timeout_s: float = Field(default=60.0, gt=0)
    """How long an HTTP/1.1 request's head may take to arrive from its first byte, and how long its body may
    pause between reads; past it the request gets 408 and its connection is closed (slow or stalled clients).
    On the gRPC port (DMS's HTTP/2), how long a unary call's request may pause: past it the call ends with
    DEADLINE_EXCEEDED and the connection serves on. Streaming calls' requests may pause as long as they like."""
    min_request_body_rate_bytes_s: float = Field(default=500.0, ge=0)
    """Bytes a second an HTTP/1.1 request must average, counted from its first byte (its head counts as no
    bytes) once ``request_body_rate_grace_s`` has passed; slower gets 408 and its connection is closed. On the
    gRPC port (DMS's HTTP/2) a unary call's request is held to the same floor, from its first read, and
    ends with DEADLINE_EXCEEDED; the connection serves on (streams' requests are not held to it). A pause limit alone
    lets a client hold a request for ever with a byte now and then. 0 turns the floor off."""
    request_body_rate_grace_s: float = Field(default=10.0, gt=0)
    """Seconds from a request's first byte before ``min_request_body_rate_bytes_s`` is looked at."""
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    """Largest HTTP/1.1 request head (request line and headers) on every HTTP port; past it the request gets
    431 and its connection is closed, the moment the limit is passed (nothing more of it is read)."""
    max_header_count: int = Field(default=100, ge=1)
    """Most headers an HTTP/1.1 request may have on every HTTP port; more gets 431 and a closed connection."""
    max_json_depth: int = Field(default=64, ge=1)
    """Deepest JSON nesting a request may have."""
    max_tensor_elements: int = Field(default=50_000_000, ge=1)
    """Most elements one request's tensor may hold."""
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    """Most pixels an image may decode to (decompression bombs)."""
    max_multipart_parts: int = Field(default=100, ge=1)
    """Most parts a multipart/form-data body may have."""
    service_envelope: Literal["none", "kserve", "kservev2"] = "none"
    """How KServe requests reach a model whose handler has no runtime (a TorchServe-style handler), as
    TorchServe's ``service_envelope`` says: ``kserve`` hands it a v1 ``:predict``'s instances one row each and
    answers ``{"predictions": [...]}``; ``kservev2`` hands it an Open Inference Protocol request's inputs one row
    each and answers one ``predict`` output per row. ``none``: the named tensors, as for any model. TorchServe's
    spellings ``kfserving``, ``kfservingv2``, ``json`` and ``body`` are read as ``kserve``, ``kservev2`` and
    ``none``. ``/predictions`` is never enveloped."""
    trust_pickled_models: bool = False
    """Load a bare scikit-learn model saved with pickle or joblib (KServe's ``model.joblib``: ``dms.archive.bare``).
    Unpickling runs code: only for a model store whose writers could choose the server's image anyway."""
    allow_pickle: bool = False
    """Let the wrapper workflow unpickle request bodies (every client must be trusted)."""
    wrapper: Path | None = None
    """A Python file defining create_model(modeldir) (the Studio.ML serving workflow)."""
    model_dir: Path | None = None
    """The folder the wrapper's model comes from, or whose newest checkpoint is served."""
    kill_after_s: float | None = Field(default=None, gt=0)
    """Shut down cleanly after this long without a request."""
    graceful_shutdown_s: float = Field(default=30.0, ge=0)
    """How long shutdown waits for accepted requests before stopping workers."""

    state_dir: Path = Field(default_factory=_default_state_dir)
    """Runtime files of one server: ``dms.pid``, ``key_file.json``, ``snapshot.json``, ``dms.log``."""
    token_auth: bool = True
    """Require ``Authorization: Bearer <management key>`` on the management API."""
    management_key: SecretStr | None = None
    """The management API's key, given rather than made at each start (``DMS_MANAGEMENT_KEY``; 16 characters or
    more). Never written to the key file; it cannot be rotated through the API."""
    management_key_file: Path | None = None
    """A file holding the management key (a mounted Kubernetes Secret); over ``management_key``."""
    inference_key: SecretStr | None = None
    """The inference API's key, given (``DMS_INFERENCE_KEY``), as ``management_key``."""
    inference_key_file: Path | None = None
    """A file holding the inference key, as ``management_key_file``."""
    inference_token_auth: bool = False
    """Also require the inference key on the inference API (health stays open)."""
    snapshot: bool = True
    """Write the registered models to ``snapshot.json`` on every change; restore them at start."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["plain", "json"] = "plain"
    """Plain text lines, or one JSON object per line."""
    logger_levels: dict[str, Literal["debug", "info", "warning", "error"]] = Field(default_factory=dict)
    """Levels of single loggers, e.g. ``{"dms.access": "warning"}``."""
    access_log: bool = True
    """One ``dms.access`` line per request: time, request id, transport, model, version, status, latency, batch."""
    ray_address: str | None = None
    """Run every model's workers as actors on the Ray cluster at this address (its head's ``host:port``, ``auto``
    for the cluster this machine belongs to, or ``ray://host:port`` through Ray Client) instead of as processes on
    this machine: ``dms.engine.ray_workers``. Needs ``pip install 'deep-model-server[ray]'`` here and on every node.
    Each model's ``ray`` settings say what each worker asks of the cluster (CPUs, GPUs, memory, custom
    resources) and how it scales between ``min_worker`` and ``max_worker`` on its queue's depth."""
    frontends: int = Field(default=1, ge=1, le=64)
    """Processes that serve the inference API and gRPC, sharing their ports (``SO_REUSEPORT``: the kernel
    spreads connections over them). Each runs every model with the model's own worker count, so a model of
    2 workers on 2 frontends runs 4 workers. The first one also serves management and metrics, applies every
    management change to the others before it answers, and merges their metrics and workers into its own
    answers (``dms.frontends``). One Python frontend tops out at one core; more use more."""

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "dms.pid"

    @property
    def key_file(self) -> Path:
        return self.state_dir / "key_file.json"

    @property
    def snapshot_file(self) -> Path:
        return self.state_dir / "snapshot.json"

    @property
    def model_items(self) -> list[str]:
        """Each model ``--models`` names (``name=archive``, an archive, or ``all``): entries may hold several,
        separated by commas or spaces, as TorchServe's flag allows."""
        return [part for entry in self.models for part in entry.replace(",", " ").split()]

    @property
    def grpc_message_limit(self) -> int:
        """The largest gRPC request message: ``grpc_max_message_bytes``, or REST's ``max_request_size_bytes``."""
        return self.grpc_max_message_bytes or self.max_request_size_bytes

    @property
    def log_file(self) -> Path:
        return self.state_dir / "dms.log"

    @field_validator(
        "inference_address", "management_address", "metrics_address", "grpc_address", "grpc_management_address"
    )
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_address(value)
        return value

    @field_validator("grpc_server", mode="before")
    @classmethod
    def _first_name_of_dms_grpc(cls, value: Any) -> Any:
        return "dms" if value == "uvicorn" else value

    @field_validator("service_envelope", mode="before")
    @classmethod
    def _torchserve_envelope_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            spelled = value.strip().lower()
            return {"kfserving": "kserve", "kfservingv2": "kservev2", "json": "none", "body": "none", "": "none"}.get(
                spelled, spelled
            )
        return value

    @model_validator(mode="after")
    def _check_tls_pair(self) -> ServerSettings:
        if (self.tls_certificate_file is None) != (self.tls_private_key_file is None):
            raise ValueError("tls_certificate_file and tls_private_key_file go together: give both, or neither")
        return self

    @model_validator(mode="after")
    def _check_ports_apart(self) -> ServerSettings:
        """Each API on its own port (TorchServe can serve management on the inference port; DMS cannot yet)."""
        seen: dict[tuple[str, int], str] = {}
        named = ["inference_address", "management_address", "metrics_address"]
        if self.grpc_enabled:
            named.append("grpc_address")
            if self.grpc_management_address is not None:
                named.append("grpc_management_address")
        for name in named:
            host, port = parse_address(getattr(self, name))
            if port == 0:
                continue
            for (other_host, other_port), other in seen.items():
                if port == other_port and (host == other_host or {host, other_host} & _ANY_ADDRESS):
                    raise ValueError(
                        f"{other} and {name} are both on port {port}: DMS serves each API on its own port; "
                        f"give {name} another (--{name.replace('_', '-')})"
                    )
            seen[(host, port)] = name
        return self

    @model_validator(mode="after")
    def _check_frontends(self) -> ServerSettings:
        if self.frontends == 1:
            return self
        if self.ray_address is not None:
            raise ValueError("frontends > 1 cannot be combined with ray_address: run one DMS per machine instead")
        if not hasattr(socket, "SO_REUSEPORT"):
            raise ValueError("frontends > 1 needs SO_REUSEPORT, which this platform lacks")
        if self.kill_after_s is not None:
            raise ValueError("kill_after_s watches one process's requests: it cannot be combined with frontends > 1")
        shared = {"inference_address": self.inference_address}
        if self.grpc_enabled:
            shared["grpc_address"] = self.grpc_address
        for name, address in shared.items():
            if parse_address(address)[1] == 0:
                raise ValueError(f"frontends > 1 share {name}'s port, so it must be a fixed port, not 0")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _FILES.torchserve is not None:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=_FILES.torchserve))
        if _FILES.toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_FILES.toml))
        return tuple(sources)


class _Files:
    """The files of one ``load_settings`` call: pydantic-settings asks for sources on the class, so they are
    handed over here for the duration of one construction."""

    toml: Path | None = None
    torchserve: dict[str, Any] | None = None


_FILES = _Files()


def load_settings(
    config_file: Path | None = None, torchserve: dict[str, Any] | None = None, **overrides: Any
) -> ServerSettings:
    """Build settings from defaults < TOML file < TorchServe's ``config.properties`` (``torchserve``: what
    ``dms.torchserve_config`` read from it) < ``DMS_*`` env < ``overrides`` (CLI flags)."""
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"config file {config_file} does not exist")
    _FILES.toml, _FILES.torchserve = config_file, torchserve
    try:
        clean = {key: value for key, value in overrides.items() if value is not None}
        return ServerSettings(**clean)
    finally:
        _FILES.toml = _FILES.torchserve = None
