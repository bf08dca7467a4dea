"""``ts.torch_handler.base_handler.BaseHandler``: the documented TorchServe handler flow.

``initialize`` loads the manifest's serialized file: with a ``modelFile``, that file's one
``nn.Module`` class and a ``state_dict`` (``weights_only=True``); an ``.onnx`` file with ONNX
Runtime; otherwise a TorchScript file. ``handle`` runs preprocess → inference → postprocess; for an explanation
(a request TorchServe's frontend, and DMS's explanations routes, mark with the header ``explain: True``) it runs
preprocess → ``explain_handle``, which hands ``get_insights`` the preprocessed batch, the first request's data and
its ``target`` (0 when it names none), as TorchServe's does.
"""

from __future__ import annotations

import abc
import importlib
import os
import sys
from typing import Any

from ts.utils.util import list_classes_from_module, load_label_mapping


class BaseHandler(abc.ABC):  # noqa: B024 - abstract in TorchServe's sense: meant to be subclassed
    def __init__(self) -> None:
        self.model: Any = None
        self.mapping: dict[str, Any] | None = None
        self.device: Any = None
        self.initialized = False
        self.context: Any = None
        self.manifest: dict[str, Any] | None = None
        self.map_location: str | None = None
        self.model_pt_path: str | None = None
        self.explain = False
        self.target = 0

    def initialize(self, context: Any) -> None:
        import torch

        self.context = context
        properties = context.system_properties
        gpu_id = properties.get("gpu_id")
        use_cuda = torch.cuda.is_available() and gpu_id is not None
        self.map_location = "cuda" if use_cuda else "cpu"
        self.device = torch.device(f"cuda:{gpu_id}" if use_cuda else "cpu")
        self.manifest = context.manifest
        model_dir = properties.get("model_dir")
        model = self.manifest["model"]
        serialized = model.get("serializedFile")
        self.model_pt_path = os.path.join(model_dir, serialized) if serialized else None
        if self.model_pt_path and self.model_pt_path.endswith(".onnx"):
            self.model = self._load_onnx_model(self.model_pt_path)
        elif model.get("modelFile"):
            self.model = self._load_pickled_model(model_dir, model["modelFile"], self.model_pt_path)
            self.model.to(self.device)
            self.model.eval()
        else:
            self.model = self._load_torchscript_model(self.model_pt_path)
            self.model.eval()
        self.mapping = load_label_mapping(os.path.join(model_dir, "index_to_name.json"))
        self.initialized = True

    def _load_torchscript_model(self, model_pt_path: str | None) -> Any:
        import torch

        return torch.jit.load(model_pt_path, map_location=self.device)

    def _load_onnx_model(self, model_path: str) -> Any:
        import onnxruntime

        return onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])

    def _load_pickled_model(self, model_dir: str, model_file: str, model_pt_path: str | None) -> Any:
        import torch

        if model_dir not in sys.path:
            sys.path.insert(0, model_dir)
        module = importlib.import_module(model_file.split("/")[-1].removesuffix(".py"))
        classes = list_classes_from_module(module, torch.nn.Module)
        if len(classes) != 1:
            raise ValueError(f"{model_file} must define exactly one torch.nn.Module class, found {len(classes)}")
        model = classes[0]()
        if model_pt_path:
            state_dict = torch.load(model_pt_path, map_location=self.device, weights_only=True)
            model.load_state_dict(state_dict)
        return model

    def preprocess(self, data: Any) -> Any:
        import torch

        return torch.as_tensor(data, device=self.device)

    def inference(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.model(data.to(self.device), *args, **kwargs)

    def postprocess(self, data: Any) -> Any:
        return data.tolist()

    def handle(self, data: Any, context: Any) -> Any:
        self.context = context
        preprocessed = self.preprocess(data)
        if self._is_explain():
            return self.explain_handle(preprocessed, data)
        return self.postprocess(self.inference(preprocessed))

    def _is_explain(self) -> bool:
        """The request asks for an explanation (its ``explain`` header is ``True``)."""
        self.explain = self.context is not None and self.context.get_request_header(0, "explain") == "True"
        return self.explain

    def explain_handle(self, data_preprocess: Any, raw_data: Any) -> Any:
        first = raw_data[0] if raw_data else None
        inputs, target = None, 0
        if isinstance(first, dict):
            inputs = first.get("data")
            if inputs is None:
                inputs = first.get("body")
            target = first.get("target") or 0
        return self.get_insights(data_preprocess, inputs, target)

    def get_insights(self, tensor_data: Any, raw_data: Any, target: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} gives no explanations: it defines no get_insights")
