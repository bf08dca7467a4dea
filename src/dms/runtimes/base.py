"""The runtime contract: run named numpy arrays through a model, and describe its signature."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    """numpy dtype name, e.g. ``float32``."""
    shape: tuple[int, ...] | None
    """-1 for a variable dimension; None when the format does not record the shape at all."""

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "datatype": self.dtype,
            "shape": list(self.shape) if self.shape is not None else [-1],
        }


def declared_specs(entries: Any) -> list[TensorSpec]:
    """TensorSpecs from a model config's ``inputs``/``outputs`` list of {name, datatype, shape}."""
    from dms.oip.tensors import numpy_dtype

    if not isinstance(entries, list):
        return []
    return [
        TensorSpec(
            str(e["name"]),
            numpy_dtype(str(e.get("datatype", "FP32"))).name,
            tuple(e["shape"]) if "shape" in e else None,
        )
        for e in entries
        if isinstance(e, dict) and "name" in e
    ]


class Runtime(Protocol):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run one call; every feed carries the batch along dimension 0."""
        ...
