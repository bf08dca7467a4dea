"""Encode what a handler returned for one request into a response item."""

from __future__ import annotations

from typing import Any

import orjson

from dms.context import RequestProcessor
from dms.errors import HandlerError
from dms.messages import ResponseItem

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def encode_output(value: Any, proc: RequestProcessor, model_name: str) -> ResponseItem:
    if isinstance(value, bytes | bytearray | memoryview):
        body, default_type = bytes(value), "application/octet-stream"
    elif isinstance(value, str):
        body, default_type = value.encode("utf-8"), "text/plain; charset=utf-8"
    else:
        try:
            body = orjson.dumps(value, option=_JSON_OPTIONS)
        except TypeError as exc:
            raise HandlerError(
                f"model {model_name}: handler returned a {type(value).__name__} that cannot be encoded as JSON ({exc})"
            ) from exc
        default_type = "application/json"
    return ResponseItem(
        status=proc.status or 200,
        body=body,
        content_type=proc.content_type or default_type,
        headers=list(proc.response_headers.items()),
    )
