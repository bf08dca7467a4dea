"""``image_segmenter``: an image in, the class of every pixel out.

Answers the shape TorchServe's image segmenter users know: per image, an ``H x W`` grid of
``[class_index, probability]`` pairs (the top class of each pixel). The model's output is
``[N, C, H, W]`` class scores, named ``out`` (torchvision's segmentation models; option
``output``) or else its first output; softmax is applied over the classes unless
``apply_softmax: false``. Images of one size are batched together. Image options as in
:class:`dms.handlers.imaging.ImageRecipe`; by default pixels are scaled to 0..1 and normalised
with ImageNet's mean and std, without resizing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dms.context import Context
from dms.errors import HandlerError
from dms.handlers.base import BaseHandler, request_payload
from dms.handlers.imaging import IMAGENET_MEAN, IMAGENET_STD
from dms.handlers.scores import softmax


class ImageSegmenterHandler(BaseHandler):
    def initialize(self, context: Context) -> None:
        super().initialize(context)
        opts = self.options
        self.recipe = self.image_recipe(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
        self.output = str(opts.get("output", "out"))
        self.apply_softmax = bool(opts.get("apply_softmax", True))
        spec = self.runtime.inputs[0]
        self.input_name, self.input_dtype = spec.name, np.dtype(spec.dtype)

    def preprocess(self, data: list[dict[str, Any]]) -> list[np.ndarray]:
        return [self.recipe.array(request_payload(row)).astype(self.input_dtype, copy=False) for row in data]

    def inference(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        """One call per group of same-sized images; scores come back in request order."""
        scores: list[np.ndarray] = [np.empty(0)] * len(feeds)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(feeds):
            by_shape.setdefault(image.shape, []).append(index)
        for indices in by_shape.values():
            result = self.runtime.run({self.input_name: np.stack([feeds[i] for i in indices])})
            batch = result[self.output] if self.output in result else next(iter(result.values()))
            if batch.ndim != 4 or batch.shape[0] != len(indices):
                raise HandlerError(
                    f"the segmenter answered shape {list(batch.shape)}; "
                    f"expected [N, classes, H, W] with N={len(indices)}"
                )
            for position, index in enumerate(indices):
                scores[index] = batch[position]
        return scores

    def postprocess(self, outputs: list[np.ndarray]) -> list[Any]:
        results = []
        for scores in outputs:
            probabilities = softmax(scores.astype(np.float64), axis=0) if self.apply_softmax else scores
            classes = probabilities.argmax(axis=0)
            best = np.take_along_axis(probabilities, classes[None], axis=0)[0]
            results.append(np.stack([classes.astype(np.float64), best.astype(np.float64)], axis=-1).tolist())
        return results
