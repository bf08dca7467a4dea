"""Dicts of named arrays as request and response bodies: JSON, ``.npz``, or msgpack (numpy convention).

In msgpack, an array is a map ``{b"nd": True, b"type": dtype string, b"shape": [...], b"data": raw bytes}``,
the convention of the msgpack-numpy package. Pickled bodies are refused unless the operator allowed them.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import msgspec
import numpy as np

from dms.errors import InputError, UnsupportedMediaTypeError
from dms.handlers.numpy_files import load_npz_body
from dms.oip.tensors import DEFAULT_MAX_ELEMENTS

PICKLE_TYPES = (
    "application/python-pickle",
    "application/x-python-pickle",
    "application/pickle",
    "application/x-pickle",
)
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
NPZ_TYPE = "application/x-npz"


def body_kind(content_type: str, payload: Any) -> str:
    media = content_type.split(";")[0].strip().lower()
    if media in PICKLE_TYPES:
        return "pickle"
    if media in MSGPACK_TYPES:
        return "msgpack"
    if isinstance(payload, bytes | bytearray) and bytes(payload[:4]) == b"PK\x03\x04":
        return "npz"
    return "json"


def decode_named(
    payload: Any, kind: str, allow_pickle: bool, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> dict[str, np.ndarray]:
    if kind == "pickle":
        if not allow_pickle:
            raise UnsupportedMediaTypeError(
                "pickled request bodies are refused: unpickling can run arbitrary code. Send JSON, .npz or "
                "msgpack, or start the server with --allow-pickle if every client is trusted"
            )
        named = pickle.loads(bytes(payload))
    elif kind == "msgpack":
        try:
            named = msgspec.msgpack.decode(bytes(payload), dec_hook=None)
        except msgspec.DecodeError as exc:
            raise InputError(f"the msgpack body cannot be decoded: {exc}") from exc
        named = {_text(k): _from_msgpack(v) for k, v in named.items()} if isinstance(named, dict) else named
    elif kind == "npz":
        named = load_npz_body(bytes(payload), max_elements)
    else:
        named = payload
    if not isinstance(named, dict):
        raise InputError("the body must be a dict of named arrays (JSON object, .npz or msgpack map)")
    try:
        return {str(name): np.asarray(value) for name, value in named.items()}
    except (ValueError, TypeError) as exc:
        raise InputError(f"a value is not an array: {exc}") from exc


def _text(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


def _from_msgpack(value: Any) -> Any:
    if not isinstance(value, dict) or not (value.get(b"nd") or value.get("nd")):
        return value
    fields = {_text(k): v for k, v in value.items()}
    try:
        return np.frombuffer(bytes(fields["data"]), dtype=np.dtype(fields["type"])).reshape(fields["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"a msgpack array is malformed: {exc}") from exc


def encode_named(outputs: dict[str, Any], kind: str) -> tuple[Any, str | None]:
    """(body, content type) in the request's form; JSON bodies are returned as a dict for the encoder."""
    arrays = {str(name): np.asarray(value) for name, value in outputs.items()}
    if kind == "npz":
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue(), NPZ_TYPE
    if kind == "msgpack":
        packed = {
            name: {b"nd": True, b"type": array.dtype.str, b"shape": list(array.shape), b"data": array.tobytes()}
            for name, array in arrays.items()
        }
        return msgspec.msgpack.encode(packed), MSGPACK_TYPES[0]
    if kind == "pickle":
        return pickle.dumps(arrays), PICKLE_TYPES[0]
    return {name: array.tolist() for name, array in arrays.items()}, None
