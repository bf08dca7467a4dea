"""Streamed answers over /predictions: a generative model (tests/fixtures/char_model.py) served by a real server,
its characters read chunk by chunk over HTTP/1.1 and checked against the same model run in-process.

Two handlers make the same characters: one written to DMS's contract (a generator per request), one written as
TorchServe's documentation shows (``send_intermediate_predict_response``).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import char_model_store
from tests.support import FIXTURES, DmsServer, running_server, wait_for

sys.path.insert(0, str(FIXTURES))
from char_model import CharModel

MODELS = {"chars": "char_generator_handler.py", "ts_chars": "ts_streaming_handler.py"}
PROMPTS = ["Alice was", "the Rabbit", "her sister", "pictures or "]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[CharModel, Path]:
    work = tmp_path_factory.mktemp("char-model")
    config = "batchSize: 4\nmaxBatchDelay: 50\nminWorkers: 1\nmaxWorkers: 1\n"
    models = {name: (handler, config) for name, handler in MODELS.items()}
    models["chars_joined"] = ("char_generator_handler.py", config + "continuous_batching: true\n")
    weights = char_model_store(work, models)
    return CharModel.load(weights), work


@pytest.fixture(scope="module")
def server(model: tuple[CharModel, Path]):
    models = ",".join(f"{name}={name}.mar" for name in [*MODELS, "chars_joined"])
    args = ["--model-store", "store", "--models", models]
    with running_server(model[1], args, env={"DMS_STREAM_STALL_TIMEOUT_S": "3"}) as server:
        yield server


def stream(server: DmsServer, model: str, request: dict) -> tuple[httpx.Response, list[bytes], list[float]]:
    """The answer, its pieces as they arrived, and when each arrived."""
    pieces, times = [], []
    with httpx.stream("POST", f"{server.inference_url}/predictions/{model}", json=request, timeout=60) as response:
        for piece in response.iter_raw():
            pieces.append(piece)
            times.append(time.monotonic())
    return response, pieces, times


@pytest.mark.parametrize("name", list(MODELS))
def test_each_character_arrives_as_it_is_made(server: DmsServer, model: tuple[CharModel, Path], name: str):
    char_model, _ = model
    expected = "".join(char_model.generate("Alice was", 40))
    pause = 0.15 if name == "chars" else 0.0
    response, pieces, times = stream(server, name, {"prompt": "Alice was", "max_tokens": 40, "pause_s": pause})
    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["x-request-id"]
    assert b"".join(pieces).decode() == expected
    if name == "chars":  # each character is its own chunk, sent as it is made: they arrive spread out
        assert [piece.decode() for piece in pieces] == list(expected)
        assert times[-1] - times[0] >= 0.1 * (len(expected) - 1)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_batch_streams_each_answer_to_its_own_client(server: DmsServer, model: tuple[CharModel, Path], name: str):
    char_model, _ = model
    answers: dict[str, str] = {}

    def client(prompt: str) -> None:
        request = {"prompt": prompt, "max_tokens": 30, "temperature": 0.8, "seed": 7, "pause_s": 0.02}
        if name == "ts_chars":
            request = {"prompt": prompt, "max_tokens": 30}
        response, pieces, _ = stream(server, name, request)
        assert response.status_code == 200
        answers[prompt] = b"".join(pieces).decode()

    threads = [threading.Thread(target=client, args=(prompt,)) for prompt in PROMPTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for prompt in PROMPTS:
        if name == "ts_chars":
            assert answers[prompt] == "".join(char_model.generate(prompt, 30))
        else:
            assert answers[prompt] == "".join(char_model.generate(prompt, 30, 0.8, 7))
    metrics = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in httpx.get(f"{server.metrics_url}/metrics", timeout=10).text.splitlines()
        if line.startswith(("dms_time_to_first_chunk_seconds_count", "dms_stream_chunks_total"))
    }
    labels = f'model="{name}",version="1.0"'
    timed = f'model="{name}",transport="raw",version="1.0"'  # the exposition sorts labels by name
    assert metrics[f"dms_time_to_first_chunk_seconds_count{{{timed}}}"] >= len(PROMPTS)
    assert metrics[f"dms_stream_chunks_total{{{labels}}}"] >= 30 * len(PROMPTS) - 1


def test_other_clients_get_the_answer_joined(server: DmsServer, model: tuple[CharModel, Path]):
    """HTTP/1.0 reads to the end of the connection; the OIP-less ASGI path and the TorchServe gRPC unary call are
    covered by the joined answer: here, an HTTP/1.0 client and the management-free /predictions both see all."""
    char_model, _ = model
    expected = "".join(char_model.generate("her sister", 25))
    host, port = server.inference_url.removeprefix("http://").split(":")
    body = json.dumps({"prompt": "her sister", "max_tokens": 25}).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /predictions/chars HTTP/1.0\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, answer = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert answer.decode() == expected


def test_a_client_that_leaves_stops_the_generation(server: DmsServer, tmp_path: Path):
    trace = tmp_path / "trace.txt"
    request = {"prompt": "Alice was", "max_tokens": 400, "temperature": 1.0, "pause_s": 0.05, "trace": str(trace)}
    with httpx.stream("POST", f"{server.inference_url}/predictions/chars", json=request, timeout=60) as response:
        pieces = response.iter_raw()
        for _ in range(5):
            next(pieces)
    wait_for(lambda: trace.exists(), what="the trace")
    time.sleep(1.0)
    made = len(trace.read_text().splitlines())
    time.sleep(1.0)
    assert len(trace.read_text().splitlines()) == made, "the worker went on generating after its client left"
    assert made < 5 + 10
    assert stream(server, "chars", {"prompt": "Alice was", "max_tokens": 5})[0].status_code == 200


def test_a_client_that_reads_nothing_holds_back_only_its_own_answer(server: DmsServer, tmp_path: Path):
    """A client that sends and never reads: the worker goes a few chunks ahead and waits (bounded memory), the
    server gives the client up after stream_stall_timeout_s, and a bystander is served meanwhile."""
    trace = tmp_path / "trace.txt"
    request = json.dumps({"prompt": "Alice was", "max_tokens": 100_000, "temperature": 1.0, "trace": str(trace),
                          "width": 10_000}).encode()  # fmt: skip
    host, port = server.inference_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    client_port = sock.getsockname()[1]
    sock.sendall(
        b"POST /predictions/chars HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(request), request)
    )
    frontend = psutil.Process(server.proc.pid)

    def connected() -> bool:
        return any(c.raddr and c.raddr.port == client_port for c in frontend.net_connections("tcp"))

    try:
        wait_for(lambda: trace.exists(), what="the trace")
        before = frontend.memory_info().rss
        time.sleep(1.0)
        made = len(trace.read_text().splitlines())
        assert made < 2000, "the worker did not wait for its slow client"
        response, _, _ = stream(server, "ts_chars", {"prompt": "the Rabbit", "max_tokens": 10})
        assert response.status_code == 200
        time.sleep(0.5)
        assert len(trace.read_text().splitlines()) == made, "the worker did not wait for its slow client"
        assert frontend.memory_info().rss - before < 20 * 2**20  # 100,000 chunks of 10 kB would be 1 GB
        assert connected()
        wait_for(lambda: not connected(), timeout_s=15, what="the connection dropped by the server")
    finally:
        sock.close()
    assert "stream_stall_timeout_s" in server.log()
    assert stream(server, "chars", {"prompt": "Alice was", "max_tokens": 5})[0].status_code == 200


def test_a_short_answer_ends_before_the_long_one_in_its_batch(server: DmsServer):
    """Two clients in one batch, 3 and 40 characters at 50 ms each: the short answer is complete in well under
    the time of the long one (its end is sent as its generator ends, not with the batch's result)."""
    took: dict[int, float] = {}

    def client(tokens: int) -> None:
        began = time.monotonic()
        response, pieces, _ = stream(server, "chars", {"prompt": "Alice was", "max_tokens": tokens, "pause_s": 0.05})
        assert response.status_code == 200 and len(b"".join(pieces)) == tokens
        took[tokens] = time.monotonic() - began

    # A first request keeps the one worker busy, so that the two behind it wait and go in one batch.
    threads = [threading.Thread(target=client, args=(tokens,)) for tokens in (6, 40, 3)]
    threads[0].start()
    time.sleep(0.1)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join()
    assert took[40] >= 40 * 0.05
    assert took[3] < took[40] / 2, took


@pytest.mark.parametrize("name", ["chars", "chars_joined"])
def test_with_continuous_batching_a_request_joins_a_running_generation(
    server: DmsServer, model: tuple[CharModel, Path], name: str
):
    """A request that arrives while a 60-character answer streams: with ``continuous_batching`` it joins the running
    generation and is done in about its own time; without, it waits for the long one to end."""
    char_model, _ = model
    took: dict[str, float] = {}
    answers: dict[str, str] = {}

    def client(prompt: str, tokens: int) -> None:
        began = time.monotonic()
        response, pieces, _ = stream(server, name, {"prompt": prompt, "max_tokens": tokens, "pause_s": 0.05})
        assert response.status_code == 200
        answers[prompt] = b"".join(pieces).decode()
        took[prompt] = time.monotonic() - began

    long = threading.Thread(target=client, args=("Alice was", 60))
    long.start()
    time.sleep(0.5)
    client("the Rabbit", 5)
    long.join()
    assert answers == {p: "".join(char_model.generate(p, n)) for p, n in (("Alice was", 60), ("the Rabbit", 5))}
    if name == "chars_joined":
        assert took["the Rabbit"] < 1.0, took
    else:
        assert took["the Rabbit"] > 2.0, took  # it waited for the long answer's batch to end
