"""``tensor``: numpy arrays in (JSON lists or ``.npy``), JSON lists out.

A request holds one or more rows for the model: a JSON list (``[[...], ...]``, or one row
without the batch dimension), ``{"inputs": ...}`` with a list or a dict of named lists, or a
``.npy`` file. Concurrent requests run as one batch along dimension 0 and are split again.
"""

from __future__ import annotations

from typing import Any

from dms.context import Context
from dms.errors import DMSError, InputError, UnsupportedMediaTypeError
from dms.handlers.base import BaseHandler, request_payload
from dms.handlers.numpy_files import load_numpy_body
from dms.handlers.payloads import PICKLE_TYPES
from dms.oip.tensors import DEFAULT_MAX_ELEMENTS
from dms.runtimes.tensor_exec import expected_inputs, run_named


class TensorHandler(BaseHandler):
    def handle(self, data: list[dict[str, Any]] | None, context: Context) -> list[Any] | None:
        if data is None:
            return None
        self._refuse_pickle(len(data))
        max_elements = int(self.limits.get("max_tensor_elements", DEFAULT_MAX_ELEMENTS))
        named = [self._named_values(request_payload(row), max_elements) for row in data]
        results = []
        for outcome in run_named(self.runtime, named, max_elements):
            if isinstance(outcome, DMSError):
                raise outcome  # the service then runs each request alone, so only this one fails
            lists = {name: value.tolist() for name, value in outcome.items()}
            results.append(next(iter(lists.values())) if len(lists) == 1 else lists)
        return results

    def _refuse_pickle(self, count: int) -> None:
        for index in range(count):
            content_type = (self.context.get_request_header(index, "content-type") or "").split(";")[0].strip()
            if content_type.lower() in PICKLE_TYPES:
                raise UnsupportedMediaTypeError(
                    f"{content_type} bodies are refused: unpickling request data can run arbitrary code. "
                    "Send JSON or .npy instead."
                )

    def _named_values(self, payload: Any, max_elements: int) -> dict[str, Any]:
        specs = self.runtime.inputs
        if isinstance(payload, bytes | bytearray):
            payload = load_numpy_body(bytes(payload), max_elements)
            if isinstance(payload, dict):
                return payload  # .npz: arrays by input name
        if isinstance(payload, dict):
            if "inputs" not in payload:
                raise InputError('a JSON object body needs an "inputs" key')
            payload = payload["inputs"]
        if isinstance(payload, dict):
            return payload
        if len(specs) != 1:
            raise InputError(
                f'this model takes named inputs {expected_inputs(specs)}: send {{"inputs": {{name: data}}}}'
            )
        return {specs[0].name: payload}
