"""Keras 3 models (``.keras``), on Keras's torch backend so no TensorFlow is needed.

Loaded with ``safe_mode=True`` (no arbitrary code from lambda layers). Given a folder, the newest
``.keras`` checkpoint in it is served.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dms.errors import ArchiveError
from dms.tensor_spec import TensorSpec


def newest_checkpoint(path: Path) -> Path:
    if path.is_file():
        return path
    checkpoints = sorted(path.glob("*.keras"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise ArchiveError(f"the folder {path.name} holds no .keras checkpoint")
    return checkpoints[-1]


class KerasRuntime:
    platform = "keras"

    def __init__(self, path: Path, options: dict[str, Any], cpu_threads: int) -> None:
        os.environ.setdefault("KERAS_BACKEND", str(options.get("backend", "torch")))
        import keras

        if keras.backend.backend() == "torch":
            import torch

            torch.set_num_threads(max(1, cpu_threads))
        checkpoint = newest_checkpoint(path)
        try:
            self.model = keras.saving.load_model(str(checkpoint), safe_mode=True)
        except Exception as exc:
            raise ArchiveError(f"Keras could not load {checkpoint.name}: {exc}") from exc
        self._to_numpy = keras.ops.convert_to_numpy
        self.inputs = [
            TensorSpec(
                getattr(t, "name", f"input{i}") or f"input{i}",
                str(t.dtype),
                tuple(-1 if d is None else int(d) for d in t.shape),
            )
            for i, t in enumerate(self.model.inputs)
        ]
        self.outputs = [
            TensorSpec(f"output{i}", str(t.dtype), tuple(-1 if d is None else int(d) for d in t.shape))
            for i, t in enumerate(self.model.outputs)
        ]

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        arrays = [feeds[spec.name] for spec in self.inputs]
        result = self.model(arrays[0] if len(arrays) == 1 else arrays, training=False)
        values = list(result) if isinstance(result, list | tuple) else [result]
        return {spec.name: np.asarray(self._to_numpy(v)) for spec, v in zip(self.outputs, values, strict=False)}
