"""The generation protocols' requests and answers (``dms.rest.generation``), with no server: what the model's
handler is handed, and how its text comes back whole or as server-sent events."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from dms.errors import InputError, ModelNotFoundError
from dms.messages import ResponseItem
from dms.rest.generation import Generation, OipGenerateForm, OpenAIForm

FINISHED = [("x-finish-reason", "length"), ("x-completion-tokens", "3"), ("x-prompt-tokens", "5")]


class Registry:
    def get(self, name: str, version: str | None) -> SimpleNamespace:
        if name == "nobody":
            raise ModelNotFoundError(f"model {name} is not registered")
        return SimpleNamespace(config=SimpleNamespace(generative=name != "classifier"))


DATAPLANE = SimpleNamespace(registry=Registry(), version_of=lambda name, version: version or "1")


def adapt(kind: str, request: dict, name: str = "writer"):
    return Generation(DATAPLANE, kind).adapt(name, None, orjson.dumps(request), "r1")  # type: ignore[arg-type]


def events(data: bytes) -> list[object]:
    parts = [part.removeprefix(b"data: ") for part in data.split(b"\n\n") if part]
    return [part.decode() if part == b"[DONE]" else orjson.loads(part) for part in parts]


def test_oip_request_becomes_a_generation_request() -> None:
    adapted = adapt("oip", {"text_input": "Hi", "parameters": {"max_tokens": 4, "stop": ["."], "top_k": 3}})
    assert orjson.loads(adapted.body) == {"max_tokens": 4, "stop": ["."], "prompt": "Hi", "parameters": {"top_k": 3}}
    assert adapted.name == "writer" and not adapted.form.stream


def test_openai_chat_request_names_its_model_in_the_body() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
    ]
    adapted = adapt("chat", {"model": "writer", "messages": messages, "stream": True, "user": "u1"}, name="")
    generation = orjson.loads(adapted.body)
    assert generation == {"max_tokens": 16, "messages": messages, "prompt": "Hi", "parameters": {"user": "u1"}}
    assert adapted.name == "writer" and adapted.form.stream


@pytest.mark.parametrize(
    ("kind", "request_", "error", "message"),
    [
        ("oip", {"parameters": {}}, InputError, "text_input"),
        ("completions", {"prompt": "x"}, InputError, "names no model"),
        ("completions", {"model": "writer", "prompt": 3}, InputError, "prompt"),
        ("completions", {"model": "writer", "prompt": "x", "n": 2}, InputError, "one choice"),
        ("chat", {"model": "writer", "messages": [{"content": "x"}]}, InputError, "messages"),
        ("completions", {"model": "classifier", "prompt": "x"}, InputError, "does not generate text"),
        ("completions", {"model": "nobody", "prompt": "x"}, ModelNotFoundError, "not registered"),
    ],
)
def test_requests_that_do_not_fit(kind: str, request_: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        adapt(kind, request_, name="")


def test_oip_stream_events() -> None:
    form = OipGenerateForm("writer", "1", stream=True)
    out = form.piece(b"Al") + form.piece(b"ice") + form.last(ResponseItem(200, b"", "", FINISHED))
    assert events(out) == [
        {"model_name": "writer", "model_version": "1", "text_output": "Al", "done": False},
        {"model_name": "writer", "model_version": "1", "text_output": "ice", "done": False},
        {"model_name": "writer", "model_version": "1", "text_output": "", "done": True, "finish_reason": "length"},
    ]


def test_openai_chat_stream_chunks_end_with_usage_and_done() -> None:
    form = OpenAIForm("writer", "r1", chat=True, stream=True, include_usage=True)
    out = form.piece(b"Hi") + form.piece(b"!") + form.last(ResponseItem(200, b"", "", FINISHED))
    first, second, last, usage, done = events(out)
    assert first["object"] == "chat.completion.chunk" and first["id"] == "chatcmpl-r1"  # type: ignore[index]
    assert first["choices"][0]["delta"] == {"content": "Hi", "role": "assistant"}  # type: ignore[index]
    assert second["choices"][0]["delta"] == {"content": "!"}  # type: ignore[index]
    assert last["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}  # type: ignore[index]
    assert usage["choices"] == [] and usage["usage"] == {  # type: ignore[index]
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "total_tokens": 8,
    }
    assert done == "[DONE]"


def test_openai_completion_whole() -> None:
    reply = OpenAIForm("writer", "r1", chat=False, stream=False, include_usage=False).whole(
        ResponseItem(200, b"Alice", "text/plain", FINISHED)
    )
    answer = orjson.loads(reply.body)
    assert answer["object"] == "text_completion" and answer["choices"][0]["text"] == "Alice"
    assert answer["usage"]["total_tokens"] == 8 and reply.status == 200


def test_a_stream_through_asgi_is_sent_in_one_go() -> None:
    reply = OpenAIForm("writer", "r1", chat=True, stream=True, include_usage=False).whole(
        ResponseItem(200, b"Alice", "text/plain", FINISHED)
    )
    parts = events(reply.body)
    assert parts[0]["choices"][0]["delta"]["content"] == "Alice" and parts[-1] == "[DONE]"  # type: ignore[index]
    assert dict(reply.headers)[b"content-type"].startswith(b"text/event-stream")
