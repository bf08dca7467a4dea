"""``image_classifier``: JPEG/PNG in, top-k ``{label: probability}`` out.

Handler options (model config ``handler:``), defaults in brackets: ``input_size`` [224],
``resize`` short side [256], ``channel_order`` RGB/BGR/L [RGB], ``scale`` [1/255], ``mean`` and
``std`` per channel [ImageNet's], ``apply_softmax`` [true], ``topk`` [5], ``max_image_pixels``.
Labels come from ``index_to_name.json`` or ``synset.txt`` in the archive.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from dms.context import Context
from dms.errors import ArchiveError
from dms.handlers.base import BaseHandler, request_payload
from dms.handlers.imaging import IMAGENET_MEAN, IMAGENET_STD
from dms.handlers.scores import ranked

_WNID = re.compile(r"^n\d{8}\s+")


def load_labels(model_dir: Path) -> dict[int, str]:
    """Class index → label, from ``index_to_name.json`` or ``synset.txt`` (first name of a line)."""
    mapping_file = model_dir / "index_to_name.json"
    if mapping_file.is_file():
        raw = json.loads(mapping_file.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ArchiveError("index_to_name.json must map class indices to names")
        return {int(key): value[-1] if isinstance(value, list) else str(value) for key, value in raw.items()}
    synset = model_dir / "synset.txt"
    if synset.is_file():
        lines = synset.read_text(encoding="utf-8").splitlines()
        return {i: _WNID.sub("", line).split(",")[0].strip() for i, line in enumerate(lines)}
    return {}


class ImageClassifierHandler(BaseHandler):
    recipe_defaults: dict[str, Any] = {"resize": 256, "input_size": 224}
    """Image options used when the model config does not set them (subclasses change them)."""

    def initialize(self, context: Context) -> None:
        super().initialize(context)
        opts = self.options
        self.recipe = self.image_recipe(
            **{"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), **self.recipe_defaults}
        )
        self.apply_softmax = bool(opts.get("apply_softmax", True))
        self.topk = int(opts.get("topk", 5))
        self.labels = load_labels(self.model_dir)
        spec = self.runtime.inputs[0]
        self.input_name, self.input_dtype = spec.name, np.dtype(spec.dtype)

    def preprocess(self, data: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        arrays = [self.recipe.array(request_payload(row)) for row in data]
        return {self.input_name: np.stack(arrays).astype(self.input_dtype, copy=False)}

    def postprocess(self, outputs: dict[str, np.ndarray]) -> list[Any]:
        return [
            {self.labels.get(index, str(index)): probability for index, probability in row}
            for row in self.top_classes(outputs)
        ]

    def top_classes(self, outputs: dict[str, np.ndarray]) -> list[list[tuple[int, float]]]:
        """Per request, the top-k (class index, probability) pairs, best first."""
        return ranked(next(iter(outputs.values())), self.topk, self.apply_softmax)
