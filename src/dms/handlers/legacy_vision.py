"""``legacy_vision``: the original DMS image service: a form field of ``signature.json`` in, labelled top-k out.

The image comes in the multipart field named by the signature's first ``data_name`` (or as the
raw body), is prepared with :class:`dms.handlers.imaging.ImageRecipe` (by default: short side
resized to the signature's height, centre crop to it, ImageNet normalisation; the model config's
``handler:`` options override), and the answer keeps the original shape:
``{"prediction": [[{"class": "n02123045 tabby, tabby cat", "probability": 0.42}, ...]]}``, with the
full ``synset.txt`` line as the class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dms.context import Context
from dms.errors import InputError
from dms.handlers.image_classifier import ImageClassifierHandler
from dms.legacy.archive import read_signature


class LegacyVisionHandler(ImageClassifierHandler):
    def initialize(self, context: Context) -> None:
        signature = read_signature(Path(context.system_properties["model_dir"]))
        first = signature["inputs"][0]
        self.field = str(first["data_name"])
        shape = first.get("data_shape") or []
        if isinstance(shape, list) and len(shape) == 4 and int(shape[2]) > 0:
            self.recipe_defaults = {"resize": int(shape[2]), "input_size": int(shape[2])}
        super().initialize(context)
        synset = self.model_dir / "synset.txt"
        if synset.is_file():
            self.labels = dict(enumerate(line.strip() for line in synset.read_text(encoding="utf-8").splitlines()))

    def preprocess(self, data: list[dict[str, Any]]) -> Any:
        return super().preprocess([{"body": self._image(row)} for row in data])

    def _image(self, row: dict[str, Any]) -> Any:
        for key in (self.field, "body", "data"):
            if key in row:
                return row[key]
        raise InputError(
            f"expected the image in the form field {self.field!r} (signature.json's data_name); "
            f"the request has {sorted(row) or 'no fields'}"
        )

    def postprocess(self, outputs: Any) -> list[Any]:
        return [
            {"prediction": [[{"class": self.labels.get(i, str(i)), "probability": p} for i, p in row]]}
            for row in self.top_classes(outputs)
        ]
