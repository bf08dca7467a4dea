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

from dms.errors import ArchiveError
from dms.handlers.base import BaseHandler, request_payload
from dms.handlers.imaging import (
    DEFAULT_MAX_PIXELS,
    center_crop,
    decode_image,
    payload_bytes,
    resize_short_side,
    to_chw,
)
from dms.worker.context import Context

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
    def initialize(self, context: Context) -> None:
        super().initialize(context)
        opts = self.options
        self.input_size = int(opts.get("input_size", 224))
        self.resize = int(opts.get("resize", 256))
        self.channel_order = str(opts.get("channel_order", "RGB")).upper()
        if self.channel_order not in {"RGB", "BGR", "L"}:
            raise ArchiveError("handler option channel_order must be RGB, BGR or L")
        channels = 1 if self.channel_order == "L" else 3
        self.scale = float(opts.get("scale", 1 / 255))
        self.mean = _per_channel(opts.get("mean", [0.485, 0.456, 0.406]), channels, "mean")
        self.std = _per_channel(opts.get("std", [0.229, 0.224, 0.225]), channels, "std")
        self.apply_softmax = bool(opts.get("apply_softmax", True))
        self.topk = int(opts.get("topk", 5))
        server_cap = int(self.limits.get("max_image_pixels", DEFAULT_MAX_PIXELS))
        self.max_pixels = min(int(opts.get("max_image_pixels", server_cap)), server_cap)
        self.labels = load_labels(self.model_dir)
        spec = self.runtime.inputs[0]
        self.input_name, self.input_dtype = spec.name, np.dtype(spec.dtype)

    def preprocess(self, data: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        arrays = [self._image_array(request_payload(row)) for row in data]
        return {self.input_name: np.stack(arrays).astype(self.input_dtype, copy=False)}

    def _image_array(self, payload: Any) -> np.ndarray:
        image = decode_image(payload_bytes(payload), self.channel_order, self.max_pixels)
        if self.resize:
            image = resize_short_side(image, self.resize)
        image = center_crop(image, self.input_size)
        return to_chw(image, self.channel_order, self.scale, self.mean, self.std)

    def postprocess(self, outputs: dict[str, np.ndarray]) -> list[Any]:
        scores = next(iter(outputs.values()))
        scores = scores.reshape(scores.shape[0], -1).astype(np.float64)
        if self.apply_softmax:
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores /= scores.sum(axis=1, keepdims=True)
        k = min(self.topk, scores.shape[1])
        results = []
        for row in scores:
            top = np.argsort(-row, kind="stable")[:k]
            results.append({self.labels.get(int(i), str(int(i))): float(row[i]) for i in top})
        return results


def _per_channel(value: Any, channels: int, name: str) -> list[float]:
    values = [float(v) for v in value] if isinstance(value, list | tuple) else [float(value)]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ArchiveError(f"handler option {name} needs {channels} values, got {len(values)}")
    return values
