"""``wrapper``: the Studio.ML serving workflow — a ``create_model(modeldir)`` function, or a model folder.

Handler options (written by ``dms serve --wrapper/--model-dir``): ``wrapper`` (a Python file defining
``create_model(modeldir)`` that returns a function, or a ``ModelPipe``, from a dict of named arrays to a
dict of named arrays) and ``model_dir``. Without a wrapper, the newest checkpoint in the folder (by
modification time, any supported format) is served; with none, an identity model, and the log says so.
Bodies: JSON, ``.npz`` or msgpack dicts of named arrays; the answer comes in the request's form.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dms.context import Context
from dms.errors import ArchiveError, HandlerError
from dms.handlers.payloads import body_kind, decode_named, encode_named
from dms.oip.tensors import DEFAULT_MAX_ELEMENTS
from dms.runtimes import detect_kind, load_runtime
from dms.runtimes.tensor_exec import prepare

log = logging.getLogger("dms.wrapper")
Model = Callable[[dict[str, np.ndarray]], Any]


def newest_checkpoint(folder: Path) -> Path | None:
    candidates = []
    for path in folder.iterdir() if folder.is_dir() else []:
        try:
            detect_kind(path, None)
        except ArchiveError:
            continue
        candidates.append(path)
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


class WrapperHandler:
    def initialize(self, context: Context) -> None:
        self.context = context
        options = dict(context.model_yaml_config.get("handler") or {})
        self.model_dir = Path(str(options.get("model_dir") or context.system_properties["model_dir"]))
        limits = context.system_properties.get("limits") or {}
        self.allow_pickle = bool(limits.get("allow_pickle", False))
        self.max_elements = int(limits.get("max_tensor_elements", DEFAULT_MAX_ELEMENTS))
        wrapper = options.get("wrapper")
        self.model: Model = self._from_wrapper(Path(str(wrapper))) if wrapper else self._from_folder()

    def _from_wrapper(self, path: Path) -> Model:
        spec = importlib.util.spec_from_file_location(f"dms_wrapper_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ArchiveError(f"cannot import the wrapper {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not callable(getattr(module, "create_model", None)):
            raise ArchiveError(f"the wrapper {path.name} defines no create_model(modeldir) function")
        model = module.create_model(str(self.model_dir))
        if not callable(model):
            raise ArchiveError(f"create_model in {path.name} returned {type(model).__name__}, not a function")
        return model  # type: ignore[no-any-return]

    def _from_folder(self) -> Model:
        checkpoint = newest_checkpoint(self.model_dir)
        if checkpoint is None:
            log.warning("no checkpoint in %s: serving the identity model (answers are the inputs)", self.model_dir)
            return lambda named: named
        log.info("serving the newest checkpoint in %s: %s", self.model_dir, checkpoint.name)
        threads = int(self.context.system_properties.get("cpu_threads") or 1)
        runtime = load_runtime(checkpoint, {}, threads)
        max_elements = self.max_elements

        def run(named: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            feeds, added = prepare(named, runtime.inputs, max_elements)  # dtypes and shapes of the signature
            outputs = runtime.run(feeds)
            return {name: value[0] for name, value in outputs.items()} if added else outputs

        return run

    def handle(self, data: list[dict[str, Any]] | None, context: Context) -> list[Any] | None:
        if data is None:
            return None
        results = []
        for index, row in enumerate(data):
            payload = row.get("body", row)
            kind = body_kind(context.get_request_header(index, "content-type") or "", payload)
            outputs = self.model(decode_named(payload, kind, self.allow_pickle, self.max_elements))
            if not isinstance(outputs, dict):
                raise HandlerError(f"the model returned {type(outputs).__name__}, not a dict of named arrays")
            body, content_type = encode_named(outputs, kind)
            if content_type:
                context.set_response_content_type(index, content_type)
            results.append(body)
        return results
