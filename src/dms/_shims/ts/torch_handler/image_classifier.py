"""``ts.torch_handler.image_classifier.ImageClassifier``: ImageNet-style preprocessing, softmax, top-k labels.

The transform is torchvision's ``Resize(256)``, ``CenterCrop(224)``, ``ToTensor()``,
``Normalize(ImageNet mean, std)``, done with Pillow and numpy (torchvision is not required).
"""

from __future__ import annotations

from typing import Any

from dms.handlers.imaging import center_crop, resize_short_side, to_chw
from ts.torch_handler.vision_handler import VisionHandler
from ts.utils.util import map_class_to_label

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class ImageNetTransform:
    def __init__(self, resize: int = 256, crop: int = 224) -> None:
        self.resize = resize
        self.crop = crop

    def __call__(self, image: Any) -> Any:
        import torch

        image = center_crop(resize_short_side(image.convert("RGB"), self.resize), self.crop)
        return torch.from_numpy(to_chw(image, "RGB", 1 / 255, MEAN, STD))


class ImageClassifier(VisionHandler):
    topk = 5
    image_processing = ImageNetTransform()

    def set_max_result_classes(self, topk: int) -> None:
        self.topk = topk

    def get_max_result_classes(self) -> int:
        return self.topk

    def postprocess(self, data: Any) -> list[dict[str, Any]]:
        import torch

        probabilities = torch.nn.functional.softmax(data, dim=1)
        probs, classes = torch.topk(probabilities, min(self.topk, probabilities.shape[1]), dim=1)
        return map_class_to_label(probs.tolist(), self.mapping, classes.tolist())
