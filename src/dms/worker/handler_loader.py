"""Resolve a manifest's ``handler`` into a callable ``handle(data, context)``.

Accepted forms, as MMS 1.x and TorchServe accept them: a built-in name (``image_classifier``,
``object_detector``, ``image_segmenter``, ``text_classifier``, ``tensor``, ``wrapper``,
``legacy_vision``), a module file in the archive (``my_handler.py`` or ``my_handler``) that defines a
``handle`` function or exactly one handler class, or ``module:function`` / ``module:Class``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from dms.context import Context
from dms.errors import ArchiveError
from dms.handlers.builtin import BUILTIN_HANDLERS

HandleFn = Callable[[Any, Context], Any]


def load_handler(spec: str, model_dir: str, context: Context) -> HandleFn:
    """Import the handler, initialise it once, and return its ``handle`` entry point."""
    if not spec:
        raise ArchiveError("the archive's manifest names no handler")
    spec = BUILTIN_HANDLERS.get(spec, spec)
    module_part, _, attr = spec.partition(":")
    module = _import(module_part, model_dir)
    if attr:
        if not hasattr(module, attr):
            raise ArchiveError(f"handler module {module.__name__} has no attribute {attr!r}")
        return _entry(getattr(module, attr), context)
    if callable(getattr(module, "handle", None)) and not inspect.isclass(module.handle):
        return _entry(module.handle, context)
    classes = [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if obj.__module__ == module.__name__ and callable(getattr(obj, "handle", None))
    ]
    if len(classes) != 1:
        raise ArchiveError(
            f"handler module {module.__name__} must define a handle(data, context) function or "
            f"exactly one class with a handle method; found {len(classes)} classes"
        )
    return _entry(classes[0], context)


def provide_torchserve_paths() -> None:
    """Make ``ts.*`` importable from DMS's stand-in, unless TorchServe itself is installed."""
    if importlib.util.find_spec("ts") is None:
        shims = str(Path(__file__).resolve().parent.parent / "_shims")
        if shims not in sys.path:
            sys.path.append(shims)


def _import(module_part: str, model_dir: str) -> ModuleType:
    name = module_part[:-3] if module_part.endswith(".py") else module_part
    name = name.replace("/", ".")
    provide_torchserve_paths()
    if model_dir not in sys.path:
        sys.path.insert(0, model_dir)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ArchiveError(f"handler module {name!r} could not be imported: {exc}") from exc


def _entry(target: Any, context: Context) -> HandleFn:
    if inspect.isclass(target):
        instance: Any = target()
        if hasattr(instance, "initialize"):
            instance.initialize(context)
        handle: HandleFn = instance.handle
        return handle
    if not callable(target):
        raise ArchiveError(f"handler entry point {target!r} is not callable")
    # MMS 1.x and TorchServe call a function handler once with no data when the model loads.
    target(None, context)
    fn: HandleFn = target
    return fn
