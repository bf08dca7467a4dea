"""Per-model settings: from the archive's model config YAML, overridable at registration.

Keys are ours in snake_case with units (``max_batch_delay_ms``); TorchServe's camelCase keys
(``minWorkers``, ``batchSize``, ``maxBatchDelay``, ``responseTimeout``) are accepted too, so its
``model-config.yaml`` files work unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from dms.errors import ArchiveError, InputError
from dms.settings import ServerSettings


class RayPlacement(BaseModel):
    """What each of a model's workers asks of a Ray cluster (``dms serve --ray-address``): Ray's actor resources."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    memory_mb: int | None = Field(default=None, ge=1)
    """Memory Ray reserves for the worker on its node (a scheduling promise, not a limit)."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Custom resources a node must offer, e.g. ``{"accelerator_type:A100": 0.01}``."""
    strategy: Literal["SPREAD", "DEFAULT"] = "SPREAD"
    """``SPREAD``: the workers go to as many nodes as can take them (one node's death takes fewer); ``DEFAULT``:
    Ray packs them where it likes."""
    target_queue_per_worker: float = Field(default=0.0, ge=0)
    """Requests waiting per ready worker above which the workers grow towards ``max_workers`` (after
    ``upscale_after_s``); with none waiting and a worker idle for ``downscale_after_s`` they shrink towards
    ``min_workers``. 0: the model's batch size (a full batch waiting for each worker)."""
    upscale_after_s: float = Field(default=2.0, ge=0)
    downscale_after_s: float = Field(default=30.0, ge=0)


class ModelConfig(BaseModel):
    """Validated settings of one model version; ``None`` means: the server default."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    initial_workers: int | None = Field(
        default=None, ge=0, validation_alias=AliasChoices("initial_workers", "minWorkers")
    )
    max_workers: int | None = Field(default=None, ge=0, validation_alias=AliasChoices("max_workers", "maxWorkers"))
    batch_size: int | None = Field(default=None, ge=1, validation_alias=AliasChoices("batch_size", "batchSize"))
    max_batch_delay_ms: float | None = Field(
        default=None, ge=0, validation_alias=AliasChoices("max_batch_delay_ms", "maxBatchDelay")
    )
    response_timeout_s: float | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("response_timeout_s", "responseTimeout")
    )
    startup_timeout_s: float | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("startup_timeout_s", "startupTimeout")
    )
    job_queue_size: int | None = Field(
        default=None, ge=1, validation_alias=AliasChoices("job_queue_size", "jobQueueSize")
    )
    worker_memory_limit_mb: int | None = Field(
        default=None, ge=1, validation_alias=AliasChoices("worker_memory_limit_mb", "workerMemoryLimitMb")
    )
    """Replace a worker whose resident memory passes this many MiB (none by default)."""
    single_input_any_name: bool | None = None
    """A model with one input takes a request's one input whatever its name, as KServe's own model servers do
    (on for bare model files, ``dms.archive.bare``); otherwise a request must name the model's input."""
    generative: bool = False
    """The model generates text, a chunk at a time: it is served by the Open Inference Protocol's generate
    extension (``/v2/models/{name}/generate`` and ``/generate_stream``) and the OpenAI-compatible endpoints
    (``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``). Its handler gets, per request, the
    generation request (``prompt``, ``messages``, ``max_tokens``, ``temperature``, ``stop``...) and returns a
    generator of text pieces, or the whole text (``docs/streaming.md``)."""
    continuous_batching: bool = Field(
        default=False, validation_alias=AliasChoices("continuous_batching", "continuousBatching")
    )
    """Requests that arrive while a worker streams join its running generators between two of their steps
    (iteration-level batching), rather than waiting for its batch to end: for a handler whose generators may be
    advanced alongside those of later batches (``docs/streaming.md``)."""
    handler: dict[str, Any] = Field(default_factory=dict)
    """Options for the handler (``context.model_yaml_config["handler"]``)."""
    runtime: dict[str, Any] = Field(default_factory=dict)
    """Options for the runtime, e.g. ``{"intra_op_threads": 1}`` for ONNX Runtime."""
    ray: RayPlacement = Field(default_factory=RayPlacement)
    """Where the workers go on a Ray cluster, and how they scale there (ignored without ``--ray-address``)."""

    def merged(self, overrides: dict[str, Any]) -> ModelConfig:
        """A copy with ``overrides`` (non-None values only) applied on top."""
        data = self.model_dump()
        data.update({key: value for key, value in overrides.items() if value is not None})
        try:
            return ModelConfig.model_validate(data)
        except ValidationError as exc:
            raise InputError(f"invalid model settings: {_summary(exc)}") from exc

    def resolve(self, settings: ServerSettings) -> ResolvedModelConfig:
        """Fill every unset value from the server's defaults, within the server's ceilings."""
        for field, value, ceiling in (
            ("initial_workers", self.initial_workers, settings.max_workers_per_model),
            ("batch_size", self.batch_size, settings.max_batch_size),
        ):
            if value is not None and value > ceiling:
                raise InputError(f"{field} {value} is over the server's ceiling of {ceiling}")
        workers = self.initial_workers if self.initial_workers is not None else settings.default_workers_per_model
        return ResolvedModelConfig(
            initial_workers=workers,
            max_workers=max(workers, self.max_workers or workers),
            batch_size=self.batch_size or settings.batch_size,
            max_batch_delay_ms=_first(self.max_batch_delay_ms, settings.max_batch_delay_ms),
            response_timeout_s=self.response_timeout_s or settings.response_timeout_s,
            startup_timeout_s=self.startup_timeout_s or settings.startup_timeout_s,
            job_queue_size=self.job_queue_size or settings.job_queue_size,
            worker_memory_limit_mb=self.worker_memory_limit_mb,
            generative=self.generative,
            continuous_batching=self.continuous_batching,
            ray=self.ray,
            raw=self.model_dump(mode="json"),
        )


class ResolvedModelConfig(BaseModel):
    """A model version's effective settings, every value known."""

    model_config = ConfigDict(frozen=True)

    initial_workers: int
    max_workers: int
    batch_size: int
    max_batch_delay_ms: float
    response_timeout_s: float
    startup_timeout_s: float
    job_queue_size: int
    worker_memory_limit_mb: int | None
    generative: bool = False
    continuous_batching: bool = False
    ray: RayPlacement
    raw: dict[str, Any]
    """The whole config as given (handler and runtime options included), for the worker."""


def _first(value: float | None, default: float) -> float:
    return default if value is None else value


def _summary(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}" for err in exc.errors())


def parse_model_config(text: str | bytes, source: str) -> ModelConfig:
    """Parse a model config YAML (safe loader only) into a validated ``ModelConfig``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ArchiveError(f"model config {source} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ArchiveError(f"model config {source} must be a mapping, got {type(data).__name__}")
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise ArchiveError(f"model config {source} is invalid: {_summary(exc)}") from exc
