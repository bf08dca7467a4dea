"""Tensor answers made a piece at a time: Triton's decoupled models, inside a worker.

A custom handler may return, for a request of a tensor protocol, a generator (or any iterator, or an async
generator) of results in place of one result: each item is one response, a dict of named arrays or one array,
as a whole result is. The generator may make none, one or many.

- A request of gRPC ``ModelStreamInfer`` (``RequestItem.stream``) gets each response as its own
  ``ModelInferResponse`` as it is made, with the ``triton_final_response`` parameter false. When the generator
  ends, an empty response whose ``triton_final_response`` is true follows if the request asked for it with
  ``triton_enable_empty_final_response``, as Triton's clients expect; else nothing more. A whole result to such a
  request is one response whose ``triton_final_response`` is true. The chunks go through ``BatchStreams`` as a
  handler's other chunks do (turns, credits, departures).
- Any other request (``ModelInfer``, REST ``infer``, KServe v1; or any request through a Ray actor, which does not
  stream) takes exactly one response: a generator that makes one is answered with it; one that makes none or
  several gets a 400 that names ``ModelStreamInfer``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from dms.context import RequestProcessor
from dms.errors import InputError
from dms.messages import PROTOCOL_V2_GRPC, ResponseItem
from dms.oip.grpc_codec import EMPTY_FINAL_PARAMETER, FINAL, NOT_FINAL, empty_final_response
from dms.oip.request import InferRequest
from dms.worker.streaming import BatchStreams, error_item, handler_failure


def flagged(item: ResponseItem, final: bool) -> ResponseItem:
    """A ``ModelStreamInfer`` request's response with its ``triton_final_response`` flag (errors as they are)."""
    if item.error is None and item.body:
        item.body += FINAL if final else NOT_FINAL
    return item


def wants_empty_final(request: InferRequest) -> bool:
    """The request asked for an empty final response after its generator's last (a ``DMSError`` when its
    parameter is not a bool, as Triton's)."""
    value = request.parameters.get(EMPTY_FINAL_PARAMETER)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InputError(f"parameter {EMPTY_FINAL_PARAMETER} must be a bool, not {type(value).__name__}")
    return value


Encode = Callable[[Any], ResponseItem]
"""One response of a request (a handler's result: named arrays, or one array) as that request's protocol answers."""


def answer_streams(
    model_name: str,
    model_version: str,
    streamed: list[tuple[int, RequestProcessor, InferRequest, Any, Encode]],
    streams: BatchStreams,
) -> list[tuple[int, ResponseItem]]:
    """Answer each (index, its processor, its request, its generator, its encoder); see the module's docstring."""
    answers: list[tuple[int, ResponseItem]] = []
    generators: dict[int, tuple[Any, RequestProcessor]] = {}
    for index, proc, request, stream, encode in streamed:
        item = streams.items[index]
        try:
            if item.protocol == PROTOCOL_V2_GRPC and index in streams.live:
                asked = request if wants_empty_final(request) else None
                streams.encoders[index] = _piece_encoder(encode)
                streams.final_forms[index] = functools.partial(_final, model_name, model_version, asked)
                generators[index] = (stream, proc)
            else:
                answers.append((index, _one_response(model_name, item.stream, streams, stream, encode)))
        except Exception as exc:  # its parameter, or its generator, raised: this request's failure alone
            answers.append((index, error_item(handler_failure(exc, model_name))))
    if streams.defer:  # continuous batching: they take turns with other batches' (``dms.worker.joined``)
        streams.deferred.update(generators)
        return answers
    answers += streams.pump(generators).items()
    return answers


def _final(model_name: str, model_version: str, asked: InferRequest | None, last: ResponseItem) -> ResponseItem:
    """A streamed request's last word: the empty final response it ``asked`` for, else nothing (or its error)."""
    if last.error is not None:
        return last
    body = empty_final_response(model_name, model_version, asked.id) if asked is not None else b""
    return ResponseItem(200, body, "application/grpc")


def _piece_encoder(encode: Encode) -> Callable[[Any, RequestProcessor], ResponseItem]:
    def piece(value: Any, proc: RequestProcessor) -> ResponseItem:
        return flagged(encode(value), final=False)

    return piece


def _one_response(
    model_name: str, final_flag: bool, streams: BatchStreams, stream: Any, encode: Encode
) -> ResponseItem:
    """The answer of a request that takes one response, from a generator that must make exactly one."""
    made = streams.first_two(stream)
    if len(made) != 1:
        count = "no response" if not made else "more than one response"
        raise InputError(
            f"model {model_name} made {count} to this request: a model that streams its responses is read through "
            f"gRPC ModelStreamInfer"
        )
    answer = encode(made[0])
    return flagged(answer, final=True) if final_flag else answer
