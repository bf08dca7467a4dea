"""``ts.torch_handler.vision_handler.VisionHandler``: images (bytes or base64) in, a stacked tensor out."""

from __future__ import annotations

import base64
import io
from typing import Any

from ts.torch_handler.base_handler import BaseHandler


class VisionHandler(BaseHandler):
    image_processing: Any = None
    """A callable from a PIL image to a CHW tensor (subclasses set it)."""

    def preprocess(self, data: list[dict[str, Any]]) -> Any:
        import torch
        from PIL import Image

        images = []
        for row in data:
            image = row.get("data") or row.get("body")
            if isinstance(image, str):
                image = base64.b64decode(image)
            if isinstance(image, bytes | bytearray):
                image = self.image_processing(Image.open(io.BytesIO(image)))
            else:
                image = torch.FloatTensor(image)
            images.append(image)
        return torch.stack(images).to(self.device)
