"""Text generation over HTTP: the Open Inference Protocol's generate extension and the OpenAI-compatible API.

Both take a request in their own JSON, turn it into one generation request for the model's handler (a JSON body,
``PROTOCOL_GENERATE``: ``prompt``, ``messages`` for a chat, ``max_tokens``, ``temperature``, ``top_p``, ``stop``,
``seed``, and the rest under ``parameters``), and give back the text the handler makes in their own form: whole
(``/generate``, ``"stream": false``), or as server-sent events, each piece as it is made (``/generate_stream``,
``"stream": true``; ``data: [DONE]`` ends OpenAI's). Only models whose config says ``generative: true`` take them.

The request side is ``Generation.adapt`` (called by the transports before they submit); the answer side is the
``AnswerForm`` it returns for that request: ``whole`` for one JSON answer, ``piece`` / ``last`` / ``failed`` for a
stream (``dms.rest.chunked_answer`` writes them on DMS's HTTP/1.1; through the ASGI adapter a stream is sent in
one go, its pieces joined).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from starlette.responses import Response

from dms.dataplane import DataPlane
from dms.errors import DMSError, InputError, error_from_wire
from dms.messages import ResponseItem
from dms.rest.errors import HTTP_STATUS
from dms.rest.forwarding import Reply

FINISH_HEADER = "x-finish-reason"
TOKENS_HEADER = "x-completion-tokens"
PROMPT_TOKENS_HEADER = "x-prompt-tokens"
"""The worker's report of a generation (``dms.worker.generation``), on the request's last answer."""

_SAMPLING = ("max_tokens", "temperature", "top_p", "stop", "seed")
SSE = "text/event-stream; charset=utf-8"


class AnswerForm(Protocol):
    """How one request's answer is written in its protocol."""

    stream: bool
    """The client asked for the answer as it is made."""

    def whole(self, result: ResponseItem) -> Reply: ...

    def piece(self, body: bytes) -> bytes: ...

    def last(self, result: ResponseItem) -> bytes: ...

    def failed(self, error: DMSError) -> bytes | None:
        """What ends a stream that broke after its head went out (None: drop the connection)."""
        ...


@dataclass
class Adapted:
    name: str
    body: bytes
    form: AnswerForm


def _event(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _usage(result: ResponseItem) -> tuple[str, dict[str, int]]:
    headers = dict(result.headers)
    prompt, completion = int(headers.get(PROMPT_TOKENS_HEADER, 0)), int(headers.get(TOKENS_HEADER, 0))
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return headers.get(FINISH_HEADER, "stop"), usage


def _error_of(result: ResponseItem) -> DMSError | None:
    return None if result.error is None else error_from_wire(result.error.type_name, result.error.message)


def _json_reply(status: int, data: Any) -> Reply:
    return Reply.content(status, orjson.dumps(data), "application/json")


def oip_generate_error(exc: DMSError) -> Response:
    return Response(orjson.dumps({"error": exc.message}), HTTP_STATUS[exc.kind], media_type="application/json")


def openai_error(exc: DMSError) -> Response:
    kind = "invalid_request_error" if HTTP_STATUS[exc.kind] < 500 else "server_error"
    body = {"error": {"message": exc.message, "type": kind, "param": None, "code": None}}
    return Response(orjson.dumps(body), HTTP_STATUS[exc.kind], media_type="application/json")


class OipGenerateForm:
    """``{"model_name", "model_version", "text_output"}``; streamed, one such event per piece with ``"done"``."""

    def __init__(self, name: str, version: str, stream: bool) -> None:
        self.name, self.version, self.stream = name, version, stream

    def _answer(self, text: str, **more: Any) -> dict[str, Any]:
        return {"model_name": self.name, "model_version": self.version, "text_output": text, **more}

    def whole(self, result: ResponseItem) -> Reply:
        text = result.body.decode("utf-8", "replace")
        finish, _ = _usage(result)
        if self.stream:  # a stream sent in one go (the ASGI adapter)
            body = _event(self._answer(text, done=False)) + self.last(ResponseItem(200, b"", "", result.headers))
            return Reply.content(200, body, SSE)
        return _json_reply(200, self._answer(text, finish_reason=finish))

    def piece(self, body: bytes) -> bytes:
        return _event(self._answer(body.decode("utf-8", "replace"), done=False))

    def last(self, result: ResponseItem) -> bytes:
        finish, _ = _usage(result)
        return _event(self._answer(result.body.decode("utf-8", "replace"), done=True, finish_reason=finish))

    def failed(self, error: DMSError) -> bytes | None:
        return _event({"error": error.message})


class OpenAIForm:
    """OpenAI's completion (``chat``: chat completion) objects, whole or as ``chunk`` events ending ``[DONE]``."""

    def __init__(self, name: str, request_id: str, chat: bool, stream: bool, include_usage: bool) -> None:
        self.name, self.chat, self.stream, self.include_usage = name, chat, stream, include_usage
        self.id = ("chatcmpl-" if chat else "cmpl-") + request_id
        self.created = int(time.time())
        self.started = False

    def _object(self, kind: str, choices: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.name, "choices": choices, **more}

    def _choice(self, text: str | None, finish: str | None) -> dict[str, Any]:
        if not self.chat:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        delta: dict[str, Any] = {} if text is None else {"content": text}
        if not self.started:
            delta["role"] = "assistant"
            self.started = True
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def whole(self, result: ResponseItem) -> Reply:
        if self.stream:  # a stream sent in one go (the ASGI adapter)
            body = self.piece(result.body) + self.last(ResponseItem(200, b"", "", result.headers))
            return Reply.content(200, body, SSE)
        text = result.body.decode("utf-8", "replace")
        finish, usage = _usage(result)
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            return _json_reply(200, self._object("chat.completion", [choice], usage=usage))
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return _json_reply(200, self._object("text_completion", [choice], usage=usage))

    @property
    def _chunk_kind(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def piece(self, body: bytes) -> bytes:
        return _event(self._object(self._chunk_kind, [self._choice(body.decode("utf-8", "replace"), None)]))

    def last(self, result: ResponseItem) -> bytes:
        finish, usage = _usage(result)
        out = self.piece(result.body) if result.body else b""
        out += _event(self._object(self._chunk_kind, [self._choice(None if self.chat else "", finish)]))
        if self.include_usage:
            out += _event(self._object(self._chunk_kind, [], usage=usage))
        return out + b"data: [DONE]\n\n"

    def failed(self, error: DMSError) -> bytes | None:
        kind = "invalid_request_error" if HTTP_STATUS[error.kind] < 500 else "server_error"
        return _event({"error": {"message": error.message, "type": kind, "param": None, "code": None}})


class Generation:
    """One generation protocol's request side (``kind``: ``oip``, ``oip_stream``, ``completions``, ``chat``)."""

    def __init__(self, dataplane: DataPlane, kind: str) -> None:
        self.dataplane = dataplane
        self.kind = kind

    def adapt(self, name: str, version: str | None, body: bytes, request_id: str) -> Adapted:
        """The model's generation request and the answer's form, from the client's request; ``InputError`` when
        the request or the model does not fit."""
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"the request body is not valid JSON: {exc}") from exc
        if not isinstance(request, dict):
            raise InputError("the request body must be a JSON object")
        form: AnswerForm
        if self.kind.startswith("oip"):
            generation = self._oip(request)
            form = OipGenerateForm(name, self._version(name, version), self.kind == "oip_stream")
        else:
            model = request.get("model")
            if not isinstance(model, str) or not model:
                raise InputError("the request names no model (model)")
            name = model
            generation = self._openai(request)
            stream = request.get("stream") is True
            options = request.get("stream_options") or {}
            include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
            form = OpenAIForm(name, request_id, self.kind == "chat", stream, include_usage)
        self._check_generative(name, version)
        return Adapted(name, orjson.dumps(generation), form)

    def _version(self, name: str, version: str | None) -> str:
        return self.dataplane.version_of(name, version)

    def _check_generative(self, name: str, version: str | None) -> None:
        model = self.dataplane.registry.get(name, version)  # ModelNotFoundError if it is not there
        if not model.config.generative:
            raise InputError(f"model {name} does not generate text (its config does not say generative: true)")

    def _oip(self, request: dict[str, Any]) -> dict[str, Any]:
        text = request.get("text_input")
        if not isinstance(text, str):
            raise InputError("the request has no text_input string")
        parameters = request.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InputError("parameters must be a JSON object")
        generation = {key: parameters[key] for key in _SAMPLING if key in parameters}
        generation["prompt"] = text
        generation["parameters"] = {k: v for k, v in parameters.items() if k not in _SAMPLING and k != "stream"}
        return generation

    def _openai(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("n", 1) != 1:
            raise InputError("n: only one choice per request is served")
        generation = {key: request[key] for key in _SAMPLING if request.get(key) is not None}
        generation.setdefault("max_tokens", request.get("max_completion_tokens") or 16)
        if self.kind == "chat":
            messages = request.get("messages")
            if not isinstance(messages, list) or not messages or not all(_is_message(m) for m in messages):
                raise InputError("messages must be a list of {role, content} objects")
            generation["messages"] = messages
            generation["prompt"] = _content_text(messages[-1]["content"])
        else:
            prompt = request.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1:
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise InputError("prompt must be a string")
            generation["prompt"] = prompt
        known = {*_SAMPLING, "model", "messages", "prompt", "stream", "stream_options", "n", "max_completion_tokens"}
        generation["parameters"] = {k: v for k, v in request.items() if k not in known}
        return generation


def _is_message(message: Any) -> bool:
    return isinstance(message, dict) and isinstance(message.get("role"), str) and "content" in message


def _content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    raise InputError("a message's content must be a string or a list of parts")
