"""``tensor``: numpy arrays in (JSON lists or ``.npy``), JSON lists out.

A request holds one or more rows for a single-input model: a JSON list (``[[...], ...]``, or
one row without the batch dimension), ``{"inputs": ...}`` with a list or a dict of named lists,
or a ``.npy`` file. Concurrent requests are concatenated along dimension 0, run once, and split.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from dms.errors import InputError, PayloadTooLargeError, UnsupportedMediaTypeError
from dms.handlers.base import BaseHandler, request_payload
from dms.runtimes import TensorSpec

_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_TYPES = (
    "application/python-pickle",
    "application/x-python-pickle",
    "application/pickle",
    "application/x-pickle",
)


class TensorHandler(BaseHandler):
    def preprocess(self, data: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        for index in range(len(data)):
            content_type = (self.context.get_request_header(index, "content-type") or "").split(";")[0].strip()
            if content_type.lower() in _PICKLE_TYPES:
                raise UnsupportedMediaTypeError(
                    f"{content_type} bodies are refused: unpickling request data can run arbitrary code. "
                    "Send JSON or .npy instead."
                )
        per_request = [self._request_arrays(request_payload(row)) for row in data]
        self._rows = [rows for _, rows, _ in per_request]
        self._squeezed = [squeezed for _, _, squeezed in per_request]
        return {
            spec.name: np.concatenate([arrays[spec.name] for arrays, _, _ in per_request])
            for spec in self.runtime.inputs
        }

    def postprocess(self, outputs: dict[str, np.ndarray]) -> list[Any]:
        bounds = np.cumsum([0, *self._rows])
        results: list[Any] = []
        for index, squeezed in enumerate(self._squeezed):
            part = {name: value[bounds[index] : bounds[index + 1]] for name, value in outputs.items()}
            if squeezed:
                part = {name: value[0] for name, value in part.items()}
            lists = {name: value.tolist() for name, value in part.items()}
            results.append(next(iter(lists.values())) if len(lists) == 1 else lists)
        return results

    def _request_arrays(self, payload: Any) -> tuple[dict[str, np.ndarray], int, bool]:
        named = self._named_values(payload)
        max_elements = int(self.limits.get("max_tensor_elements", 50_000_000))
        arrays: dict[str, np.ndarray] = {}
        rows_seen: set[int] = set()
        squeezed = False
        for spec in self.runtime.inputs:
            if spec.name not in named:
                raise InputError(f"input {spec.name!r} is missing; the model expects {_expected(self.runtime.inputs)}")
            array, was_squeezed = _conform(named[spec.name], spec)
            if array.size > max_elements:
                raise PayloadTooLargeError(
                    f"input {spec.name!r} has {array.size} elements, over max_tensor_elements ({max_elements})"
                )
            squeezed = squeezed or was_squeezed
            arrays[spec.name] = array
            rows_seen.add(array.shape[0])
        if len(rows_seen) > 1:
            raise InputError(f"inputs disagree on the batch dimension: {sorted(rows_seen)}")
        return arrays, rows_seen.pop(), squeezed

    def _named_values(self, payload: Any) -> dict[str, Any]:
        specs = self.runtime.inputs
        if isinstance(payload, bytes | bytearray):
            if not bytes(payload[:6]) == _NPY_MAGIC:
                raise InputError("binary request body must be a .npy file (or send JSON)")
            try:
                value: Any = np.load(io.BytesIO(payload), allow_pickle=False)
            except ValueError as exc:
                raise InputError(f"could not read the .npy body: {exc}") from exc
            payload = value
        if isinstance(payload, dict):
            if "inputs" not in payload:
                raise InputError('a JSON object body needs an "inputs" key')
            payload = payload["inputs"]
        if isinstance(payload, dict):
            return payload
        if len(specs) != 1:
            raise InputError(f'this model takes named inputs {_expected(specs)}: send {{"inputs": {{name: data}}}}')
        return {specs[0].name: payload}


def _conform(value: Any, spec: TensorSpec) -> tuple[np.ndarray, bool]:
    try:
        array = np.asarray(value)
        if array.dtype == object:
            raise ValueError("ragged or non-numeric data")
        array = array.astype(spec.dtype, casting="same_kind" if array.dtype.kind == "f" else "unsafe")
    except (ValueError, TypeError) as exc:
        raise InputError(f"input {spec.name!r} is not a {spec.dtype} tensor: {exc}") from exc
    squeezed = False
    if array.ndim == len(spec.shape) - 1:
        array, squeezed = array[None, ...], True
    expected = tuple(spec.shape)
    if array.ndim != len(expected) or any(
        want not in (-1, got) for want, got in zip(expected[1:], array.shape[1:], strict=True)
    ):
        raise InputError(
            f"input {spec.name!r} has shape {list(array.shape)}; the model expects {list(expected)} (-1: any size)"
        )
    return array, squeezed


def _expected(specs: list[TensorSpec]) -> str:
    return ", ".join(f"{s.name}: {s.dtype}{list(s.shape)}" for s in specs)
