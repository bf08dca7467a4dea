"""A custom handler's generators of tensor results inside a worker (``dms.worker.tensor_streams``): Triton's
decoupled models, with an outlet the test plays."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from dms._generated import inference_pb2 as pb
from dms.context import Context
from dms.messages import PROTOCOL_V2_GRPC, PROTOCOL_V2_REST, Batch, RequestItem, ResponseItem
from dms.worker.protocols import TensorModel, run_tensor_requests
from dms.worker.streaming import BatchStreams, error_item
from tests.unit.worker.test_streaming import FakeOutlet


def model(handle: Any) -> TensorModel:
    context = Context("counter", "/tmp", {}, 8, None, "DMS", "0", {})
    return TensorModel("counter", "3", None, [], ["y"], handle, context, 1000)


def counting(rows: list[dict[str, np.ndarray]], context: Any) -> list[Any]:
    """For each request: a generator of ``n`` responses (``y = [i]``), or a whole answer when ``n`` is -1."""

    def count(n: int) -> Iterator[dict[str, np.ndarray]]:
        for i in range(n):
            yield {"y": np.array([i], dtype=np.int32)}

    return [{"y": np.array([-1], dtype=np.int32)} if int(r["n"][0]) == -1 else count(int(r["n"][0])) for r in rows]


def grpc_item(n: int, request_id: str, stream: bool = True, empty_final: bool | None = None) -> RequestItem:
    request = pb.ModelInferRequest(model_name="counter", id=request_id)
    request.inputs.add(name="n", datatype="INT32", shape=[1])
    request.raw_input_contents.append(np.array([n], dtype=np.int32).tobytes())
    if empty_final is not None:
        request.parameters["triton_enable_empty_final_response"].bool_param = empty_final
    return RequestItem(request_id, request.SerializeToString(), "application/grpc", [], [], PROTOCOL_V2_GRPC, stream)


def response(body: bytes) -> tuple[list[int], bool, str]:
    """A ModelInferResponse's ``y`` values, its final flag and its id."""
    message = pb.ModelInferResponse.FromString(body)
    values = np.frombuffer(message.raw_output_contents[0], dtype=np.int32).tolist() if message.outputs else []
    return values, message.parameters["triton_final_response"].bool_param, message.id


def run(items: list[RequestItem], outlet: FakeOutlet | None) -> dict[int, ResponseItem]:
    batch = Batch(batch_id=5, items=items)
    streams = BatchStreams(batch, outlet, "counter")
    answers, _ = run_tensor_requests(model(counting), list(enumerate(items)), error_item, streams)
    return dict(answers)


def test_each_result_of_a_stream_request_goes_out_as_a_response_flagged_not_final() -> None:
    outlet = FakeOutlet([0, 1])
    answers = run([grpc_item(3, "a", empty_final=True), grpc_item(2, "b")], outlet)
    by_request: dict[int, list[tuple[list[int], bool, str]]] = {0: [], 1: []}
    for chunk in outlet.sent:
        by_request[chunk.index].append(response(chunk.body))
    assert by_request[0] == [([0], False, "a"), ([1], False, "a"), ([2], False, "a")]
    assert by_request[1] == [([0], False, "b"), ([1], False, "b")]
    assert [c.index for c in outlet.sent] == [0, 1, 0, 1, 0]  # the two generators take turns
    # After its last: an empty final response when asked for (Triton's), else nothing more.
    assert response(answers[0].body) == ([], True, "a")
    assert pb.ModelInferResponse.FromString(answers[0].body).model_name == "counter"
    assert answers[1].error is None and answers[1].body == b""


def test_a_stream_request_may_get_no_response_and_a_whole_answer_is_final() -> None:
    outlet = FakeOutlet([0, 1, 2])
    answers = run([grpc_item(0, "none"), grpc_item(0, "just-final", empty_final=True), grpc_item(-1, "whole")], outlet)
    assert outlet.sent == []
    assert answers[0].body == b""
    assert response(answers[1].body) == ([], True, "just-final")
    assert response(answers[2].body) == ([-1], True, "whole")


def test_a_request_that_takes_one_response_gets_it_or_a_400_naming_model_stream_infer() -> None:
    def rest(n: int) -> RequestItem:
        body = orjson.dumps({"inputs": [{"name": "n", "shape": [1], "datatype": "INT32", "data": [n]}]})
        return RequestItem(str(n), body, "application/json", [], [], PROTOCOL_V2_REST)

    answers = run([grpc_item(1, "one", stream=False), grpc_item(2, "two", stream=False), rest(1), rest(0)], None)
    assert response(answers[0].body) == ([0], False, "one")  # ModelInfer: no stream flag at all
    assert "triton_final_response" not in pb.ModelInferResponse.FromString(answers[0].body).parameters
    assert orjson.loads(answers[2].body)["outputs"][0]["data"] == [0]
    for failed, count in ((answers[1], "more than one response"), (answers[3], "no response")):
        assert failed.error is not None and failed.error.type_name == "InputError"
        assert count in failed.error.message and "ModelStreamInfer" in failed.error.message


def test_a_stream_request_without_an_outlet_takes_one_response_flagged_final() -> None:
    """Through a Ray actor (no outlet), a ModelStreamInfer request's generator must make one response."""
    answers = run([grpc_item(1, "one"), grpc_item(3, "three")], None)
    assert response(answers[0].body) == ([0], True, "one")
    assert answers[1].error is not None and "more than one response" in answers[1].error.message


def test_a_client_that_leaves_stops_its_generator_and_a_bad_flag_is_its_requests_error() -> None:
    made: list[int] = []

    def endless(rows: list[dict[str, np.ndarray]], context: Any) -> list[Any]:
        def forever() -> Iterator[dict[str, np.ndarray]]:
            i = 0
            while True:
                made.append(i)
                yield {"y": np.array([i], dtype=np.int32)}
                i += 1

        return [forever() for _ in rows]

    outlet = FakeOutlet([0, 1], window=2)
    outlet.on_wait = [{0}]  # the client of request 0 leaves once its window is full
    bad = grpc_item(1, "bad")
    request = pb.ModelInferRequest.FromString(bad.body)
    request.parameters["triton_enable_empty_final_response"].string_param = "yes"
    bad.body = request.SerializeToString()
    items = [grpc_item(1, "leaves"), bad]
    streams = BatchStreams(Batch(batch_id=5, items=items), outlet, "counter")
    answers = dict(run_tensor_requests(model(endless), list(enumerate(items)), error_item, streams)[0])
    assert len(outlet.sent) == 2 and made == [0, 1]  # its window: no more was made once it was full
    assert answers[0].error is not None  # a placeholder: nobody reads it
    assert answers[1].error is not None and "must be a bool" in answers[1].error.message
