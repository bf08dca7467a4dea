"""Text generation over HTTP: the Open Inference Protocol's generate extension and the OpenAI-compatible API, with
the official ``openai`` client, against a generative model (tests/fixtures/char_model.py) served by a real server,
each answer checked against the same model run in-process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import char_model_store
from tests.support import FIXTURES, DmsServer, running_server

sys.path.insert(0, str(FIXTURES))
from char_model import CharModel

PROMPT = "Alice was"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[CharModel, Path]:
    work = tmp_path_factory.mktemp("generation")
    handler = "char_generator_handler.py"
    models = {"writer": (handler, "generative: true\nbatchSize: 4\nmaxBatchDelay: 20\n"), "chars": (handler, "")}
    return CharModel.load(char_model_store(work, models)), work


@pytest.fixture(scope="module")
def server(model: tuple[CharModel, Path]):
    args = ["--model-store", "store", "--models", "writer=writer.mar,chars=chars.mar"]
    with running_server(model[1], args) as server:
        yield server


@pytest.fixture(scope="module")
def client(server: DmsServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.inference_url}/v1", api_key="unused", max_retries=0)


def events(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of a server-sent event stream, as they came."""
    return [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]


def test_oip_generate_answers_the_models_text(server: DmsServer, model: tuple[CharModel, Path]):
    expected = "".join(model[0].generate(PROMPT, 30))
    request = {"text_input": PROMPT, "parameters": {"max_tokens": 30}}
    response = httpx.post(f"{server.inference_url}/v2/models/writer/generate", json=request, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer == {
        "model_name": "writer",
        "model_version": "1.0",
        "text_output": expected,
        "finish_reason": "length",
    }


def test_oip_generate_stream_sends_each_piece_as_an_event(server: DmsServer, model: tuple[CharModel, Path]):
    expected = "".join(model[0].generate(PROMPT, 25, 0.9, 4))
    request = {"text_input": PROMPT, "parameters": {"max_tokens": 25, "temperature": 0.9, "seed": 4}}
    url = f"{server.inference_url}/v2/models/writer/versions/1.0/generate_stream"
    with httpx.stream("POST", url, json=request, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        answers = [json.loads(data) for data in events(response)]
    pieces = [a["text_output"] for a in answers if not a["done"]]
    assert pieces == list(expected)
    assert answers[-1] == {"model_name": "writer", "model_version": "1.0", "text_output": "", "done": True,
                           "finish_reason": "length"}  # fmt: skip


def test_a_stop_sequence_ends_the_text_before_it(server: DmsServer, model: tuple[CharModel, Path]):
    full = "".join(model[0].generate(PROMPT, 200, 0.8, 1))
    stop = full[40:46]  # a few characters in: the stop spans several pieces
    expected = full[: full.index(stop)]
    request = {"text_input": PROMPT, "parameters": {"max_tokens": 200, "temperature": 0.8, "seed": 1, "stop": [stop]}}
    with httpx.stream("POST", f"{server.inference_url}/v2/models/writer/generate_stream", json=request) as response:
        answers = [json.loads(data) for data in events(response)]
    assert "".join(a["text_output"] for a in answers) == expected
    assert answers[-1]["finish_reason"] == "stop"


def test_openai_completions(client: openai.OpenAI, model: tuple[CharModel, Path]):
    expected = "".join(model[0].generate(PROMPT, 20))
    completion = client.completions.create(model="writer", prompt=PROMPT, max_tokens=20)
    assert completion.choices[0].text == expected
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (len(PROMPT), 20)
    assert completion.model == "writer" and completion.id.startswith("cmpl-")


def test_openai_streamed_chat(client: openai.OpenAI, model: tuple[CharModel, Path]):
    expected = "".join(model[0].generate("the Rabbit", 30, 0.7, 9))
    stream = client.chat.completions.create(
        model="writer",
        messages=[{"role": "system", "content": "You are a rabbit."}, {"role": "user", "content": "the Rabbit"}],
        max_tokens=30,
        temperature=0.7,
        seed=9,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert "".join(pieces) == expected
    assert len(pieces) == 30  # one character a chunk, as they were made
    assert finish == "length" and usage is not None and usage.completion_tokens == 30


def test_openai_chat_whole_with_a_stop(client: openai.OpenAI, model: tuple[CharModel, Path]):
    full = "".join(model[0].generate("her sister", 60))
    stop = full[10:13]
    answer = client.chat.completions.create(
        model="writer", messages=[{"role": "user", "content": "her sister"}], max_tokens=60, stop=[stop]
    )
    assert answer.choices[0].message.content == full[: full.index(stop)]
    assert answer.choices[0].message.role == "assistant" and answer.choices[0].finish_reason == "stop"


def test_models_lists_the_generative_ones(client: openai.OpenAI, server: DmsServer):
    assert [m.id for m in client.models.list()] == ["writer"]
    assert client.models.retrieve("writer").id == "writer"
    kserve = httpx.get(f"{server.inference_url}/v1/models", timeout=10).json()
    assert kserve["models"] == ["chars", "writer"]  # KServe v1's list, in the same answer


def test_clear_errors(client: openai.OpenAI, server: DmsServer):
    with pytest.raises(openai.BadRequestError, match="does not generate text"):
        client.completions.create(model="chars", prompt=PROMPT, max_tokens=5)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nobody", prompt=PROMPT, max_tokens=5)
    response = httpx.post(f"{server.inference_url}/v1/chat/completions", json={"model": "writer", "messages": []})
    assert response.status_code == 400 and "messages" in response.json()["error"]["message"]
    response = httpx.post(f"{server.inference_url}/v2/models/writer/generate", json={"parameters": {}})
    assert response.status_code == 400 and "text_input" in response.json()["error"]
    request = {"text_input": PROMPT, "parameters": {"max_tokens": -1}}
    response = httpx.post(f"{server.inference_url}/v2/models/writer/generate", json=request)
    assert response.status_code == 400 and "max_tokens" in response.json()["error"]
    assert client.completions.create(model="writer", prompt=PROMPT, max_tokens=3).choices[0].text
