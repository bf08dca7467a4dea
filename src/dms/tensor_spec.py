"""A model's input or output as its signature describes it: name, numpy dtype, shape.

Shared by the runtimes (which read it off a model), the protocol codecs (which check requests against it) and the
worker (which reports it to the server); it depends on nothing of DMS.
"""

from __future__ import annotations

from dataclasses import dataclass


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
