"""PyTorch (eager, TorchScript, torch.export) and scikit-learn models served by real workers."""

from __future__ import annotations

import io
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from dms.archive.writer import ArchiveSpec, write_archive
from tests.support import FIXTURES, running_server

torch = pytest.importorskip("torch", reason="the [torch] extra (torch==2.13.0) is not installed")
sklearn_datasets = pytest.importorskip("sklearn.datasets", reason="the [sklearn] extra is not installed")
sio = pytest.importorskip("skops.io", reason="the [sklearn] extra (skops) is not installed")

TENSOR_CONFIG = """\
initial_workers: 1
batch_size: 8
inputs:
  - {name: x, datatype: FP32, shape: [-1, 16]}
"""


def net_and_input():
    sys.path.insert(0, str(FIXTURES))
    from torch_net import SmallNet
    from torch_vision_net import TinyVision

    torch.manual_seed(0)
    return SmallNet().eval(), TinyVision().eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("frameworks")
    store = work / "store"
    net, vision = net_and_input()
    torch.save(net.state_dict(), work / "small.pth")
    with warnings.catch_warnings():  # torch 2.13 deprecates making TorchScript; serving existing files stays
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(net).save(str(work / "small_script.pt"))
        torch.jit.script(vision).save(str(work / "vision.pt"))
        example = torch.randn(2, 16)
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch}}), work / "small.pt2")
    (work / "tensor.yaml").write_text(TENSOR_CONFIG)
    for name, weights, model_file in (
        ("eager", "small.pth", FIXTURES / "torch_net.py"),
        ("script", "small_script.pt", None),
        ("exported", "small.pt2", None),
    ):
        write_archive(
            ArchiveSpec(
                model_name=name,
                version="1.0",
                handler="tensor",
                serialized_file=work / weights,
                model_file=model_file,
                config_file=work / "tensor.yaml",
            ),
            store,
        )
    (work / "index_to_name.json").write_text(
        json.dumps({"0": ["n001", "circle"], "1": ["n002", "square"], "2": ["n003", "stripe"]})
    )
    (work / "vision.yaml").write_text("initial_workers: 1\nhandler:\n  input_size: 32\n  resize: 40\n  topk: 3\n")
    write_archive(
        ArchiveSpec(
            model_name="vision",
            version="1.0",
            handler="image_classifier",
            serialized_file=work / "vision.pt",
            config_file=work / "vision.yaml",
            extra_files=[work / "index_to_name.json"],
        ),
        store,
    )
    iris = sklearn_datasets.load_iris()
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(max_iter=500).fit(iris.data, iris.target)
    sio.dump(classifier, work / "iris.skops")
    import joblib

    joblib.dump(classifier, work / "iris.joblib")
    (work / "proba.yaml").write_text("initial_workers: 1\nruntime:\n  method: predict_proba\n")
    (work / "trusted.yaml").write_text("initial_workers: 1\nruntime:\n  trusted: true\n")
    write_archive(
        ArchiveSpec(
            model_name="iris",
            version="1.0",
            handler="tensor",
            serialized_file=work / "iris.skops",
            config_file=work / "proba.yaml",
        ),
        store,
    )
    write_archive(
        ArchiveSpec(model_name="iris_pickle", version="1.0", handler="tensor", serialized_file=work / "iris.joblib"),
        store,
    )
    write_archive(
        ArchiveSpec(
            model_name="iris_trusted",
            version="1.0",
            handler="tensor",
            serialized_file=work / "iris.joblib",
            config_file=work / "trusted.yaml",
        ),
        store,
    )
    models = [
        "eager=eager.mar",
        "script=script.mar",
        "exported=exported.mar",
        "vision=vision.mar",
        "iris=iris.mar",
        "iris_trusted=iris_trusted.mar",
    ]
    with running_server(work, ["--model-store", str(store), "--models", *models]) as server:
        yield server, net, vision, classifier, iris


def test_eager_torchscript_and_export_answer_alike(setup):
    server, net, _, _, _ = setup
    rows = np.random.default_rng(1).random((3, 16), dtype=np.float32)
    expected = net(torch.from_numpy(rows)).detach().numpy()
    for model in ("eager", "script", "exported"):
        response = server.predict(model, {"inputs": rows.tolist()})
        assert response.status_code == 200, (model, response.text)
        np.testing.assert_allclose(response.json(), expected, rtol=1e-4, atol=1e-5, err_msg=model)
    described = {m: server.describe(m)[0] for m in ("eager", "script", "exported")}
    assert all(d["status"] == "READY" for d in described.values())


def test_torch_models_speak_the_open_inference_protocol(setup):
    import httpx

    server, net, _, _, _ = setup
    rows = np.random.default_rng(2).random((2, 16), dtype=np.float32)
    body = {"inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "data": rows.ravel().tolist()}]}
    for model, platform in (("script", "pytorch_libtorch"), ("exported", "pytorch_export"), ("eager", "pytorch")):
        meta = httpx.get(f"{server.inference_url}/v2/models/{model}").json()
        assert meta["platform"] == platform and meta["inputs"][0]["name"] == "x"
        answer = httpx.post(f"{server.inference_url}/v2/models/{model}/infer", json=body).json()
        got = np.array(answer["outputs"][0]["data"]).reshape(answer["outputs"][0]["shape"])
        np.testing.assert_allclose(got, net(torch.from_numpy(rows)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_a_torchscript_image_classifier_answers_with_labels(setup):
    from PIL import Image

    from dms.handlers.imaging import center_crop, resize_short_side, to_chw

    server, _, vision, _, _ = setup
    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    response = server.predict("vision", buffer.getvalue())
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"circle", "square", "stripe"}
    array = to_chw(
        center_crop(resize_short_side(image, 40), 32), "RGB", 1 / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    )
    expected = torch.softmax(vision(torch.from_numpy(array)[None]), dim=1)[0].detach().numpy()
    for index, label in enumerate(["circle", "square", "stripe"]):
        assert answer[label] == pytest.approx(float(expected[index]), abs=1e-4)


def test_scikit_learn_from_skops_with_predict_proba(setup):
    server, _, _, classifier, iris = setup
    rows = iris.data[[0, 60, 120]]
    response = server.predict("iris", {"inputs": rows.tolist()})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json(), classifier.predict_proba(rows), rtol=1e-6)
    trusted = server.predict("iris_trusted", {"inputs": rows.tolist()})
    assert trusted.json() == classifier.predict(rows).tolist()


def test_pickle_based_weights_need_the_archive_marked_trusted(setup):
    server, _, _, _, _ = setup
    refused = server.manage("POST", "/models", params={"url": "iris_pickle.mar", "initial_workers": 1})
    assert refused.status_code == 503
    assert "pickle-based" in refused.json()["message"] and "trusted: true" in refused.json()["message"]


def test_a_state_dict_without_its_model_file_is_a_clear_error(setup, tmp_path: Path):
    server, net, _, _, _ = setup
    store = Path(server.args[server.args.index("--model-store") + 1])
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    write_archive(
        ArchiveSpec(model_name="bare", version="1.0", handler="tensor", serialized_file=tmp_path / "weights.pth"), store
    )
    refused = server.manage("POST", "/models", params={"url": "bare.mar", "initial_workers": 1})
    assert refused.status_code == 503
    assert "--model-file" in refused.json()["message"]


def test_a_keras_model_on_the_torch_backend(tmp_path: Path):
    os.environ.setdefault("KERAS_BACKEND", "torch")  # as the worker does: no TensorFlow needed
    keras = pytest.importorskip("keras", reason="the [keras] extra is not installed")
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    rows = np.random.default_rng(6).random((2, 4), dtype=np.float32)
    with warnings.catch_warnings():  # Keras's torch backend trips numpy 2's __array__ deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        model = keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(3, activation="softmax")])
        model.save(checkpoints / "epoch-1.keras")
        model.save(checkpoints / "epoch-2.keras")  # the newest one is served
        expected = np.asarray(keras.ops.convert_to_numpy(model(rows)))
    (tmp_path / "keras.yaml").write_text("initial_workers: 1\n")
    archive = write_archive(
        ArchiveSpec(
            model_name="keras_model",
            version="1.0",
            handler="tensor",
            serialized_file=checkpoints,
            config_file=tmp_path / "keras.yaml",
        ),
        tmp_path / "store",
    )
    with running_server(tmp_path, ["--models", f"keras_model={archive}", "--no-default-model"]) as server:
        response = server.predict("keras_model", {"inputs": rows.tolist()})
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json(), expected, rtol=1e-5)
        import httpx

        meta = httpx.get(f"{server.inference_url}/v2/models/keras_model").json()
        assert meta["platform"] == "keras" and meta["inputs"][0]["shape"] == [-1, 4]
