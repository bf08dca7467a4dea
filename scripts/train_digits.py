"""Train the bundled default model and write it into the package.

A multinomial logistic regression on scikit-learn's bundled 8x8 digits, exported as a small
ONNX graph (Flatten → Gemm → Softmax), archived as ``src/dms/default_model/digits.mar`` with
one sample PNG per digit. The training images go through the same resize the server applies to
the samples, so what the model learned is what it will see.

Run: ``python scripts/train_digits.py`` (needs the ``[onnx]`` and ``[sklearn]`` extras).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from dms.archive.writer import ArchiveSpec, write_archive
from dms.handlers.imaging import resize_short_side

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "dms" / "default_model"
SAMPLE_SIZE = 64
MODEL_CONFIG = """\
# Settings of the bundled digits model: 8x8 grayscale, pixel values scaled to the 0..16 range
# of scikit-learn's digits data; the graph already ends in softmax.
batch_size: 8
handler:
  channel_order: L
  resize: 8
  input_size: 8
  scale: 0.0627450980392157   # 16 / 255
  mean: [0.0]
  std: [1.0]
  apply_softmax: false
  topk: 3
"""


def as_sample_image(row: np.ndarray) -> Image.Image:
    pixels = np.round(row.reshape(8, 8) * 255 / 16).astype(np.uint8)
    return Image.fromarray(pixels, mode="L").resize((SAMPLE_SIZE, SAMPLE_SIZE), Image.Resampling.NEAREST)


def as_served(row: np.ndarray) -> np.ndarray:
    image = resize_short_side(as_sample_image(row), 8)
    return np.asarray(image, dtype=np.float32).reshape(64) * np.float32(16 / 255)


def build_graph(model: LogisticRegression) -> onnx.ModelProto:
    weights = numpy_helper.from_array(model.coef_.T.astype(np.float32), "weights")
    bias = numpy_helper.from_array(model.intercept_.astype(np.float32), "bias")
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "weights", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializer=[weights, bias],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx_model.ir_version = 8
    onnx.checker.check_model(onnx_model)
    return onnx_model


def main() -> None:
    digits = load_digits()
    x = np.stack([as_served(row) for row in digits.data])
    x_train, x_test, y_train, y_test, _, raw_test = train_test_split(
        x, digits.target, digits.data, test_size=0.25, random_state=0, stratify=digits.target
    )
    model = LogisticRegression(max_iter=5000, C=1.0).fit(x_train, y_train)
    accuracy = model.score(x_test, y_test)
    print(f"held-out accuracy: {accuracy:.3f}")
    samples = OUT / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    for digit in range(10):
        index = next(
            i
            for i, (label, row) in enumerate(zip(y_test, x_test, strict=True))
            if label == digit and model.predict(row[None])[0] == digit
        )
        as_sample_image(raw_test[index]).save(samples / f"digit_{digit}.png", optimize=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx.save(build_graph(model), work / "digits.onnx")
        (work / "index_to_name.json").write_text(json.dumps({str(i): str(i) for i in range(10)}))
        (work / "model-config.yaml").write_text(MODEL_CONFIG)
        spec = ArchiveSpec(
            model_name="digits",
            version="1.0",
            handler="image_classifier",
            serialized_file=work / "digits.onnx",
            extra_files=[work / "index_to_name.json"],
            config_file=work / "model-config.yaml",
        )
        print(write_archive(spec, OUT, force=True))


if __name__ == "__main__":
    main()
