"""TorchServe's ``InferenceAPIsService`` (``dms.grpc.torchserve_inference``) on a gRPC connection in memory, over a
fake data plane: what reaches the model, what comes back, and the fields a worker makes of it."""

from __future__ import annotations

import asyncio

import grpc
import msgspec

from dms._generated import torchserve_inference_pb2 as ts
from dms.grpc.call_core import frame
from dms.grpc.torchserve_inference import SERVICE, torchserve_inference_methods
from dms.messages import PROTOCOL_FIELDS, ErrorInfo, ResponseItem
from dms.worker.inputs import build_request_data
from tests.unit.grpc.test_connection import Harness
from tests.unit.protocol_support import run

PATH = f"/{SERVICE}/".encode()


def _harness() -> Harness:
    h = Harness()
    h.server.methods = {method.path: method for method in torchserve_inference_methods(h.server.servicer)}
    return h


def test_predictions_hands_the_input_map_to_the_model_as_fields(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = _harness()
        await h.exchange()
        request = ts.PredictionsRequest(model_name="m", model_version="2", input={"data": b"\x00\xff", "k": b"v"})
        sid = h.call(request.SerializeToString(), path=PATH + b"Predictions")
        await h.exchange()
        [(name, version, item, _)] = h.dataplane.submitted
        assert (name, version, item.protocol) == ("m", "2", PROTOCOL_FIELDS)
        assert build_request_data(item) == {"data": b"\x00\xff", "k": b"v"}  # as the worker hands it on
        assert h.metrics._in_flight[PROTOCOL_FIELDS] == 1
        h.answer(0, ResponseItem(200, b'{"top": 1}', "application/json", batch_size=2))
        await h.exchange()
        answer = h.answers[sid]
        assert answer.code == grpc.StatusCode.OK
        assert ts.PredictionResponse.FromString(answer.message).prediction == b'{"top": 1}'
        assert h.metrics._in_flight[PROTOCOL_FIELDS] == 0
        assert 'transport="fields"' in h.metrics.exposition().decode()

    run(loop, test)


def test_a_failure_ends_the_call_with_its_status(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = _harness()
        missing = h.call(ts.PredictionsRequest(model_name="missing").SerializeToString(), path=PATH + b"Predictions")
        unnamed = h.call(ts.PredictionsRequest().SerializeToString(), path=PATH + b"Predictions")
        failing = h.call(ts.PredictionsRequest(model_name="m").SerializeToString(), path=PATH + b"Predictions")
        await h.exchange()
        h.answer(0, ResponseItem(500, b"", "", error=ErrorInfo("HandlerError", "handler raised ValueError: no")))
        await h.exchange()
        assert h.answers[missing].code == grpc.StatusCode.NOT_FOUND
        assert (h.answers[unnamed].code, h.answers[unnamed].details) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "parameter model_name is required",
        )
        assert h.answers[failing].code == grpc.StatusCode.INTERNAL and "ValueError" in h.answers[failing].details

    run(loop, test)


def test_ping_tells_health_as_torchserve_does(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = _harness()
        h.dataplane.healthy = lambda: True  # type: ignore[attr-defined]
        sid = h.call(b"", path=PATH + b"Ping")
        await h.exchange()
        health = ts.TorchServeHealthResponse.FromString(h.answers[sid].message).health
        assert msgspec.json.decode(health) == {"status": "Healthy"}

    run(loop, test)


def test_a_sequence_stream_answers_each_request_in_turn_and_tells_failures_in_the_answer(
    loop: asyncio.AbstractEventLoop,
):
    async def test() -> None:
        h = _harness()
        await h.exchange()
        stream = h.start(PATH + b"StreamPredictions2")
        for request in [
            ts.PredictionsRequest(model_name="m", input={"data": b"1"}, sequence_id="s"),
            ts.PredictionsRequest(model_name="missing", sequence_id="s"),
            ts.PredictionsRequest(model_name="m", input={"data": b"3"}),  # no sequence id
        ]:
            stream.send_data(frame(request.SerializeToString()))
        stream.end_message()
        h.send()
        await h.exchange()
        [(_, _, item, _)] = h.dataplane.submitted
        assert build_request_data(item) == {"data": b"1"}
        h.answer(0, ResponseItem(200, b"one", "text/plain"))
        answer = h.answers[stream.stream_id]
        for _ in range(20):  # each answer of the stream takes a few loop turns
            await h.exchange()
            if answer.ended:
                break
        assert answer.ended and answer.code == grpc.StatusCode.OK
        one, two, three = (ts.PredictionResponse.FromString(m) for m in _messages(answer.body))
        assert (one.prediction, one.sequence_id, one.HasField("status")) == (b"one", "s", False)
        assert (two.sequence_id, two.status.code) == ("s", grpc.StatusCode.NOT_FOUND.value[0])
        assert three.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "sequence_id" in three.status.message

    run(loop, test)


def _messages(body: bytes) -> list[bytes]:
    found, at = [], 0
    while at < len(body):
        length = int.from_bytes(body[at + 1 : at + 5], "big")
        found.append(body[at + 5 : at + 5 + length])
        at += 5 + length
    return found
