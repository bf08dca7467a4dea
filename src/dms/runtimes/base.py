"""The runtime contract: run named numpy arrays through a model, and describe its signature."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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


class Runtime(Protocol):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run one call; every feed carries the batch along dimension 0."""
        ...
