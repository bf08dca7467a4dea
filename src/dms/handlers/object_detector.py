"""``object_detector``: an image in, the boxes found in it out, each with its label and score.

Answers the shape TorchServe's object detector users know, one list per image:
``[{"dog": [x1, y1, x2, y2], "score": 0.98}, ...]``, keeping detections whose score reaches
``threshold`` [0.5]. The model sees one image per call (detectors take images of any size): a
``[1, 3, H, W]`` array, or ``[3, H, W]`` when the runtime's signature says its input has rank 3.
Its outputs are found by name (``boxes_output`` [boxes], ``labels_output`` [labels],
``scores_output`` [scores]) or else by position, and may be a torchvision-style dict per image.
Image options as in :class:`dms.handlers.imaging.ImageRecipe`; by default pixels are scaled to
0..1 and neither resized nor normalised (torchvision detectors normalise inside the model).
Labels come from ``index_to_name.json`` or ``synset.txt`` in the archive.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dms.context import Context
from dms.errors import HandlerError
from dms.handlers.base import BaseHandler, request_payload
from dms.handlers.image_classifier import load_labels


class ObjectDetectorHandler(BaseHandler):
    def initialize(self, context: Context) -> None:
        super().initialize(context)
        opts = self.options
        self.recipe = self.image_recipe()
        self.threshold = float(opts.get("threshold", 0.5))
        self.output_names = [
            str(opts.get("boxes_output", "boxes")),
            str(opts.get("labels_output", "labels")),
            str(opts.get("scores_output", "scores")),
        ]
        self.labels = load_labels(self.model_dir)
        spec = self.runtime.inputs[0]
        self.input_name, self.input_dtype = spec.name, np.dtype(spec.dtype)
        self.batched_input = not (spec.shape is not None and len(spec.shape) == 3)

    def preprocess(self, data: list[dict[str, Any]]) -> list[np.ndarray]:
        images = [self.recipe.array(request_payload(row)).astype(self.input_dtype, copy=False) for row in data]
        return [image[None] if self.batched_input else image for image in images]

    def inference(self, feeds: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        return [self.runtime.run({self.input_name: image}) for image in feeds]

    def postprocess(self, outputs: list[dict[str, np.ndarray]]) -> list[Any]:
        return [self._detections(result) for result in outputs]

    def _detections(self, result: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        boxes, labels, scores = self._find_outputs(result)
        found = []
        for box, label, score in zip(boxes, labels, scores, strict=True):
            if float(score) < self.threshold:
                continue
            index = int(label)
            name = self.labels.get(index, str(index))
            found.append({name: [float(v) for v in box], "score": float(score)})
        return found

    def _find_outputs(self, result: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if all(name in result for name in self.output_names):
            found = [result[name] for name in self.output_names]
        elif len(result) >= 3:
            found = list(result.values())[:3]
        else:
            raise HandlerError(
                f"the detector answered outputs {sorted(result)}; object_detector needs boxes, labels and scores "
                "(set handler options boxes_output, labels_output, scores_output to their names)"
            )
        # Drop a leading batch dimension of 1: boxes [1, N, 4] → [N, 4], labels and scores [1, N] → [N].
        boxes, labels, scores = (
            value[0] if value.ndim == expected + 1 and len(value) == 1 else value
            for value, expected in zip(found, (2, 1, 1), strict=True)
        )
        if boxes.ndim != 2 or boxes.shape[-1] != 4 or not len(boxes) == len(labels) == len(scores):
            raise HandlerError(
                f"the detector's outputs have shapes {[list(v.shape) for v in found]}; expected boxes [N, 4], "
                "labels [N] and scores [N] (optionally with a leading batch dimension of 1)"
            )
        return boxes, labels, scores
