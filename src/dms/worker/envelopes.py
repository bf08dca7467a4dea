"""TorchServe's service envelopes: KServe requests handed to a TorchServe-style handler one row per instance.

Under ``service_envelope = "kserve"`` a KServe v1 ``{"instances": [...]}`` request reaches a custom handler as
one row per instance (an instance that is not an object becomes ``{"data": instance}``), and the handler's
results, one per row, come back as ``{"predictions": [...]}``. Under ``"kservev2"`` an Open Inference Protocol
request reaches it as one row per input (``{"name", "shape", "datatype", "data"}``: REST JSON as sent, gRPC and
binary inputs as lists), and each result becomes an output named ``predict``. A v1 explanation (``:explain``,
which reaches the handler with the header ``explain: True``) is answered ``{"explanations": [...]}``. This is how
TorchServe's KServe envelopes present requests, so handlers written for TorchServe behind KServe run unchanged.
Rows of the requests of one batch go to the handler in one call; each request gets its own rows' results.
Built-in tensor handlers and ``/predictions`` are not enveloped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from dms.context import RequestProcessor
from dms.errors import HandlerError, InputError
from dms.messages import PROTOCOL_V1, PROTOCOL_V2_GRPC, PROTOCOL_V2_REST, RequestItem, ResponseItem
from dms.oip.grpc_codec import decode_grpc_request, encode_grpc_response
from dms.oip.request import InferRequest
from dms.oip.rest_codec import HEADER_LENGTH, decode_rest_request
from dms.oip.tensors import datatype_of, to_json_data
from dms.oip.v1_codec import decode_v1_body, encode_v1_response

KSERVE = "kserve"
KSERVE_V2 = "kservev2"
OUTPUT_NAME = "predict"


@dataclass
class Enveloped:
    index: int
    item: RequestItem
    rows: list[Any]
    request_id: str = ""
    grpc_request: InferRequest | None = None


def applies(envelope: str, protocol: str) -> bool:
    """Whether requests of ``protocol`` are enveloped under ``envelope`` (for a handler without a runtime)."""
    if envelope == KSERVE:
        return protocol == PROTOCOL_V1
    return envelope == KSERVE_V2 and protocol in (PROTOCOL_V2_REST, PROTOCOL_V2_GRPC)


def unwrap(index: int, item: RequestItem, max_elements: int) -> Enveloped:
    """The rows a handler gets for ``item``."""
    if item.protocol == PROTOCOL_V1:
        _, values = decode_v1_body(item.body)
        if not isinstance(values, list):
            raise InputError('"instances" must be a list: the handler gets one row per instance')
        return Enveloped(index, item, [row if isinstance(row, dict) else {"data": row} for row in values])
    if item.protocol == PROTOCOL_V2_GRPC:
        request = decode_grpc_request(item.body, max_elements)
        return Enveloped(index, item, _rows_of(request), request.id, request)
    header = next((value for name, value in item.headers if name.lower() == HEADER_LENGTH), None)
    if header is not None:  # binary tensors: decoded and checked as for any model
        request = decode_rest_request(item.body, header, [], max_elements)
        return Enveloped(index, item, _rows_of(request), request.id)
    try:
        document = orjson.loads(item.body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"the inference request is not valid JSON: {exc}") from exc
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(inputs, list) or not all(isinstance(row, dict) for row in inputs):
        raise InputError('the inference request needs an "inputs" list of objects')
    request_id = document.get("id")
    return Enveloped(index, item, inputs, request_id if isinstance(request_id, str) else "")


def _rows_of(request: InferRequest) -> list[dict[str, Any]]:
    return [
        {"name": name, "shape": list(array.shape), "datatype": datatype_of(array), "data": array.tolist()}
        for name, array in request.inputs.items()
    ]


def processors(entries: list[Enveloped]) -> list[RequestProcessor]:
    """One per row, each with its request's id and headers (``context.get_request_header(row, ...)``)."""
    return [
        RequestProcessor(entry.item.request_id, {k.lower(): v for k, v in entry.item.headers})
        for entry in entries
        for _ in entry.rows
    ]


def split(results: Any, entries: list[Enveloped], model_name: str) -> list[list[Any]]:
    """The handler's results, one per row, cut back into each request's share."""
    rows = sum(len(entry.rows) for entry in entries)
    if not isinstance(results, list | tuple) or len(results) != rows:
        count = len(results) if isinstance(results, list | tuple) else type(results).__name__
        raise HandlerError(f"model {model_name}: handler returned {count} results for {rows} rows")
    shares, start = [], 0
    for entry in entries:
        shares.append(list(results[start : start + len(entry.rows)]))
        start += len(entry.rows)
    return shares


def wrap(entry: Enveloped, results: list[Any], model_name: str, model_version: str) -> ResponseItem:
    """The answer in the request's protocol."""
    if entry.item.protocol == PROTOCOL_V1:
        explaining = any(name.lower() == "explain" and value == "True" for name, value in entry.item.headers)
        body = encode_v1_response("instances", results, explaining)
        return ResponseItem(status=200, body=body, content_type="application/json")
    arrays = [_as_output(result) for result in results]
    if entry.grpc_request is not None:
        names = [OUTPUT_NAME] if len(arrays) == 1 else [f"{OUTPUT_NAME}_{i}" for i in range(len(arrays))]
        request = InferRequest(inputs={}, id=entry.grpc_request.id)
        body = encode_grpc_response(model_name, model_version, request, dict(zip(names, arrays, strict=True)))
        return ResponseItem(status=200, body=body, content_type="application/grpc")
    document = {
        "id": entry.request_id or entry.item.request_id,
        "model_name": model_name,
        "model_version": model_version,
        "outputs": [
            {"name": OUTPUT_NAME, "shape": list(a.shape), "datatype": datatype_of(a), "data": to_json_data(a)}
            for a in arrays
        ],
    }
    return ResponseItem(status=200, body=orjson.dumps(document), content_type="application/json")


def _as_output(result: Any) -> np.ndarray:
    """A result as a tensor: a scalar is a tensor of shape [1], as KServe's clients read it."""
    if hasattr(result, "detach"):  # a torch tensor
        result = result.detach().cpu().numpy()
    try:
        array = np.asarray(result)
    except ValueError as exc:
        raise HandlerError(f"a result does not form a tensor: {exc}") from None
    if array.dtype.kind in ("U", "S"):
        array = array.astype(object)
    return array.reshape(1) if array.ndim == 0 else array
