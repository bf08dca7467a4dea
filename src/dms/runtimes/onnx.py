"""ONNX Runtime, with threads and graph optimisation chosen from the model config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dms.errors import ArchiveError, InputError
from dms.tensor_spec import TensorSpec

_ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}
_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in arg.shape)
    return TensorSpec(arg.name, _ONNX_TYPES.get(arg.type, arg.type), shape)


class OnnxRuntime:
    """A model file loaded into an ``onnxruntime.InferenceSession``.

    Options (model config ``runtime:``): ``intra_op_threads``, ``inter_op_threads``,
    ``graph_optimization_level`` (disable/basic/extended/all), ``providers``.
    """

    platform = "onnxruntime_onnx"
    """The protocol's platform name for models this runtime serves."""

    def __init__(self, path: Path, options: dict[str, Any], cpu_threads: int) -> None:
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = int(options.get("intra_op_threads", cpu_threads))
        session_options.inter_op_num_threads = int(options.get("inter_op_threads", 1))
        level = str(options.get("graph_optimization_level", "all"))
        if level not in _OPT_LEVELS:
            raise ArchiveError(f"graph_optimization_level must be one of {sorted(_OPT_LEVELS)}")
        session_options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[level])
        providers = options.get("providers") or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), session_options, providers=providers)
        except Exception as exc:
            raise ArchiveError(f"ONNX Runtime could not load {path.name}: {exc}") from exc
        self.inputs = [_spec(arg) for arg in self.session.get_inputs()]
        self.outputs = [_spec(arg) for arg in self.session.get_outputs()]
        # Graphs exported with a batch dimension fixed at 1 get their batches one row at a time.
        self._fixed_single_batch = any(spec.shape is not None and spec.shape[:1] == (1,) for spec in self.inputs)

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        names = output_names or [spec.name for spec in self.outputs]
        rows = next(iter(feeds.values())).shape[0] if feeds else 0
        try:
            if self._fixed_single_batch and rows > 1:
                parts = [self.session.run(names, {k: v[i : i + 1] for k, v in feeds.items()}) for i in range(rows)]
                return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(names)}
            results = self.session.run(names, feeds)
        except Exception as exc:
            if type(exc).__name__ in {"InvalidArgument", "Fail"}:
                raise InputError(f"the model rejected its input: {exc}") from exc
            raise
        return dict(zip(names, results, strict=True))
