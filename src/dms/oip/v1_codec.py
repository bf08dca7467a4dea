"""KServe v1: ``{"instances": [...]}`` → ``{"predictions": [...]}``, ``{"inputs": ...}`` → ``{"outputs": ...}``.

Binary values travel as ``{"b64": "..."}`` both ways.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import orjson

from dms.errors import InputError


def decode_v1_body(body: bytes) -> tuple[str, Any]:
    """("instances" or "inputs", the values with ``{"b64": ...}`` turned into bytes)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"the request is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InputError('the request must be an object with "instances" or "inputs"')
    for key in ("instances", "inputs"):
        if key in document:
            return key, _unwrap(document[key])
    raise InputError('the request needs "instances" or "inputs"')


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError, TypeError) as exc:
                raise InputError(f"a b64 value is not valid base64: {exc}") from exc
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def _wrap(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {k: _wrap(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wrap(v) for v in value]
    return value


def encode_v1_response(key: str, result: Any, explaining: bool = False) -> bytes:
    """The answer to a request that sent ``key`` (``instances``: ``predictions``; ``inputs``: ``outputs``); to an
    explanation (``:explain``), ``explanations``, as KServe's explainers and TorchServe's envelope answer."""
    answer = "explanations" if explaining else "predictions" if key == "instances" else "outputs"
    return orjson.dumps({answer: _wrap(result)}, option=orjson.OPT_SERIALIZE_NUMPY)
