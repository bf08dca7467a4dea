"""The built-in handlers by the name a manifest or ``dms archive --handler`` gives them, each as ``module:attribute``
(imported only by the worker that loads one)."""

from __future__ import annotations

BUILTIN_HANDLERS: dict[str, str] = {
    "image_classifier": "dms.handlers.image_classifier:ImageClassifierHandler",
    "object_detector": "dms.handlers.object_detector:ObjectDetectorHandler",
    "image_segmenter": "dms.handlers.image_segmenter:ImageSegmenterHandler",
    "text_classifier": "dms.handlers.text_classifier:TextClassifierHandler",
    "tensor": "dms.handlers.tensor:TensorHandler",
    "wrapper": "dms.handlers.wrapper:WrapperHandler",
    "legacy_vision": "dms.handlers.legacy_vision:LegacyVisionHandler",
}
