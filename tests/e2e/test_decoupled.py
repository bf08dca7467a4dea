"""A decoupled model (Triton's term: none, one or many responses per request) over gRPC ``ModelStreamInfer``,
driven by ``tritonclient``'s streaming API against a real server: the generative model of the test suite
(tests/fixtures/char_model.py) behind a tensor handler that yields one response per character
(tests/fixtures/char_decoupled_handler.py), checked response by response against the same model in-process.
"""

from __future__ import annotations

import queue
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from dms._generated import inference_pb2 as pb
from tests.e2e.conftest import char_model_store
from tests.support import FIXTURES, DmsServer, running_server, wait_for

sys.path.insert(0, str(FIXTURES))
from char_model import CharModel

CONFIG = """\
batchSize: 4
maxBatchDelay: 20
minWorkers: 1
maxWorkers: 1
inputs:
  - {name: text_input, datatype: BYTES, shape: [1]}
  - {name: max_tokens, datatype: INT32, shape: [1]}
outputs:
  - {name: text_output, datatype: BYTES, shape: [1]}
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[CharModel, Path]:
    work = tmp_path_factory.mktemp("decoupled")
    joined = CONFIG + "continuous_batching: true\n"
    weights = char_model_store(
        work, {"chars": ("char_decoupled_handler.py", CONFIG), "joined": ("char_decoupled_handler.py", joined)}
    )
    return CharModel.load(weights), work


@pytest.fixture(scope="module", params=["h2", "grpcio"])
def server(request: pytest.FixtureRequest, model: tuple[CharModel, Path]):
    """The server, on DMS's own HTTP/2 gRPC and on grpcio."""
    args = ["--model-store", "store", "--models", "chars=chars.mar", "joined=joined.mar"]
    if request.param == "grpcio":
        args += ["--grpc-server", "grpcio"]
    with running_server(model[1], args, env={"DMS_STREAM_STALL_TIMEOUT_S": "3"}) as server:
        yield server


def inputs(prompt: str, max_tokens: int, **extra: Any) -> list[grpcclient.InferInput]:
    tensors = [("text_input", "BYTES", np.array([prompt.encode()], dtype=object))]
    tensors.append(("max_tokens", "INT32", np.array([max_tokens], dtype=np.int32)))
    for name, value in extra.items():
        if isinstance(value, str):
            tensors.append((name, "BYTES", np.array([value.encode()], dtype=object)))
        else:
            tensors.append((name, "FP32", np.array([value], dtype=np.float32)))
    made = []
    for name, datatype, array in tensors:
        tensor = grpcclient.InferInput(name, [1], datatype)
        tensor.set_data_from_numpy(array)
        made.append(tensor)
    return made


class Stream:
    """A ``tritonclient`` stream whose responses (result, error, when) land in a queue."""

    def __init__(self, server: DmsServer) -> None:
        self.client = grpcclient.InferenceServerClient(server.grpc_address)
        self.responses: queue.Queue[tuple[Any, Any, float]] = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.responses.put((result, error, time.monotonic())))

    def send(
        self,
        request_id: str,
        prompt: str,
        max_tokens: int,
        empty_final: bool = True,
        model: str = "chars",
        **extra: Any,
    ) -> None:
        self.client.async_stream_infer(
            model, inputs(prompt, max_tokens, **extra), request_id=request_id, enable_empty_final_response=empty_final
        )

    def until_final(self, request_id: str) -> list[tuple[str, str | None, bool, float]]:
        """(request id, character or None, final flag, when) of each response up to ``request_id``'s final one."""
        got = []
        while True:
            result, error, when = self.responses.get(timeout=30)
            assert error is None, error
            response = result.get_response()
            final = response.parameters["triton_final_response"].bool_param
            text = result.as_numpy("text_output")
            got.append((response.id, None if text is None else text[0].decode(), final, when))
            if final and response.id == request_id:
                return got

    def close(self, cancel: bool = False) -> None:
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()


def test_each_character_is_its_own_response_as_it_is_made(server: DmsServer, model: tuple[CharModel, Path]):
    expected = list(model[0].generate("Alice was", 30))
    stream = Stream(server)
    try:
        stream.send("alice", "Alice was", 30, pause_s=0.05)
        got = stream.until_final("alice")
    finally:
        stream.close()
    pieces, final = got[:-1], got[-1]
    assert [char for _, char, _, _ in pieces] == expected
    assert all(request_id == "alice" and not is_final for request_id, _, is_final, _ in pieces)
    assert final[:3] == ("alice", None, True)  # the empty final response asked for
    assert pieces[-1][3] - pieces[0][3] >= 0.04 * (len(expected) - 1)  # sent as made, not all at the end
    metrics = httpx.get(f"{server.metrics_url}/metrics", timeout=10).text
    assert 'dms_time_to_first_chunk_seconds_count{model="chars",transport="v2-grpc",version="1.0"}' in metrics


def test_one_stream_carries_several_requests_each_with_none_one_or_many_responses(
    server: DmsServer, model: tuple[CharModel, Path]
):
    char_model = model[0]
    stream = Stream(server)
    try:
        stream.send("many", "the Rabbit", 12, empty_final=False)
        stream.send("none-but-final", "her sister", 0)
        stream.send("none", "her sister", 0, empty_final=False)  # nothing at all comes back for it
        stream.send("one", "pictures or ", 1)
        got = stream.until_final("one")
    finally:
        stream.close()
    expected = [("many", c, False) for c in char_model.generate("the Rabbit", 12)]
    expected += [("none-but-final", None, True)]
    expected += [("one", c, False) for c in char_model.generate("pictures or ", 1)] + [("one", None, True)]
    assert [entry[:3] for entry in got] == expected


def test_a_request_that_takes_one_response(server: DmsServer, model: tuple[CharModel, Path]):
    """ModelInfer and REST infer take a decoupled model's answer when it makes exactly one, else a 400 that says
    to use ModelStreamInfer."""
    client = grpcclient.InferenceServerClient(server.grpc_address)
    one = client.infer("chars", inputs("Alice was", 1))
    assert one.as_numpy("text_output")[0].decode() == next(model[0].generate("Alice was", 1))
    with pytest.raises(InferenceServerException) as several:
        client.infer("chars", inputs("Alice was", 5))
    assert several.value.status() == "StatusCode.INVALID_ARGUMENT" and "ModelStreamInfer" in several.value.message()
    document = {
        "inputs": [
            {"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["Alice was"]},
            {"name": "max_tokens", "shape": [1], "datatype": "INT32", "data": [0]},
        ]
    }
    rest = httpx.post(f"{server.inference_url}/v2/models/chars/infer", json=document, timeout=30)
    assert rest.status_code == 400 and "no response" in rest.json()["error"]


def test_a_client_that_leaves_stops_the_generation(server: DmsServer, tmp_path: Path):
    trace = tmp_path / "trace.txt"
    stream = Stream(server)
    try:
        stream.send("long", "Alice was", 400, pause_s=0.05, trace=str(trace))
        for _ in range(5):
            assert stream.responses.get(timeout=30)[1] is None
    finally:
        stream.close(cancel=True)
    time.sleep(1.0)
    made = len(trace.read_text().splitlines())
    time.sleep(1.0)
    assert len(trace.read_text().splitlines()) == made, "the worker went on generating after its client left"
    assert made < 5 + 10
    wait_for(lambda: _serves(server), what="the next stream")


def _serves(server: DmsServer) -> bool:
    stream = Stream(server)
    try:
        stream.send("after", "Alice was", 2)
        return len(stream.until_final("after")) == 3
    finally:
        stream.close()


def test_a_client_that_reads_nothing_is_bounded_then_given_up(server: DmsServer, tmp_path: Path):
    """A client that sends a request and reads none of its 10 kB responses: the worker stops a few responses ahead
    of what the client's HTTP/2 window takes, the server's memory stays flat, and after stream_stall_timeout_s
    (3 s here) the call is ended and the model serves on."""
    trace = tmp_path / "trace.txt"
    request = pb.ModelInferRequest(model_name="chars", id="unread")
    request.inputs.add(name="text_input", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"Alice was")
    request.inputs.add(name="max_tokens", datatype="INT32", shape=[1]).contents.int_contents.append(100_000)
    request.inputs.add(name="width", datatype="FP32", shape=[1]).contents.fp32_contents.append(10_000)
    request.inputs.add(name="trace", datatype="BYTES", shape=[1]).contents.bytes_contents.append(str(trace).encode())
    channel = grpc.insecure_channel(server.grpc_address)
    call = channel.stream_stream(
        "/inference.GRPCInferenceService/ModelStreamInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelStreamInferResponse.FromString,
    )
    responses = call(iter([request]))
    try:
        assert len(next(responses).infer_response.raw_output_contents[0]) >= 10_000
        frontend = psutil.Process(server.proc.pid)
        before = frontend.memory_info().rss
        time.sleep(1.5)
        made = len(trace.read_text().splitlines())
        assert made < 2000, "the server took the answer faster than its client read it"  # 100 000 unbounded
        assert frontend.memory_info().rss - before < 20 * 2**20
        wait_for(lambda: _serves(server), what="the model, once the unread call is given up", timeout_s=20)
        with pytest.raises(grpc.RpcError) as ended:
            for _ in responses:
                pass
        assert ended.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
        assert len(trace.read_text().splitlines()) < made + 20  # the worker stopped making it
    finally:
        responses.cancel()
        channel.close()


def test_a_stream_deadline_ends_the_call_and_the_generation(server: DmsServer, tmp_path: Path):
    """A stream whose client set a deadline (grpc-timeout) ends with DEADLINE_EXCEEDED when it passes, and the
    worker stops making the answer."""
    trace = tmp_path / "trace.txt"
    client = grpcclient.InferenceServerClient(server.grpc_address)
    errors: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: error is not None and errors.put(error), stream_timeout=1.5)
    try:
        client.async_stream_infer("chars", inputs("Alice was", 400, pause_s=0.05, trace=str(trace)))
        error = errors.get(timeout=30)
        assert "Deadline Exceeded" in str(error) or "DEADLINE_EXCEEDED" in str(error)
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()
    time.sleep(0.5)
    made = len(trace.read_text().splitlines())
    time.sleep(1.0)
    assert len(trace.read_text().splitlines()) == made, "the worker went on generating past the deadline"
    assert made < 1.5 / 0.05 + 10


def test_with_continuous_batching_a_request_joins_a_running_stream(server: DmsServer, model: tuple[CharModel, Path]):
    """A request sent while another client's 60 responses stream (one worker): it joins the running generation,
    and its own responses are all in within about its own time."""
    long, short = Stream(server), Stream(server)
    try:
        long.send("long", "Alice was", 60, model="joined", pause_s=0.05)
        time.sleep(0.5)
        began = time.monotonic()
        short.send("short", "the Rabbit", 5, model="joined", pause_s=0.05)
        got = short.until_final("short")
        took = time.monotonic() - began
        rest = long.until_final("long")
    finally:
        long.close()
        short.close()
    assert [char for _, char, _, _ in got[:-1]] == list(model[0].generate("the Rabbit", 5))
    assert [char for _, char, _, _ in rest[:-1]] == list(model[0].generate("Alice was", 60))
    assert took < 1.5, took  # without continuous batching it waits for the long one: about 2.5 s more
