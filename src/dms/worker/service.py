"""Run batches through the user's handler: build inputs, call once per batch, encode outputs."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import msgspec

from dms import __version__
from dms.engine.messages import Batch, BatchResult, ErrorInfo, LoadModel, ResponseItem
from dms.errors import DMSError, HandlerError, InputError
from dms.worker.context import Context, RequestProcessor
from dms.worker.handler_loader import load_handler
from dms.worker.inputs import build_request_data
from dms.worker.outputs import encode_output

log = logging.getLogger("dms.worker")
_MAX_MESSAGE = 1000


class ModelService:
    """One loaded model version inside a worker process."""

    def __init__(self, load: LoadModel) -> None:
        self.model_name = load.model_name
        self.context = Context(
            model_name=load.model_name,
            model_dir=load.model_dir,
            manifest=load.manifest,
            batch_size=load.batch_size,
            gpu_id=load.gpu_id,
            server_name="DMS",
            server_version=__version__,
            model_yaml_config=load.config,
        )
        self.limits = load.limits
        self.context.system_properties["cpu_threads"] = load.cpu_threads
        self.context.system_properties["limits"] = msgspec.structs.asdict(load.limits)
        handler_spec = str(load.manifest.get("model", {}).get("handler", ""))
        self.handle = load_handler(handler_spec, load.model_dir, self.context)

    def run_batch(self, batch: Batch) -> BatchResult:
        procs = [RequestProcessor(i.request_id, {k.lower(): v for k, v in i.headers}) for i in batch.items]
        results: list[ResponseItem | None] = [None] * len(batch.items)
        ready: list[int] = []
        inputs: list[dict[str, Any]] = []
        for index, item in enumerate(batch.items):
            try:
                inputs.append(build_request_data(item, self.limits))
                ready.append(index)
            except DMSError as exc:
                results[index] = _error_item(exc)
        if ready:
            for index, result in zip(ready, self._call(inputs, [procs[i] for i in ready]), strict=True):
                results[index] = result
        return BatchResult(batch_id=batch.batch_id, items=[r for r in results if r is not None])

    def _call(self, inputs: list[dict[str, Any]], procs: list[RequestProcessor]) -> list[ResponseItem]:
        self.context.start_batch(procs)
        try:
            outputs = self.handle(inputs, self.context)
            self._check_count(outputs, len(inputs))
            return [encode_output(out, proc, self.model_name) for out, proc in zip(outputs, procs, strict=True)]
        except Exception as exc:
            if len(inputs) > 1:
                # One bad request must not fail its neighbours: retry each on its own.
                return [self._call([data], [proc])[0] for data, proc in zip(inputs, procs, strict=True)]
            return [self._failure(exc)]

    def _check_count(self, outputs: Any, expected: int) -> None:
        if not isinstance(outputs, list | tuple):
            raise HandlerError(
                f"model {self.model_name}: handler returned {type(outputs).__name__}, "
                f"expected a list with one result per request"
            )
        if len(outputs) != expected:
            raise HandlerError(
                f"model {self.model_name}: handler returned {len(outputs)} results for a batch of {expected} requests"
            )

    def _failure(self, exc: Exception) -> ResponseItem:
        if isinstance(exc, DMSError):
            if not isinstance(exc, InputError):
                log.error("model %s: %s", self.model_name, exc.message)
            return _error_item(exc)
        log.error("model %s: handler raised\n%s", self.model_name, traceback.format_exc())
        message = f"model {self.model_name}: handler raised {type(exc).__name__}: {exc}"
        return _error_item(HandlerError(message[:_MAX_MESSAGE]))


def _error_item(exc: DMSError) -> ResponseItem:
    return ResponseItem(
        status=0,
        body=b"",
        content_type="",
        error=ErrorInfo(type_name=exc.type_name, message=exc.message[:_MAX_MESSAGE]),
    )
