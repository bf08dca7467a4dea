"""The protocol decoders' checks, case by case: what passes, and the message of what does not."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dms._generated import inference_pb2 as pb
from dms.errors import InputError, PayloadTooLargeError
from dms.oip.grpc_codec import decode_grpc_request
from dms.oip.rest_codec import decode_rest_request
from dms.oip.tensors import element_count, from_json, from_raw, to_raw
from dms.runtimes import TensorSpec
from dms.runtimes.tensor_exec import conform, prepare

SIGNATURE = [TensorSpec("x", "float32", (-1, 2))]


def rest(inputs: list[dict[str, object]], **extra: object) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([True, 2], "shape must be a list of integers"),
        ([1.0, 2], "shape must be a list of integers"),
        ([1, "2"], "shape must be a list of integers"),
        ("1,2", "shape must be a list of integers"),
        ([-1, 2], "has a negative dimension"),
        ([-1, -2], "has a negative dimension"),
    ],
)
def test_rest_shapes_that_are_refused(shape: object, message: str):
    body = rest([{"name": "x", "shape": shape, "datatype": "FP32", "data": [1, 2]}])
    with pytest.raises(InputError, match=message):
        decode_rest_request(body, None, SIGNATURE)


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("FP32", [1e39], "out of range for FP32"),
        ("FP16", [1e6], "out of range for FP16"),
        ("UINT8", [300], "data is not UINT8"),
        ("FP32", [1, 2], "has 2 elements; shape \\[1\\] needs 1"),
    ],
)
def test_rest_values_that_are_refused(datatype: str, data: list[float], message: str):
    with pytest.raises(InputError, match=message):
        decode_rest_request(rest([{"name": "x", "shape": [1], "datatype": datatype, "data": data}]), None, SIGNATURE)


@pytest.mark.parametrize("shape", [[-1, -16], [-4, 2, -2], [-1, 16]], ids=["two negative", "matching size", "one"])
def test_grpc_shapes_with_negative_dimensions_are_refused(shape: list[int]):
    message = pb.ModelInferRequest(model_name="m", raw_input_contents=[bytes(64)])
    message.inputs.add(name="x", datatype="FP32", shape=shape)
    with pytest.raises(InputError, match="has a negative dimension"):
        decode_grpc_request(message.SerializeToString())


def test_rest_request_keeps_everything_it_was_sent():
    header = rest(
        [
            {"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
            {"name": "s", "shape": [], "datatype": "INT64", "data": [7]},
        ],
        id="req-1",
        parameters={"binary_data_output": True},
        outputs=[{"name": "y", "parameters": {"binary_data": False}}],
    )
    body = header + np.asarray([[1.5, -2]], dtype="<f4").tobytes()
    request = decode_rest_request(body, str(len(header)), SIGNATURE)
    np.testing.assert_array_equal(request.inputs["x"], [[1.5, -2]])
    assert request.inputs["s"].shape == () and request.inputs["s"] == 7
    assert request.id == "req-1" and request.parameters == {"binary_data_output": True}
    assert request.input_parameters == {"x": {"binary_data_size": 8}, "s": {}}
    assert [(o.name, o.parameters) for o in request.outputs] == [("y", {"binary_data": False})]


def test_grpc_request_keeps_everything_it_was_sent():
    message = pb.ModelInferRequest(model_name="m", id="g-1")
    message.parameters["sequence_id"].int64_param = 4
    tensor = message.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    tensor.parameters["note"].string_param = "n"
    message.raw_input_contents.append(np.asarray([[3, 4]], dtype="<f4").tobytes())
    message.outputs.add(name="y")
    request = decode_grpc_request(message.SerializeToString())
    np.testing.assert_array_equal(request.inputs["x"], [[3, 4]])
    assert request.id == "g-1" and request.parameters == {"sequence_id": 4}
    assert request.input_parameters == {"x": {"note": "n"}}
    assert [(o.name, o.parameters) for o in request.outputs] == [("y", {})]
    assert decode_grpc_request(pb.ModelInferRequest(model_name="m").SerializeToString()).outputs == []


def test_conform_takes_ready_arrays_as_they_are_and_converts_the_rest():
    spec = SIGNATURE[0]
    ready = np.zeros((3, 2), np.float32)
    array, added = conform(ready, spec, 100)
    assert array is ready and not added
    array, added = conform([1, 2], spec, 100)  # a list: converted, and given a batch dimension
    assert array.dtype == np.float32 and array.shape == (1, 2) and added
    with pytest.raises(InputError, match=r"has shape \[3, 3\]; the model expects \[-1, 2\]"):
        conform(np.zeros((3, 3), np.float32), spec, 100)
    with pytest.raises(InputError, match="is not a float32 tensor"):
        conform(np.asarray([["a", "b"]], dtype=object), spec, 100)
    free = TensorSpec("x", "float32", (-1, -1))
    assert conform(np.zeros((2, 5), np.float32), free, 100)[0].shape == (2, 5)


def test_prepare_checks_names_and_batch_dimensions():
    two = [TensorSpec("a", "float32", (-1, 1)), TensorSpec("b", "float32", (-1, 1))]
    with pytest.raises(InputError, match="input 'b' is missing"):
        prepare({"a": np.zeros((1, 1), np.float32)}, two, 100)
    with pytest.raises(InputError, match="unknown input 'c'"):
        prepare({"a": np.zeros((1, 1)), "b": np.zeros((1, 1)), "c": 1}, two, 100)
    with pytest.raises(InputError, match=r"disagree on the batch dimension: \[1, 2\]"):
        prepare({"a": np.zeros((1, 1)), "b": np.zeros((2, 1))}, two, 100)
    feeds, added = prepare({"x": np.ones(2, np.float32)}, SIGNATURE, 100)
    assert feeds["x"].shape == (1, 2) and added


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=">i4").reshape(2, 3),  # big-endian: swapped to little-endian
        np.arange(6, dtype="<f8").reshape(2, 3).T,  # not contiguous: written row-major
        np.arange(6, dtype=">f2").reshape(3, 2)[::2],
        np.asarray([True, False]),
    ],
)
def test_binary_outputs_are_little_endian_and_row_major(array: np.ndarray):
    expected = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    assert to_raw(array) == expected
    assert np.array_equal(np.frombuffer(to_raw(array), dtype=array.dtype.newbyteorder("<")).reshape(array.shape), array)


@pytest.mark.parametrize(
    ("shape", "error", "message"),
    [
        ([0, 2**40, 2**40], PayloadTooLargeError, "over max_tensor_elements \\(100\\)"),
        ([101], PayloadTooLargeError, "over max_tensor_elements"),
        ([2**63, 2**63, 0], PayloadTooLargeError, "over max_tensor_elements"),
        ([3, -1], InputError, "negative dimension"),
    ],
)
def test_shapes_are_checked_against_the_cap_before_their_product_is_used(shape, error, message):
    with pytest.raises(error, match=message):
        element_count(shape, 100, "x")
    assert element_count([0, 100, 1], 100) == 0 and element_count([10, 10], 100) == 100


def test_bytes_elements_need_four_bytes_each_before_any_is_allocated():
    with pytest.raises(InputError, match="too few for 1000000 BYTES elements"):
        from_raw("x", "BYTES", [1_000_000], b"\0" * 8)
    with pytest.raises(PayloadTooLargeError):
        from_json("x", "BYTES", [2**40], [], 1000)


def test_worker_answers_an_undecodable_request_alone(monkeypatch: pytest.MonkeyPatch):
    """Anything a request's decoding raises (MemoryError, numpy's ValueError) is that request's 400; the rest of
    its batch is answered, and nothing reaches the worker's loop."""
    from dms.messages import PROTOCOL_V2_REST, RequestItem
    from dms.worker import protocols
    from dms.worker.streaming import error_item as _error_item

    real = protocols.decode_rest_request

    def decode(body: bytes, *args: object) -> object:
        if body == b"bad":
            raise MemoryError("unable to allocate 8 TiB")
        return real(body, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(protocols, "decode_rest_request", decode)
    model = protocols.TensorModel("m", "1", None, SIGNATURE, ["y"], lambda rows, _: rows, _Context(), 100)
    good = rest([{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}])
    items = [
        (i, RequestItem(str(i), body, "application/json", [], [], PROTOCOL_V2_REST))
        for i, body in enumerate([good, b"bad", good])
    ]
    answers, _ = protocols.run_tensor_requests(model, items, _error_item)
    by_index = dict(answers)
    assert by_index[1].error is not None and by_index[1].error.type_name == "InputError"
    assert "MemoryError: unable to allocate 8 TiB" in by_index[1].error.message
    assert by_index[0].status == by_index[2].status == 200


class _Context:
    def start_batch(self, processors: object) -> None:
        pass
