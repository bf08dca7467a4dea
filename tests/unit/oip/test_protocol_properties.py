"""Properties of the Open Inference Protocol decoders: exact round trips, and clean refusals of garbage."""

from __future__ import annotations

import os

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dms._generated import inference_pb2 as pb
from dms.errors import InputError
from dms.oip.grpc_codec import ResponseParts, decode_grpc_request, encode_grpc_response
from dms.oip.request import InferRequest, RequestedOutput
from dms.oip.rest_codec import decode_rest_request, encode_rest_response
from dms.oip.tensors import datatype_of, from_json, from_raw, numpy_dtype, to_json_data, to_raw
from dms.runtimes import TensorSpec

SETTINGS = settings(
    max_examples=int(os.environ.get("DMS_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"]
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    datatype = draw(st.sampled_from([*NUMERIC, "BYTES"]))
    shape = draw(shapes)
    if datatype == "BYTES":
        count = int(np.prod(shape))
        values = draw(st.lists(st.binary(max_size=8), min_size=count, max_size=count))
        array = np.empty(count, dtype=object)
        array[:] = values
        return array.reshape(shape)
    elements = None
    if datatype.startswith("FP"):
        elements = {"allow_nan": False, "allow_infinity": False}
    return draw(hnp.arrays(numpy_dtype(datatype), shape, elements=elements))


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and (list(a.ravel()) == list(b.ravel()))


@SETTINGS
@given(array=tensors())
def test_binary_form_round_trips_exactly(array: np.ndarray):
    decoded = from_raw("t", datatype_of(array), array.shape, to_raw(array))
    assert same(decoded, array)


@SETTINGS
@given(array=tensors().filter(lambda a: a.dtype != object))
def test_json_form_round_trips_for_numeric_types(array: np.ndarray):
    decoded = from_json("t", datatype_of(array), array.shape, to_json_data(array))
    assert same(decoded, array)


@SETTINGS
@given(arrays=st.lists(tensors(), min_size=1, max_size=3), binary=st.booleans())
def test_rest_and_grpc_responses_decode_to_what_was_produced(arrays: list[np.ndarray], binary: bool):
    produced = {f"o{i}": a for i, a in enumerate(arrays)}
    request = InferRequest(inputs={}, id="r", parameters={"binary_data_output": binary})
    body, _, headers = encode_rest_response("m", "1", request, produced)
    header_length = dict(headers).get("Inference-Header-Content-Length")
    split = int(header_length) if header_length else len(body)
    header = orjson.loads(body[:split])
    offset = split
    for entry, (name, array) in zip(header["outputs"], produced.items(), strict=True):
        assert entry["name"] == name and entry["shape"] == list(array.shape)
        if "parameters" in entry:
            size = entry["parameters"]["binary_data_size"]
            assert same(from_raw(name, entry["datatype"], entry["shape"], body[offset : offset + size]), array)
            offset += size
        elif array.dtype != object:
            assert same(from_json(name, entry["datatype"], entry["shape"], entry["data"]), array)
    message = pb.ModelInferResponse.FromString(encode_grpc_response("m", "1", request, produced))
    for output, raw, array in zip(message.outputs, message.raw_output_contents, arrays, strict=True):
        assert same(from_raw(output.name, output.datatype, list(output.shape), raw), array)


def protobuf_serialized(name: str, version: str, request: InferRequest, produced: dict[str, np.ndarray]) -> bytes:
    """The answer as protobuf itself serializes the whole message."""
    response = pb.ModelInferResponse(model_name=name, model_version=version, id=request.id)
    for output, array in request.select(produced):
        response.outputs.add(name=output.name, datatype=datatype_of(array), shape=array.shape)
        response.raw_output_contents.append(to_raw(array))
    return response.SerializeToString()


@SETTINGS
@given(
    arrays=st.lists(tensors(), min_size=1, max_size=3),
    model=st.tuples(st.text(max_size=5), st.text(max_size=3)),
    request_id=st.text(max_size=200),
    picked=st.lists(st.integers(0, 2), max_size=3, unique=True),
)
def test_grpc_answers_are_the_bytes_protobuf_writes(
    arrays: list[np.ndarray], model: tuple[str, str], request_id: str, picked: list[int]
):
    produced = {f"o{i}": a for i, a in enumerate(arrays)}
    wanted = [RequestedOutput(f"o{i}") for i in picked if i < len(arrays)]
    request = InferRequest(inputs={}, id=request_id, outputs=wanted)
    for _ in range(2):  # the second time from the kept parts
        assert encode_grpc_response(*model, request, produced) == protobuf_serialized(*model, request, produced)


def test_grpc_answer_parts_are_bounded_and_stay_right():
    parts = ResponseParts(limit=2)
    for rows in [1, 2, 3, 1, 2, 3]:
        part = parts.output("y", "FP32", (rows, 4))
        tensor = pb.ModelInferResponse.FromString(part).outputs[0]
        assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("y", "FP32", [rows, 4])
        assert len(parts._outputs) <= 2


SPECS = [TensorSpec("x", "float32", (-1, 4))]


@SETTINGS
@given(body=st.binary(max_size=300), header=st.one_of(st.none(), st.integers(-5, 400).map(str), st.text(max_size=5)))
def test_rest_decoder_refuses_garbage_cleanly(body: bytes, header: str | None):
    try:
        request = decode_rest_request(body, header, SPECS)
    except InputError:
        return
    assert isinstance(request, InferRequest)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@SETTINGS
@given(
    inputs=st.lists(
        st.fixed_dictionaries(
            {
                "name": st.sampled_from(["x", "y", 3]),
                "datatype": st.sampled_from([*NUMERIC, "BYTES", "BF16", "NOPE"]),
                "shape": st.lists(st.integers(-2, 5), max_size=3),
                "data": json_values,
            },
            optional={"parameters": json_values},
        ),
        max_size=3,
    ),
    outputs=json_values,
)
def test_rest_decoder_refuses_bad_structures_cleanly(inputs: list[dict[str, object]], outputs: object):
    body = orjson.dumps({"inputs": inputs, "outputs": outputs}, option=orjson.OPT_NON_STR_KEYS)
    try:
        request = decode_rest_request(body, None, SPECS)
    except InputError:
        return
    for array in request.inputs.values():
        assert isinstance(array, np.ndarray)


@SETTINGS
@given(payload=st.binary(max_size=300))
def test_grpc_decoder_refuses_garbage_cleanly(payload: bytes):
    try:
        request = decode_grpc_request(payload)
    except InputError:
        return
    assert isinstance(request, InferRequest)


@SETTINGS
@given(
    datatype=st.sampled_from([*NUMERIC, "BYTES", "BF16", "NOPE"]),
    shape=st.lists(st.integers(-1, 4), max_size=3),
    raw=st.binary(max_size=64),
    typed=st.booleans(),
)
def test_grpc_decoder_checks_shapes_against_contents(datatype: str, shape: list[int], raw: bytes, typed: bool):
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype=datatype, shape=shape)
    if typed:
        tensor.contents.fp32_contents.extend([1.0] * (len(raw) % 7))
    else:
        message.raw_input_contents.append(raw)
    try:
        request = decode_grpc_request(message.SerializeToString())
    except InputError:
        return
    assert list(request.inputs["x"].shape) == shape
