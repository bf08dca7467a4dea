"""``ts.utils.util``: label mappings and module inspection, as TorchServe handlers use them."""

from __future__ import annotations

import inspect
import json
import logging
import os
from typing import Any

logger = logging.getLogger(__name__)


def list_classes_from_module(module: Any, parent_class: type | None = None) -> list[type]:
    """Classes defined in ``module`` itself (optionally only subclasses of ``parent_class``)."""
    classes = [cls for _, cls in inspect.getmembers(module, inspect.isclass) if cls.__module__ == module.__name__]
    if parent_class is not None:
        classes = [cls for cls in classes if issubclass(cls, parent_class)]
    return classes


def load_label_mapping(mapping_file_path: str) -> dict[str, Any] | None:
    """The index → label mapping of ``index_to_name.json``, or None (with a warning) when it is missing."""
    if not os.path.isfile(mapping_file_path):
        logger.warning("%s is missing: inference answers will carry class indices, not names", mapping_file_path)
        return None
    with open(mapping_file_path, encoding="utf-8") as handle:
        mapping = json.load(handle)
    if not isinstance(mapping, dict):
        raise ValueError("index_to_name.json must map class indices (as strings) to names")
    if not all(isinstance(key, str) for key in mapping):
        raise ValueError("index_to_name.json keys must be strings")
    if not all(isinstance(value, str | list) for value in mapping.values()):
        raise ValueError("index_to_name.json values must be names or [id, name] lists")
    return mapping


def _label(mapping: dict[str, Any] | None, index: Any) -> str:
    if mapping is None:
        return str(index)
    value = mapping[str(index)]
    return str(value[-1]) if isinstance(value, list) else str(value)


def map_class_to_label(
    probs: Any, mapping: dict[str, Any] | None = None, lbl_classes: Any = None
) -> list[dict[str, Any]]:
    """One ``{label: probability}`` dict per row of ``probs`` (classes in ``lbl_classes``, or 0..n-1)."""
    if not isinstance(probs, list) or not all(isinstance(row, list) for row in probs):
        raise TypeError("probs must be a list of lists")
    if mapping is not None and not isinstance(mapping, dict):
        raise TypeError("mapping must be a dict")
    if lbl_classes is None:
        lbl_classes = [list(range(len(row))) for row in probs]
    return [
        {_label(mapping, index): probability for index, probability in zip(classes, row, strict=True)}
        for classes, row in zip(lbl_classes, probs, strict=True)
    ]
