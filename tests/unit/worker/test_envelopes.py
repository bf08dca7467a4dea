"""TorchServe's KServe envelopes in a worker: rows in, one call per batch, each request's share out."""

from __future__ import annotations

from typing import Any

import orjson

from dms.context import Context
from dms.errors import DMSError
from dms.messages import PROTOCOL_V1, PROTOCOL_V2_REST, RequestItem, ResponseItem
from dms.worker.protocols import TensorModel, run_tensor_requests


def error_item(exc: DMSError) -> ResponseItem:
    return ResponseItem(status=0, body=f"{exc.type_name}: {exc.message}".encode(), content_type="text/plain")


def model(handle: Any, envelope: str) -> TensorModel:
    context = Context("m", "/tmp", {}, 8, None, "DMS", "0", {})
    return TensorModel("m", "1", None, [], [], handle, context, 1000, envelope=envelope)


def item(request_id: str, protocol: str, document: Any) -> RequestItem:
    return RequestItem(request_id, orjson.dumps(document), "application/json", [], [], protocol)


def test_kserve_rows_of_a_whole_batch_go_in_one_call_and_come_back_by_request():
    calls: list[list[Any]] = []

    def handle(rows, context):
        calls.append(rows)
        return [len(str(row["data"])) for row in rows]

    batch = [
        (0, item("a", PROTOCOL_V1, {"instances": [{"data": "x"}, {"data": "yy"}]})),
        (1, item("b", PROTOCOL_V1, {"instances": ["zzz"]})),  # not an object: {"data": instance}
        (2, item("c", PROTOCOL_V1, {"instances": {"data": 1}})),  # not a list: this request's 400
    ]
    answers, _ = run_tensor_requests(model(handle, "kserve"), batch, error_item)
    by_index = dict(answers)
    assert calls == [[{"data": "x"}, {"data": "yy"}, {"data": "zzz"}]]
    assert orjson.loads(by_index[0].body) == {"predictions": [1, 2]}
    assert orjson.loads(by_index[1].body) == {"predictions": [3]}
    assert by_index[2].body.startswith(b"InputError") and b"one row per instance" in by_index[2].body


def test_a_failing_row_fails_its_own_request_only():
    def handle(rows, context):
        if any(row["data"] == "bad" for row in rows):
            raise ValueError("cannot read this")
        return [0] * len(rows)

    batch = [
        (0, item("a", PROTOCOL_V1, {"instances": [{"data": "good"}]})),
        (1, item("b", PROTOCOL_V1, {"instances": [{"data": "bad"}]})),
    ]
    by_index = dict(run_tensor_requests(model(handle, "kserve"), batch, error_item)[0])
    assert orjson.loads(by_index[0].body) == {"predictions": [0]}
    assert by_index[1].body.startswith(b"HandlerError: model m: handler raised ValueError: cannot read this")


def test_kservev2_rows_are_the_inputs_as_sent_and_results_become_predict_outputs():
    seen: list[Any] = []

    def handle(rows, context):
        seen.extend(rows)
        return [[[1.5, 2.5]], "text"][: len(rows)]

    request = {
        "id": "r1",
        "inputs": [
            {"name": "a", "shape": [1], "datatype": "BYTES", "data": ["aGk="]},
            {"name": "b", "shape": [1], "datatype": "INT64", "data": [3]},
        ],
    }
    (answer,) = run_tensor_requests(model(handle, "kservev2"), [(0, item("x", PROTOCOL_V2_REST, request))], None)[0]
    assert seen == request["inputs"]
    assert orjson.loads(answer[1].body) == {
        "id": "r1",
        "model_name": "m",
        "model_version": "1",
        "outputs": [
            {"name": "predict", "shape": [1, 2], "datatype": "FP64", "data": [1.5, 2.5]},
            {"name": "predict", "shape": [1], "datatype": "BYTES", "data": ["text"]},
        ],
    }


def test_without_an_envelope_the_handler_gets_named_tensors_as_before():
    def handle(requests, context):
        return [{"y": request["instances"] * 2} for request in requests]

    (answer,) = run_tensor_requests(model(handle, ""), [(0, item("a", PROTOCOL_V1, {"instances": [1, 2]}))], None)[0]
    assert orjson.loads(answer[1].body) == {"predictions": [2, 4]}
