"""SqueezeNet for TorchServe in the benchmark: the same preprocessing as DMS's image_classifier with
this model's options (BGR, short side 256, centre crop 224, minus the Caffe means), ONNX Runtime with
one thread, top-5 labels from synset.txt. Written against TorchServe's documented handler contract."""

import io
import json
import os

import numpy as np
import onnxruntime
from PIL import Image

MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)


class SqueezeNetHandler:
    def initialize(self, context):
        model_dir = context.system_properties["model_dir"]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            os.path.join(model_dir, "squeezenet_v1.1.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        with open(os.path.join(model_dir, "synset.txt")) as lines:
            self.labels = [line.split(" ", 1)[1].split(",")[0].strip() for line in lines]

    def prepare(self, raw):
        image = Image.open(io.BytesIO(raw)).convert("RGB")
        width, height = image.size
        scale = 256 / min(width, height)
        size = (256, int(height * scale)) if width <= height else (int(width * scale), 256)
        image = image.resize(size, Image.Resampling.BILINEAR)
        left, top = round((image.width - 224) / 2.0), round((image.height - 224) / 2.0)
        array = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32)[:, :, ::-1]
        return np.ascontiguousarray((array - MEAN).transpose(2, 0, 1))[None]

    def handle(self, data, context):
        answers = []
        for row in data:
            raw = row.get("data") or row.get("body")
            scores = self.session.run(None, {self.input_name: self.prepare(bytes(raw))})[0].reshape(-1)
            top = np.argsort(-scores, kind="stable")[:5]
            answers.append(json.dumps({self.labels[i]: float(scores[i]) for i in top}))
        return answers
