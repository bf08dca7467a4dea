"""The handler flow users extend: initialize → (preprocess → inference → postprocess) per batch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from dms.context import Context
from dms.errors import ArchiveError, InputError
from dms.handlers.imaging import DEFAULT_MAX_PIXELS, ImageRecipe
from dms.runtimes import Runtime, load_runtime


class BaseHandler:
    """Loads the archive's serialized file with its runtime; subclasses shape inputs and outputs."""

    context: Context
    runtime: Runtime
    model_dir: Path
    options: dict[str, Any]
    last_timings: tuple[int, int, int] | None = None
    """(preprocess, inference, postprocess) nanoseconds of the last batch, for statistics."""

    def initialize(self, context: Context) -> None:
        self.context = context
        self.model_dir = Path(context.system_properties["model_dir"])
        self.options = dict(context.model_yaml_config.get("handler") or {})
        self.limits: dict[str, int] = dict(context.system_properties.get("limits") or {})
        model = context.manifest.get("model", {})
        serialized = model.get("serializedFile")
        if not serialized:
            raise ArchiveError(f"model {context.model_name}: the manifest names no serializedFile")
        model_file = model.get("modelFile")
        self.runtime = load_runtime(
            self.model_dir / str(serialized),
            dict(context.model_yaml_config.get("runtime") or {}),
            int(context.system_properties.get("cpu_threads") or 1),
            model_file=self.model_dir / str(model_file) if model_file else None,
            declared=context.model_yaml_config,
        )

    def image_recipe(self, **defaults: Any) -> ImageRecipe:
        """The model config's image options over ``defaults``, capped by the server's ``max_image_pixels``."""
        return ImageRecipe(self.options, int(self.limits.get("max_image_pixels", DEFAULT_MAX_PIXELS)), **defaults)

    # Subclasses choose what flows between the steps (named arrays for most, one call per image for
    # detectors), so the step types here are deliberately open.
    def preprocess(self, data: list[dict[str, Any]]) -> Any:
        raise NotImplementedError

    def inference(self, feeds: Any) -> Any:
        result: dict[str, np.ndarray] = self.runtime.run(feeds)
        return result

    def postprocess(self, outputs: Any) -> list[Any]:
        raise NotImplementedError

    def handle(self, data: list[dict[str, Any]] | None, context: Context) -> list[Any] | None:
        if data is None:
            return None
        started = time.perf_counter_ns()
        feeds = self.preprocess(data)
        inferred = time.perf_counter_ns()
        outputs = self.inference(feeds)
        finished = time.perf_counter_ns()
        results = self.postprocess(outputs)
        self.last_timings = (inferred - started, finished - inferred, time.perf_counter_ns() - finished)
        return results


def request_payload(row: dict[str, Any]) -> Any:
    """The request's main payload: a ``data`` form field or the raw ``body``, as TorchServe reads it."""
    for key in ("data", "body"):
        if key in row:
            return row[key]
    if len(row) == 1:
        return next(iter(row.values()))
    raise InputError(f"request has no 'data' or 'body' field (fields: {sorted(row)})")
