"""Run named numpy tensors from many requests through a runtime as one batch, and split the answers.

Inputs are checked against the runtime's signature (missing names, dtype, shape, element cap);
a request that fails the checks gets its own error while the rest still run.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np

from dms.errors import DMSError, InputError, PayloadTooLargeError
from dms.runtimes import Runtime, TensorSpec


def expected_inputs(specs: list[TensorSpec]) -> str:
    return ", ".join(f"{s.name}: {s.dtype}{list(s.shape) if s.shape is not None else '[...]'}" for s in specs)


@functools.cache
def _dtype(name: str) -> np.dtype[Any]:
    """``np.dtype(name)``, parsed once per name (the names of a model's input signature)."""
    return np.dtype(name)


def conform(value: Any, spec: TensorSpec, max_elements: int) -> tuple[np.ndarray, bool]:
    """``value`` as an array of the input's dtype with a batch dimension; also whether one was added."""
    # Usually the protocol's decoder already made an array of the right dtype.
    array = value if type(value) is np.ndarray and value.dtype == _dtype(spec.dtype) else _converted(value, spec)
    if array.size > max_elements:  # checked before any reshaping
        raise PayloadTooLargeError(
            f"input {spec.name!r} has {array.size} elements, over max_tensor_elements ({max_elements})"
        )
    if spec.shape is None:  # the format records no shape: pass the tensor as it came
        return array, False
    added = False
    if array.ndim == len(spec.shape) - 1:
        array, added = array[None, ...], True
    if (
        array.ndim != len(spec.shape)
        or (
            array.shape[1:] != spec.shape[1:]  # equal (no -1 past the batch dimension) is the usual case
            and any(want not in (-1, got) for want, got in zip(spec.shape[1:], array.shape[1:], strict=True))
        )
    ):
        raise InputError(
            f"input {spec.name!r} has shape {list(array.shape)}; the model expects {list(spec.shape)} (-1: any size)"
        )
    return array, added


def _converted(value: Any, spec: TensorSpec) -> np.ndarray:
    try:
        array = np.asarray(value)
        if spec.dtype != "object":
            if array.dtype.kind == "O":
                raise ValueError("ragged or non-numeric data")
            casting = "same_kind" if array.dtype.kind == "f" and array.dtype.itemsize <= 8 else "unsafe"
            array = array.astype(_dtype(spec.dtype), casting=casting, copy=False)  # type: ignore[call-overload]
    except (ValueError, TypeError) as exc:
        raise InputError(f"input {spec.name!r} is not a {spec.dtype} tensor: {exc}") from exc
    return array


def prepare(named: dict[str, Any], specs: list[TensorSpec], max_elements: int) -> tuple[dict[str, np.ndarray], bool]:
    """One request's feeds, every input present and conformed; and whether a batch dim was added."""
    for spec in specs:
        if spec.name not in named:
            raise InputError(f"input {spec.name!r} is missing; the model expects {expected_inputs(specs)}")
    if len(named) > len(specs):  # every spec's name is in it, so some other name is too
        unknown = set(named) - {s.name for s in specs}
        raise InputError(f"unknown input {sorted(unknown)[0]!r}; the model expects {expected_inputs(specs)}")
    feeds: dict[str, np.ndarray] = {}
    added_any = False
    for spec in specs:
        feeds[spec.name], added = conform(named[spec.name], spec, max_elements)
        added_any = added_any or added
    if len(feeds) > 1:  # one input cannot disagree with itself
        rows = {array.shape[0] for array in feeds.values()}
        if len(rows) > 1:
            raise InputError(f"inputs disagree on the batch dimension: {sorted(rows)}")
    return feeds, added_any


def run_named(
    runtime: Runtime, requests: list[dict[str, Any]], max_elements: int
) -> list[dict[str, np.ndarray] | DMSError]:
    """Each request's outputs (or its error), running all valid requests as one batch."""
    results: list[dict[str, np.ndarray] | DMSError] = []
    prepared: list[tuple[int, dict[str, np.ndarray], bool]] = []
    for index, named in enumerate(requests):
        try:
            feeds, added = prepare(named, runtime.inputs, max_elements)
        except DMSError as exc:
            results.append(exc)
            continue
        results.append({})
        prepared.append((index, feeds, added))
    if not prepared:
        return results
    for index, outputs in _run_together(runtime, prepared):
        results[index] = outputs
    return results


def _run_together(
    runtime: Runtime, prepared: list[tuple[int, dict[str, np.ndarray], bool]]
) -> list[tuple[int, dict[str, np.ndarray] | DMSError]]:
    rows = [next(iter(feeds.values())).shape[0] for _, feeds, _ in prepared]
    if len(prepared) == 1:
        batch = prepared[0][1]
    else:
        batch = {spec.name: np.concatenate([feeds[spec.name] for _, feeds, _ in prepared]) for spec in runtime.inputs}
    try:
        outputs = runtime.run(batch)
    except DMSError as exc:
        if len(prepared) == 1:
            return [(prepared[0][0], exc)]
        return [pair for item in prepared for pair in _run_together(runtime, [item])]
    bounds = list(itertools.accumulate(rows, initial=0))
    split: list[tuple[int, dict[str, np.ndarray] | DMSError]] = []
    for position, (index, _, added) in enumerate(prepared):
        part = {name: value[bounds[position] : bounds[position + 1]] for name, value in outputs.items()}
        split.append((index, {name: value[0] for name, value in part.items()} if added else part))
    return split
