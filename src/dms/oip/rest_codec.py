"""The REST form of the protocol: a JSON header, optionally followed by binary tensor data.

``Inference-Header-Content-Length`` says where the JSON ends; each input with a
``binary_data_size`` parameter takes its bytes, in order, from what follows. A length of 0 means
the whole body is the raw data of the model's only input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from dms.errors import InputError
from dms.oip.request import InferRequest, RequestedOutput
from dms.oip.tensors import DEFAULT_MAX_ELEMENTS, datatype_of, from_json, from_raw, to_json_data, to_raw
from dms.tensor_spec import TensorSpec

HEADER_LENGTH = "inference-header-content-length"


def decode_rest_request(
    body: bytes, header_length: str | None, signature: list[TensorSpec], max_elements: int = DEFAULT_MAX_ELEMENTS
) -> InferRequest:
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise InputError(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
        if not 0 <= split <= len(body):
            raise InputError(f"Inference-Header-Content-Length {split} is outside the body of {len(body)} bytes")
        if split == 0:
            return _raw_body_request(body, signature)
    else:
        split = len(body)
    try:
        header = orjson.loads(body[:split])
    except orjson.JSONDecodeError as exc:
        raise InputError(f"the inference request is not valid JSON: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InputError('the inference request needs an "inputs" list')
    return _from_header(header, memoryview(body)[split:], max_elements)


def _from_header(header: dict[str, Any], binary: memoryview, max_elements: int) -> InferRequest:
    inputs: dict[str, np.ndarray] = {}
    input_parameters: dict[str, dict[str, Any]] = {}
    offset = 0
    for spec in header["inputs"]:
        if not isinstance(spec, dict):
            raise InputError("each input must be an object with name, shape, datatype and data")
        name, datatype, shape = _tensor_header(spec)
        parameters = _dict(spec.get("parameters"))
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InputError(f"input {name!r}: binary_data_size {size} runs past the binary data")
            array = from_raw(name, datatype, shape, binary[offset : offset + size], max_elements)
            offset += size
        else:
            if "data" not in spec:
                raise InputError(f"input {name!r} has neither data nor a binary_data_size parameter")
            array = from_json(name, datatype, shape, spec["data"], max_elements)
        if name in inputs:
            raise InputError(f"input {name!r} appears twice")
        inputs[name] = array
        input_parameters[name] = parameters
    if offset != len(binary):
        raise InputError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    requested = header.get("outputs") or []
    if not isinstance(requested, list):
        raise InputError('"outputs" must be a list of {"name": ...} objects')
    outputs = []
    for wanted in requested:
        if not isinstance(wanted, dict) or not isinstance(wanted.get("name"), str):
            raise InputError("each requested output must be an object with a name")
        outputs.append(RequestedOutput(wanted["name"], _dict(wanted.get("parameters"))))
    return InferRequest(
        inputs=inputs,
        id=str(header.get("id", "")),
        parameters=_dict(header.get("parameters")),
        input_parameters=input_parameters,
        outputs=outputs,
    )


_INTEGERS = {int}


def _tensor_header(spec: dict[str, Any]) -> tuple[str, str, list[int]]:
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise InputError("each input needs a string name and datatype")
    # Every dimension exactly an int (a bool is not), checked in C: cheaper than a generator per dimension.
    if not isinstance(shape, list) or (shape and set(map(type, shape)) != _INTEGERS):
        raise InputError(f"input {name!r}: shape must be a list of integers")
    return name, datatype, shape


def _dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError("parameters must be an object")
    return value


def _raw_body_request(body: bytes, signature: list[TensorSpec]) -> InferRequest:
    """The whole body is the only input's data; its datatype and shape come from the model."""
    from dms.oip.tensors import datatype_of_numpy_name, numpy_dtype

    if len(signature) != 1:
        raise InputError("a raw binary body (Inference-Header-Content-Length: 0) needs a model with exactly one input")
    spec = signature[0]
    datatype = datatype_of_numpy_name(spec.dtype)
    if spec.shape is None:
        raise InputError(f"input {spec.name!r} has no known shape: send a JSON header with the shape")
    known = [d for d in spec.shape if d >= 0]
    itemsize = numpy_dtype(datatype).itemsize
    count = len(body) // itemsize if datatype != "BYTES" else -1
    free = [i for i, d in enumerate(spec.shape) if d < 0]
    if datatype == "BYTES" or len(free) > 1:
        raise InputError(f"input {spec.name!r} has shape {list(spec.shape)}: send a JSON header with the shape")
    shape = list(spec.shape)
    if free:
        fixed = int(np.prod(known)) if known else 1
        shape[free[0]] = count // fixed if fixed else 0
    return InferRequest(inputs={spec.name: from_raw(spec.name, datatype, shape, body)})


def encode_rest_response(
    model_name: str, model_version: str, request: InferRequest, produced: dict[str, np.ndarray]
) -> tuple[bytes, str, list[tuple[str, str]]]:
    """(body, content type, headers) of the response, binary where the request asked for it."""
    binary_default = bool(request.parameters.get("binary_data_output", False))
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for wanted, value in request.select(produced):
        array = np.asarray(value)
        entry: dict[str, Any] = {"name": wanted.name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if wanted.parameters.get("binary_data", binary_default):
            raw = to_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = to_json_data(array)
        described.append(entry)
    header: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": described}
    if request.id:
        header["id"] = request.id
    head = orjson.dumps(header)
    if not chunks:
        return head, "application/json", []
    return head + b"".join(chunks), "application/octet-stream", [("Inference-Header-Content-Length", str(len(head)))]
