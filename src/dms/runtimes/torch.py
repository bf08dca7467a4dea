"""PyTorch runtimes: eager (model file + ``state_dict``), TorchScript, and ``torch.export`` programs.

``state_dict`` files load with ``weights_only=True`` (no arbitrary unpickling). TorchScript and
exported programs are served without the model's Python source. ``runtime: {compile: true}`` in the
model config wraps the module in ``torch.compile``. Torch is imported only in workers that need it.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dms.errors import ArchiveError
from dms.tensor_spec import TensorSpec


class TorchRuntime:
    def __init__(self, module: Any, inputs: list[TensorSpec], outputs: list[TensorSpec], platform: str) -> None:
        self.module = module
        self.inputs = inputs
        self.outputs = outputs
        self.platform = platform

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        import torch

        tensors = []
        for spec in self.inputs:
            array = feeds[spec.name]
            if not array.flags.writeable or not array.flags.c_contiguous:
                array = np.array(array)  # torch shares memory only with writable, contiguous arrays
            tensors.append(torch.from_numpy(array))
        with torch.inference_mode():
            result = self.module(*tensors)
        outputs = _named(result, [spec.name for spec in self.outputs])
        return {name: value for name, value in outputs.items() if output_names is None or name in output_names}


def _named(result: Any, names: list[str]) -> dict[str, np.ndarray]:
    if isinstance(result, list | tuple) and len(result) == 1 and isinstance(result[0], dict):
        result = result[0]  # a detector's one dict per image (torchvision style), for one image
    if isinstance(result, dict):
        return {str(k): v.detach().cpu().numpy() for k, v in result.items()}
    values = list(result) if isinstance(result, list | tuple) else [result]
    return {
        (names[i] if i < len(names) else f"output{i}"): value.detach().cpu().numpy() for i, value in enumerate(values)
    }


def _default_specs(count: int, prefix: str) -> list[TensorSpec]:
    return [TensorSpec(f"{prefix}{i}", "float32", None) for i in range(count)]


def load_torch(
    kind: str, path: Path, model_file: Path | None, options: dict[str, Any], cpu_threads: int
) -> TorchRuntime:
    import torch

    torch.set_num_threads(max(1, cpu_threads))
    if kind == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
        names = [value.debugName().split(".")[0] for value in list(module.graph.inputs())[1:]]
        inputs = [TensorSpec(name or f"input{i}", "float32", None) for i, name in enumerate(names)]
        platform = "pytorch_libtorch"
    elif kind == "torch_export":
        program = torch.export.load(str(path))
        module = program.module()
        inputs = _export_inputs(program)
        platform = "pytorch_export"
    else:
        module = _eager_module(path, model_file)
        inputs = _forward_inputs(module)
        platform = "pytorch"
    if options.get("compile"):
        module = torch.compile(module)
    return TorchRuntime(module, inputs, _default_specs(1, "output"), platform)


def _forward_inputs(module: Any) -> list[TensorSpec]:
    """One input per required positional parameter of ``forward`` (``input0`` when it takes ``*args``)."""
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [
        p.name
        for p in inspect.signature(module.forward).parameters.values()
        if p.kind in positional and p.default is inspect.Parameter.empty
    ]
    return [TensorSpec(name, "float32", None) for name in names] or _default_specs(1, "input")


def _export_inputs(program: Any) -> list[TensorSpec]:
    user_inputs = [
        spec.arg.name for spec in program.graph_signature.input_specs if str(spec.kind).endswith("USER_INPUT")
    ]
    values = {node.name: node.meta.get("val") for node in program.graph.nodes if node.op == "placeholder"}
    specs = []
    for name in user_inputs:
        value = values.get(name)
        if value is None:
            specs.append(TensorSpec(name, "float32", None))
            continue
        shape = tuple(int(d) if isinstance(d, int) else -1 for d in value.shape)
        specs.append(TensorSpec(name, str(value.dtype).removeprefix("torch."), shape))
    return specs


def _eager_module(path: Path, model_file: Path | None) -> Any:
    import torch

    if model_file is None:
        raise ArchiveError(
            f"{path.name} holds weights only (a state_dict): archive the model's class with --model-file, "
            "or serve a TorchScript (.pt) or torch.export (.pt2) file"
        )
    if str(model_file.parent) not in sys.path:
        sys.path.insert(0, str(model_file.parent))
    source = importlib.import_module(model_file.stem)
    classes = [
        cls
        for _, cls in inspect.getmembers(source, inspect.isclass)
        if issubclass(cls, torch.nn.Module) and cls.__module__ == source.__name__
    ]
    if len(classes) != 1:
        raise ArchiveError(f"{model_file.name} must define exactly one torch.nn.Module class; found {len(classes)}")
    module = classes[0]()
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArchiveError(f"{path.name} is not a state_dict that loads with weights_only=True: {exc}") from exc
    module.load_state_dict(state)
    return module.eval()
