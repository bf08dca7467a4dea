"""The gRPC form of the protocol: ``ModelInferRequest`` in, ``ModelInferResponse`` out (raw outputs).

An answer is put together from parts (``dms.oip.protobuf_wire``): the model's name and version, and each
output's name, datatype and shape, are serialized by protobuf once and kept (``ResponseParts``); only
the request id and the outputs' bytes are framed per answer. The bytes are those protobuf itself writes
for the whole message (``tests/unit/oip/test_protocol_properties.py``), at half its cost for a small answer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from dms._generated import inference_pb2 as pb
from dms.errors import InputError
from dms.oip.protobuf_wire import field_head, length_delimited
from dms.oip.request import InferRequest, RequestedOutput
from dms.oip.tensors import DEFAULT_MAX_ELEMENTS, datatype_of, element_count, from_raw, numpy_dtype, to_raw

_TYPED_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameters_to_dict(parameters: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if not parameters:  # the usual case; iterating an empty protobuf map still costs ~2 µs
        return result
    for key, value in parameters.items():
        kind = value.WhichOneof("parameter_choice")
        result[key] = getattr(value, kind) if kind else None
    return result


def decode_grpc_request(payload: bytes, max_elements: int = DEFAULT_MAX_ELEMENTS) -> InferRequest:
    try:
        message = pb.ModelInferRequest.FromString(payload)
    except DecodeError as exc:
        raise InputError(f"ModelInferRequest could not be decoded: {exc}") from exc
    # Each read of a message's field builds a Python object (~0.1-1 µs with upb): read each once.
    raw, tensors = message.raw_input_contents, message.inputs
    if raw and len(raw) != len(tensors):
        raise InputError(f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs")
    inputs: dict[str, np.ndarray] = {}
    input_parameters: dict[str, dict[str, Any]] = {}
    for index, tensor in enumerate(tensors):
        name, shape = tensor.name, tensor.shape[:]  # a slice is a list, and cheaper than list(...)
        if raw:
            array = from_raw(name, tensor.datatype, shape, raw[index], max_elements)
        else:
            array = _typed(tensor, shape, max_elements)
        if name in inputs:
            raise InputError(f"input {name!r} appears twice")
        inputs[name] = array
        parameters = tensor.parameters
        input_parameters[name] = parameters_to_dict(parameters) if parameters else {}
    outputs, parameters = message.outputs, message.parameters
    return InferRequest(
        inputs,
        message.id,
        parameters_to_dict(parameters) if parameters else {},
        input_parameters,
        [RequestedOutput(o.name, parameters_to_dict(o.parameters)) for o in outputs] if outputs else [],
    )


def _typed(tensor: Any, shape: list[int], max_elements: int) -> np.ndarray:
    field = _TYPED_FIELD.get(tensor.datatype)
    if field is None:
        numpy_dtype(tensor.datatype)  # raises for unknown datatypes
        raise InputError(f"input {tensor.name!r}: {tensor.datatype} data must come in raw_input_contents")
    count = element_count(shape, max_elements, tensor.name)
    values = list(getattr(tensor.contents, field))  # as many as the message holds
    if len(values) != count:
        raise InputError(f"input {tensor.name!r} has {len(values)} elements; shape {shape} needs {count}")
    if tensor.datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    return np.asarray(values, dtype=numpy_dtype(tensor.datatype)).reshape(shape)


class ResponseParts:
    """The parts of ``ModelInferResponse`` that repeat from one answer to the next, each serialized once.

    ``head`` is fields 1 and 2 (model name and version), ``output`` one ``outputs`` entry (field 5: name,
    datatype and shape). At most ``limit`` outputs are kept (a model whose output shapes keep changing
    starts afresh when it has seen that many).
    """

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._heads: dict[tuple[str, str], bytes] = {}
        self._outputs: dict[tuple[str, str, tuple[int, ...]], bytes] = {}

    def head(self, model_name: str, model_version: str) -> bytes:
        key = (model_name, model_version)
        head = self._heads.get(key)
        if head is None:
            head = pb.ModelInferResponse(model_name=model_name, model_version=model_version).SerializeToString()
            self._heads[key] = head
        return head

    def output(self, name: str, datatype: str, shape: tuple[int, ...]) -> bytes:
        key = (name, datatype, shape)
        part = self._outputs.get(key)
        if part is None:
            if len(self._outputs) >= self.limit:
                self._outputs.clear()
            tensor = pb.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=shape)
            part = self._outputs[key] = length_delimited(5, tensor.SerializeToString())
        return part


_PARTS = ResponseParts()


def encode_grpc_response(
    model_name: str, model_version: str, request: InferRequest, produced: dict[str, np.ndarray]
) -> bytes:
    """The serialized ``ModelInferResponse``: the outputs (all, or those the request names) with raw contents."""
    parts = [_PARTS.head(model_name, model_version)]
    if request.id:
        parts.append(length_delimited(3, request.id.encode()))
    contents: list[bytes] = []
    chosen = [(o.name, value) for o, value in request.select(produced)] if request.outputs else produced.items()
    for name, value in chosen:
        array = np.asarray(value)
        datatype = datatype_of(array)
        parts.append(_PARTS.output(name, datatype, array.shape))
        data = to_raw(array)
        contents.append(field_head(6, len(data)))  # raw_output_contents, in the outputs' order; data not copied
        contents.append(data)
    return b"".join(parts + contents)


# Triton's decoupled models over ModelStreamInfer (``dms.worker.tensor_streams``) ---------------------------------
EMPTY_FINAL_PARAMETER = "triton_enable_empty_final_response"
"""A request parameter: send an empty response flagged final after a decoupled model's last."""
FINAL_PARAMETER = "triton_final_response"
"""A response parameter of ModelStreamInfer: this response is its request's last."""


def _final_flag(final: bool) -> bytes:
    flag = {FINAL_PARAMETER: pb.InferParameter(bool_param=final)}
    encoded: bytes = pb.ModelInferResponse(parameters=flag).SerializeToString()
    return encoded


FINAL = _final_flag(True)
"""``parameters["triton_final_response"] = true`` as serialized ``ModelInferResponse`` fields: appended to a
serialized response (protobuf merges a message's fields in any order), it flags that response."""
NOT_FINAL = _final_flag(False)


def empty_final_response(model_name: str, model_version: str, request_id: str) -> bytes:
    """A serialized ``ModelInferResponse`` with no outputs, flagged final: a request's end, as Triton sends it."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id)
    encoded: bytes = response.SerializeToString()
    return encoded + FINAL
