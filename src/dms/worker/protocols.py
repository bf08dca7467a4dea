"""Tensor-protocol requests inside a worker: Open Inference Protocol (REST, gRPC) and KServe v1.

Built-in handlers hand the named tensors straight to their runtime, batching concurrent
requests along dimension 0; custom handlers get each request's tensors as named numpy arrays in
``data`` and return, per request, a dict of named arrays (or one array).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from dms.context import Context, RequestProcessor
from dms.errors import DMSError, HandlerError, InputError
from dms.messages import PROTOCOL_V1, PROTOCOL_V2_GRPC, Batch, RequestItem, ResponseItem
from dms.oip.grpc_codec import decode_grpc_request, encode_grpc_response
from dms.oip.request import InferRequest
from dms.oip.rest_codec import HEADER_LENGTH, decode_rest_request, encode_rest_response
from dms.oip.v1_codec import decode_v1_body, encode_v1_response
from dms.runtimes import Runtime, TensorSpec
from dms.runtimes.tensor_exec import run_named
from dms.worker import envelopes
from dms.worker.streaming import BatchStreams, handler_failure, is_stream
from dms.worker.tensor_streams import answer_streams, flagged

log = logging.getLogger("dms.worker")


@dataclass
class Decoded:
    index: int
    item: RequestItem
    request: InferRequest
    v1_key: str = ""


@dataclass
class TensorModel:
    """What the protocol path needs to know about the loaded model."""

    name: str
    version: str
    runtime: Runtime | None
    inputs: list[TensorSpec]
    output_names: list[str]
    handle: Any
    context: Context
    max_elements: int
    any_input_name: bool = False
    """``single_input_any_name``: a request's one input feeds the model's one input, whatever its name."""
    envelope: str = ""
    """TorchServe's ``service_envelope`` for a handler without a runtime (``dms.worker.envelopes``)."""


def run_tensor_requests(
    model: TensorModel,
    indexed: list[tuple[int, RequestItem]],
    error_item: Any,
    streams: BatchStreams | None = None,
) -> tuple[list[tuple[int, ResponseItem]], tuple[int, int, int]]:
    """Answer each (index, item); also (decode, infer, encode) nanoseconds. A custom handler's generators of
    results run through ``streams`` (``dms.worker.tensor_streams``; without it, each must make one result)."""
    if model.envelope and model.runtime is None:
        enveloped: list[tuple[int, RequestItem]] = []
        rest: list[tuple[int, RequestItem]] = []
        for pair in indexed:
            (enveloped if envelopes.applies(model.envelope, pair[1].protocol) else rest).append(pair)
        if enveloped:
            done, timings = _run_enveloped(model, enveloped, error_item)
            if not rest:
                return done, timings
            more, (decode_ns, infer_ns, encode_ns) = run_tensor_requests(_plain(model), rest, error_item)
            return done + more, (timings[0] + decode_ns, timings[1] + infer_ns, timings[2] + encode_ns)
    answers: list[tuple[int, ResponseItem]] = []
    decoded: list[Decoded] = []
    started = time.perf_counter_ns()
    for index, item in indexed:
        try:
            decoded.append(_decode(model, index, item))
        except DMSError as exc:
            answers.append((index, error_item(exc)))
        except Exception as exc:  # MemoryError, numpy's ValueError...: this request's fault, never the worker's end
            answers.append((index, error_item(undecodable(item.request_id, exc))))
    inferred = time.perf_counter_ns()
    outcomes = _infer(model, decoded) if decoded else []
    streamed: list[tuple[int, RequestProcessor, InferRequest, Any, Any]] = []
    for entry, outcome in zip(decoded, outcomes, strict=True):
        if type(outcome) is not dict and is_stream(outcome):
            encode = functools.partial(_encode_result, model, entry)
            streamed.append((entry.index, _processor(entry), entry.request, outcome, encode))
    if streamed:
        if streams is None:
            streams = BatchStreams(Batch(0, [item for _, item in indexed]), None, model.name)
        answers += answer_streams(model.name, model.version, streamed, streams)
    finished = time.perf_counter_ns()
    for entry, outcome in zip(decoded, outcomes, strict=True):
        try:
            if isinstance(outcome, DMSError):
                raise outcome
            if type(outcome) is not dict:
                continue  # a generator, answered above
            answers.append((entry.index, _encode(model, entry, outcome)))
        except DMSError as exc:
            answers.append((entry.index, error_item(exc)))
        except Exception as exc:
            log.exception("model %s, request %s: the answer could not be encoded", model.name, entry.item.request_id)
            message = f"model {model.name}: the answer could not be encoded: {type(exc).__name__}: {exc}"
            answers.append((entry.index, error_item(HandlerError(message[:1000]))))
    return answers, (inferred - started, finished - inferred, time.perf_counter_ns() - finished)


def _plain(model: TensorModel) -> TensorModel:
    return dataclasses.replace(model, envelope="")


def _run_enveloped(
    model: TensorModel, indexed: list[tuple[int, RequestItem]], error_item: Any
) -> tuple[list[tuple[int, ResponseItem]], tuple[int, int, int]]:
    """Requests under a service envelope: every row of the batch's requests through the handler in one call."""
    answers: list[tuple[int, ResponseItem]] = []
    entries: list[envelopes.Enveloped] = []
    started = time.perf_counter_ns()
    for index, item in indexed:
        try:
            entries.append(envelopes.unwrap(index, item, model.max_elements))
        except DMSError as exc:
            answers.append((index, error_item(exc)))
        except Exception as exc:
            answers.append((index, error_item(undecodable(item.request_id, exc))))
    inferred = time.perf_counter_ns()
    outcomes = _handle_rows(model, entries) if entries else []
    finished = time.perf_counter_ns()
    for entry, outcome in zip(entries, outcomes, strict=True):
        try:
            if isinstance(outcome, DMSError):
                raise outcome
            answers.append((entry.index, envelopes.wrap(entry, outcome, model.name, model.version)))
        except DMSError as exc:
            answers.append((entry.index, error_item(exc)))
        except Exception as exc:
            answers.append((entry.index, error_item(handler_failure(exc, model.name))))
    return answers, (inferred - started, finished - inferred, time.perf_counter_ns() - finished)


def _handle_rows(model: TensorModel, entries: list[envelopes.Enveloped]) -> list[list[Any] | DMSError]:
    """Each request's share of the handler's results; a batch that fails is run again request by request, so
    that one bad request fails alone."""
    model.context.start_batch(envelopes.processors(entries))
    try:
        rows = [row for entry in entries for row in entry.rows]
        results = model.handle(rows, model.context)
        return list(envelopes.split(results, entries, model.name))
    except Exception as exc:
        if len(entries) > 1:
            return [outcome for entry in entries for outcome in _handle_rows(model, [entry])]
        if not isinstance(exc, DMSError):
            log.error("model %s, request %s: handler raised", model.name, entries[0].item.request_id, exc_info=True)
        return [handler_failure(exc, model.name)]


def undecodable(request_id: str, exc: Exception) -> InputError:
    """The error of a request whose decoding raised something other than a ``DMSError``: a 400 naming it."""
    log.warning("request %s could not be decoded: %s: %s", request_id, type(exc).__name__, exc)
    return InputError(f"the request could not be decoded: {type(exc).__name__}: {exc}"[:1000])


def _decode(model: TensorModel, index: int, item: RequestItem) -> Decoded:
    decoded = _decode_request(model, index, item)
    inputs = decoded.request.inputs
    if model.any_input_name and len(model.inputs) == 1 and len(inputs) == 1 and model.inputs[0].name not in inputs:
        decoded.request.inputs = {model.inputs[0].name: next(iter(inputs.values()))}
    return decoded


def _decode_request(model: TensorModel, index: int, item: RequestItem) -> Decoded:
    if item.protocol == PROTOCOL_V2_GRPC:
        return Decoded(index, item, decode_grpc_request(item.body, model.max_elements))
    if item.protocol == PROTOCOL_V1:
        key, values = decode_v1_body(item.body)
        if model.runtime is None:
            named = values if isinstance(values, dict) else {key: values}
            return Decoded(index, item, InferRequest(inputs={k: _as_array(v) for k, v in named.items()}), key)
        if isinstance(values, dict):
            return Decoded(index, item, InferRequest(inputs=values), key)
        if len(model.inputs) != 1:
            raise InputError(f'this model has {len(model.inputs)} inputs: send {{"inputs": {{name: data}}}}')
        return Decoded(index, item, InferRequest(inputs={model.inputs[0].name: values}), key)
    header = next((value for name, value in item.headers if name.lower() == HEADER_LENGTH), None)
    return Decoded(index, item, decode_rest_request(item.body, header, model.inputs, model.max_elements))


def _as_array(values: Any) -> np.ndarray:
    """KServe v1 JSON values as an array; bytes (from ``{"b64": ...}``) as an object array."""
    try:
        array = np.asarray(values)
    except ValueError as exc:  # ragged rows, such as [[1, 2], [3]]
        raise InputError(f"the values do not form a tensor (rows of different lengths?): {exc}") from None
    if array.dtype.kind in ("S", "U", "O"):
        array = np.asarray(values, dtype=object)
    return array


def _infer(model: TensorModel, decoded: list[Decoded]) -> list[dict[str, np.ndarray] | DMSError | Any]:
    """Each request's named outputs, its error, or (from a custom handler) its generator of results."""
    if model.runtime is not None:
        return run_named(model.runtime, [entry.request.inputs for entry in decoded], model.max_elements)
    model.context.start_batch([RequestProcessor(e.item.request_id, dict(e.item.headers)) for e in decoded])
    try:
        results = model.handle([entry.request.inputs for entry in decoded], model.context)
    except Exception as exc:
        if len(decoded) > 1:
            return [outcome for entry in decoded for outcome in _infer(model, [entry])]
        return [handler_failure(exc, model.name)]
    if not isinstance(results, list | tuple) or len(results) != len(decoded):
        count = len(results) if isinstance(results, list | tuple) else type(results).__name__
        error = HandlerError(f"model {model.name}: handler returned {count} results for {len(decoded)} requests")
        return [error] * len(decoded)
    return [result if is_stream(result) else _named_outputs(model, result) for result in results]


def _named_outputs(model: TensorModel, result: Any) -> dict[str, np.ndarray]:
    if isinstance(result, dict):
        return {str(name): np.asarray(value) for name, value in result.items()}
    name = model.output_names[0] if model.output_names else "output0"
    return {name: np.asarray(result)}


def _processor(entry: Decoded) -> RequestProcessor:
    return RequestProcessor(entry.item.request_id, dict(entry.item.headers), entry.index)


def _encode_result(model: TensorModel, entry: Decoded, result: Any) -> ResponseItem:
    """One of the results a handler's generator made for ``entry`` (``dms.worker.tensor_streams``)."""
    return _encode(model, entry, _named_outputs(model, result), streamed=True)


def _encode(
    model: TensorModel, entry: Decoded, produced: dict[str, np.ndarray], streamed: bool = False
) -> ResponseItem:
    if entry.item.protocol == PROTOCOL_V2_GRPC:
        body = encode_grpc_response(model.name, model.version, entry.request, produced)
        answer = ResponseItem(status=200, body=body, content_type="application/grpc")
        # A ModelStreamInfer request's whole answer is its final response; a generator's pieces are flagged
        # as they go out (dms.worker.tensor_streams).
        return flagged(answer, final=True) if entry.item.stream and not streamed else answer
    if entry.item.protocol == PROTOCOL_V1:
        if model.runtime is None or (len(produced) > 1 and entry.v1_key == "inputs"):
            result: Any = produced if len(produced) > 1 else next(iter(produced.values()))
        else:
            result = next(iter(produced.values()))
        return ResponseItem(status=200, body=encode_v1_response(entry.v1_key, result), content_type="application/json")
    body, content_type, headers = encode_rest_response(model.name, model.version, entry.request, produced)
    return ResponseItem(status=200, body=body, content_type=content_type, headers=headers)
