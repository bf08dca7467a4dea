"""Turn one forwarded request into the ``data`` dict handlers receive (as MMS and TorchServe do).

Raw bodies go under ``body``; JSON bodies arrive parsed, text bodies as ``str``, anything else as
``bytes``; multipart form fields, query parameters and the fields of TorchServe's gRPC ``Predictions``
(``PROTOCOL_FIELDS``, as ``bytes``) go under their own names.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import orjson
from python_multipart.multipart import parse_options_header

from dms.errors import InputError
from dms.messages import PROTOCOL_FIELDS, RequestItem, RequestLimits
from dms.worker.json_depth import json_depth_exceeds
from dms.worker.multipart_form import parse_multipart

_DEFAULT_LIMITS = RequestLimits()
_fields = msgspec.msgpack.Decoder(dict[str, bytes])


def decode_value(raw: bytes, content_type: str, limits: RequestLimits) -> Any:
    """Decode one payload by its media type: JSON parsed, text decoded, others untouched."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        if json_depth_exceeds(raw, limits.max_json_depth):
            raise InputError(f"JSON body nests deeper than max_json_depth ({limits.max_json_depth} levels)")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"request body is not valid JSON: {exc}") from exc
    if media.startswith("text/"):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"request body is not valid UTF-8 text: {exc}") from exc
    return raw


def build_request_data(item: RequestItem, limits: RequestLimits = _DEFAULT_LIMITS) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, text in item.query:
        data[key] = text
    if item.protocol == PROTOCOL_FIELDS:
        try:
            data.update(_fields.decode(item.body))
        except msgspec.DecodeError as exc:
            raise InputError(f"the request's fields could not be read: {exc}") from exc
        return data
    media = item.content_type.split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        _, params = parse_options_header(item.content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise InputError("multipart/form-data request has no boundary")
        for name, content_type, value in parse_multipart(item.body, boundary, limits.max_multipart_parts):
            data[name] = decode_value(value, content_type, limits) if content_type else value
    elif media == "application/x-www-form-urlencoded" and _FORM.fullmatch(item.body):
        from urllib.parse import parse_qsl

        for key, field in parse_qsl(item.body.decode("ascii"), keep_blank_values=True):
            data[key] = field
    else:
        # A body labelled as a form that is not one (curl's --data-binary @kitten.jpg and -d @request.json send
        # that label) reaches the handler as it came, as it would with no content type.
        data["body"] = decode_value(item.body, item.content_type, limits)
    return data


_FORM = re.compile(rb"(?:[A-Za-z0-9._~%+*!$'(),;:@/?-]*=[A-Za-z0-9._~%+*!$'(),;:@/?=-]*(?:&|$))*")
"""An URL-encoded form as clients write one: ``name=value`` pairs joined by ``&``, in the characters that need no
percent-encoding (anything else, a space, a quote, a brace, a byte over 127, is percent-encoded in a real form)."""
