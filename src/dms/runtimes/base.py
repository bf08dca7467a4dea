"""The runtime contract: run named numpy arrays through a model, and describe its signature."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from dms.tensor_spec import TensorSpec

__all__ = ["Runtime", "TensorSpec", "declared_specs"]


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
