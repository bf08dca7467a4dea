"""Run batches through the user's handler: build inputs, call once per batch, encode outputs."""

from __future__ import annotations

import functools
import logging
import time
import traceback
from typing import Any

import msgspec

from dms import __version__
from dms.context import Context, RequestProcessor
from dms.errors import DMSError, HandlerError, InputError, InternalError
from dms.messages import (
    PROTOCOL_GENERATE,
    TENSOR_PROTOCOLS,
    Batch,
    BatchResult,
    BatchTimings,
    LoadModel,
    ModelLoaded,
    RequestItem,
    ResponseItem,
    TensorMeta,
)
from dms.runtimes import TensorSpec
from dms.runtimes.base import declared_specs
from dms.worker.generation import TextLimits
from dms.worker.handler_loader import load_handler
from dms.worker.inputs import build_request_data
from dms.worker.joined import Running
from dms.worker.outputs import encode_output
from dms.worker.protocols import TensorModel, run_tensor_requests, undecodable
from dms.worker.streaming import BatchStreams, Outlet, error_item, is_stream

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
        self.continuous = bool(load.config.get("continuous_batching"))
        """Batches that arrive while this model streams join its running generators (``dms.worker.joined``)."""
        self.context.system_properties["cpu_threads"] = load.cpu_threads
        self.context.system_properties["limits"] = msgspec.structs.asdict(load.limits)
        handler_spec = str(load.manifest.get("model", {}).get("handler", ""))
        self.handle = load_handler(handler_spec, load.model_dir, self.context)
        self.handler_object = getattr(self.handle, "__self__", None)
        runtime = getattr(self.handler_object, "runtime", None)
        inputs, outputs = _signature(runtime, load.config)
        self.platform = str(getattr(runtime, "platform", "python"))
        self.inputs, self.outputs = inputs, outputs
        self.tensor_model = TensorModel(
            name=load.model_name,
            version=load.model_version,
            runtime=runtime,
            inputs=inputs,
            output_names=[spec.name for spec in outputs],
            handle=self.handle,
            context=self.context,
            max_elements=load.limits.max_tensor_elements,
            any_input_name=bool(load.config.get("single_input_any_name")),
            envelope="" if load.service_envelope == "none" else load.service_envelope,
        )

    def loaded_message(self, pid: int) -> ModelLoaded:
        from dms.oip.tensors import datatype_of_numpy_name

        def meta(specs: list[TensorSpec]) -> list[TensorMeta]:
            return [
                TensorMeta(s.name, datatype_of_numpy_name(s.dtype), list(s.shape) if s.shape is not None else [-1])
                for s in specs
            ]

        return ModelLoaded(pid=pid, inputs=meta(self.inputs), outputs=meta(self.outputs), platform=self.platform)

    def run_batch(self, batch: Batch, withdrawn: set[int] | None = None, outlet: Outlet | None = None) -> BatchResult:
        """Answer each request of ``batch``; those in ``withdrawn`` (their clients went away) are skipped. Chunks of
        requests that asked for ``stream`` go out through ``outlet`` as they are made (``dms.worker.streaming``);
        without one, every request's chunks are joined into its answer."""
        started = self.begin_batch(batch, withdrawn, outlet, defer=False)
        assert isinstance(started, BatchResult)
        return started

    def begin_batch(
        self, batch: Batch, withdrawn: set[int] | None, outlet: Outlet | None, defer: bool = True
    ) -> BatchResult | Running:
        """``run_batch``; but with ``defer``, a batch whose handler returned generators comes back ``Running``:
        its generators not yet advanced, to take turns with other batches' (``dms.worker.joined``)."""
        results: list[ResponseItem | None] = [None] * len(batch.items)
        if withdrawn:
            for index in withdrawn & set(range(len(results))):
                results[index] = _WITHDRAWN
        live = [(i, item) for i, item in enumerate(batch.items) if results[i] is None]
        raw = [(i, item) for i, item in live if item.protocol not in TENSOR_PROTOCOLS]
        tensor = [(i, item) for i, item in live if item.protocol in TENSOR_PROTOCOLS]
        timings = BatchTimings()
        streams = BatchStreams(batch, outlet, self.model_name, self.limits.max_response_bytes)
        streams.defer = defer
        if raw:
            self._run_raw(raw, results, timings, streams)
        if tensor:
            model = self.tensor_model
            answers, (decode_ns, infer_ns, encode_ns) = run_tensor_requests(model, tensor, error_item, streams)
            for index, answer in answers:
                results[index] = answer
            timings.input_ns += decode_ns
            timings.infer_ns += infer_ns
            timings.output_ns += encode_ns
        if streams.deferred:
            conclude = functools.partial(self._conclude, results, timings, batch)
            return Running(batch, streams, streams.deferred, {}, conclude)
        return self._conclude(results, timings, batch, {})

    def _conclude(
        self, results: list[ResponseItem | None], timings: BatchTimings, batch: Batch, finals: dict[int, ResponseItem]
    ) -> BatchResult:
        """The batch's result, with the last words of its deferred generators (``finals``)."""
        for index, last in finals.items():
            results[index] = last
        if self.limits.max_response_bytes:
            self._drop_oversized(results)
        return BatchResult(batch_id=batch.batch_id, items=[r for r in results if r is not None], timings=timings)

    def _drop_oversized(self, results: list[ResponseItem | None]) -> None:
        limit = self.limits.max_response_bytes
        for index, result in enumerate(results):
            if result is not None and len(result.body) > limit:
                log.error("model %s: an answer of %d bytes is over %d", self.model_name, len(result.body), limit)
                message = f"model {self.model_name}: the answer of {len(result.body)} bytes is over "
                results[index] = error_item(InternalError(message + f"max_response_size_bytes ({limit})"))

    def failed_batch(self, batch: Batch, exc: BaseException) -> BatchResult:
        """Every request of ``batch`` answered with ``exc``: what a batch gets when running it raised past the
        per-request handling (the worker lives on to take the next one)."""
        log.error("model %s: batch %d failed\n%s", self.model_name, batch.batch_id, traceback.format_exc())
        error = error_item(InternalError(f"model {self.model_name}: the batch failed: {type(exc).__name__}: {exc}"))
        return BatchResult(batch_id=batch.batch_id, items=[error] * len(batch.items), timings=BatchTimings())

    def _run_raw(
        self,
        indexed: list[tuple[int, RequestItem]],
        results: list[ResponseItem | None],
        timings: BatchTimings,
        streams: BatchStreams,
    ) -> None:
        procs = {
            i: RequestProcessor(item.request_id, {k.lower(): v for k, v in item.headers}, i) for i, item in indexed
        }
        ready: list[int] = []
        inputs: list[dict[str, Any]] = []
        started = time.perf_counter_ns()
        for index, item in indexed:
            try:
                data = build_request_data(item, self.limits)
                if item.protocol == PROTOCOL_GENERATE:
                    streams.limit(index, TextLimits.of(data.get("body")))
                inputs.append(data)
                ready.append(index)
            except DMSError as exc:
                results[index] = error_item(exc)
            except Exception as exc:
                results[index] = error_item(undecodable(item.request_id, exc))
        decoded = time.perf_counter_ns()
        if ready:
            self.context.chunk_sink = streams  # the batch's own, for as long as its handler runs
            answers = self._call(inputs, [procs[i] for i in ready], streams)
            if streams.generators:
                self._run_streams(ready, answers, procs, results, streams)
            else:
                for index, answer in zip(ready, answers, strict=True):
                    results[index] = answer
        handler_ns = time.perf_counter_ns() - decoded
        stages = getattr(self.handler_object, "last_timings", None)
        if stages is not None:
            pre, infer, _ = stages
            timings.input_ns += decoded - started + pre
            timings.infer_ns += infer
            timings.output_ns += max(0, handler_ns - pre - infer)
        else:
            timings.input_ns += decoded - started
            timings.infer_ns += handler_ns

    def _run_streams(
        self,
        ready: list[int],
        answers: list[Any],
        procs: dict[int, RequestProcessor],
        results: list[ResponseItem | None],
        streams: BatchStreams,
    ) -> None:
        """Answers some of which are generators: those run to their ends (``BatchStreams.pump``)."""
        generators = {}
        for index, answer in zip(ready, answers, strict=True):
            if type(answer) is ResponseItem:
                results[index] = answer
            else:
                generators[index] = (answer, procs[index])
        if streams.defer:
            streams.deferred.update(generators)
            return
        for index, last in streams.pump(generators).items():
            results[index] = last

    def _call(
        self, inputs: list[dict[str, Any]], procs: list[RequestProcessor], streams: BatchStreams
    ) -> list[ResponseItem | Any]:
        """Each request's answer, or the generator of its chunks (run by ``BatchStreams.pump``)."""
        self.context.start_batch(procs)
        try:
            outputs = self.handle(inputs, self.context)
            self._check_count(outputs, len(inputs))
            name = self.model_name
            if not streams.touched:  # the usual case: one whole answer each
                try:
                    return [encode_output(out, proc, name) for out, proc in zip(outputs, procs, strict=True)]
                except HandlerError:  # a result that is not JSON: a generator, or the handler's mistake
                    if not any(map(is_stream, outputs)):
                        raise
            streams.generators = True
            return [
                out if is_stream(out) else streams.last_word(proc, encode_output(out, proc, name))
                for out, proc in zip(outputs, procs, strict=True)
            ]
        except Exception as exc:
            if len(inputs) > 1:
                # One bad request must not fail its neighbours: retry each on its own (not one that has sent
                # chunks of its answer already: its client has them).
                return [
                    streams.last_word(proc, self._failure(exc, proc.request_id))
                    if proc.batch_index in streams.sent
                    else self._call([data], [proc], streams)[0]
                    for data, proc in zip(inputs, procs, strict=True)
                ]
            return [streams.last_word(procs[0], self._failure(exc, procs[0].request_id))]

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

    def _failure(self, exc: Exception, request_id: str) -> ResponseItem:
        if isinstance(exc, DMSError):
            if not isinstance(exc, InputError):
                log.error("model %s, request %s: %s", self.model_name, request_id, exc.message)
            return error_item(exc)
        log.error("model %s, request %s: handler raised\n%s", self.model_name, request_id, traceback.format_exc())
        message = f"model {self.model_name}: handler raised {type(exc).__name__}: {exc}"
        return error_item(HandlerError(message[:_MAX_MESSAGE]))


def _signature(runtime: Any, config: dict[str, Any]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The model's inputs and outputs: from its runtime, or from ``inputs``/``outputs`` in the model config."""
    if runtime is not None:
        return list(runtime.inputs), list(runtime.outputs)
    return declared_specs(config.get("inputs")), declared_specs(config.get("outputs"))


_WITHDRAWN = error_item(InternalError("not run: its client went away before the batch started"))
"""The answer to a withdrawn request: a placeholder, as nobody is waiting for it any more."""
