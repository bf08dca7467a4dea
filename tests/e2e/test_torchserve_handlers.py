"""Archives built by the real torch-model-archiver, with TorchServe-style handlers, served unmodified."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.e2e.test_peer_archives import archiver
from tests.support import FIXTURES, running_server

torch = pytest.importorskip("torch", reason="the [torch] extra (torch==2.13.0) is not installed")

LABELS = {"0": ["n001", "circle"], "1": ["n002", "square"], "2": ["n003", "stripe"]}


def imagenet_tensor(image: Image.Image) -> np.ndarray:
    """torchvision's Resize(256) → CenterCrop(224) → ToTensor → Normalize, written out for the check."""
    width, height = image.size
    scale = 256 / min(width, height)
    size = (256, int(height * scale)) if width <= height else (int(width * scale), 256)
    image = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    left, top = round((image.width - 224) / 2.0), round((image.height - 224) / 2.0)
    array = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    array = (array - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return array.transpose(2, 0, 1)[None].copy()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    sys.path.insert(0, str(FIXTURES))
    from torch_net import SmallNet
    from torch_vision_net import TinyVision

    torch.manual_seed(1)
    vision, rows = TinyVision().eval(), SmallNet().eval()
    work = tmp_path_factory.mktemp("torchserve-handlers")
    store = work / "store"
    store.mkdir()
    for name in ("torch_vision_net.py", "torch_net.py", "ts_image_handler.py", "ts_rows_handler.py"):
        shutil.copy(FIXTURES / name, work / name)
    torch.save(vision.state_dict(), work / "vision.pth")
    torch.save(rows.state_dict(), work / "rows.pth")
    (work / "index_to_name.json").write_text(json.dumps(LABELS))
    common = ["--version", "1.0", "--export-path", str(store)]
    archiver(
        "torch-model-archiver",
        "--model-name",
        "ts_vision",
        "--model-file",
        "torch_vision_net.py",
        "--serialized-file",
        "vision.pth",
        "--handler",
        "ts_image_handler.py",
        "--extra-files",
        "index_to_name.json",
        *common,
        cwd=work,
    )
    archiver(
        "torch-model-archiver",
        "--model-name",
        "ts_builtin",
        "--model-file",
        "torch_vision_net.py",
        "--serialized-file",
        "vision.pth",
        "--handler",
        "image_classifier",
        "--extra-files",
        "index_to_name.json",
        *common,
        cwd=work,
    )
    archiver(
        "torch-model-archiver",
        "--model-name",
        "ts_rows",
        "--model-file",
        "torch_net.py",
        "--serialized-file",
        "rows.pth",
        "--handler",
        "ts_rows_handler.py",
        *common,
        cwd=work,
    )
    models = ["ts_vision=ts_vision.mar", "ts_builtin=ts_builtin.mar", "ts_rows=ts_rows.mar"]
    with running_server(
        work, ["--model-store", str(store), "--models", *models, "--default-workers-per-model", "1"]
    ) as server:
        yield server, vision, rows


def photo() -> bytes:
    rng = np.random.default_rng(7)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def expected_probabilities(vision, body: bytes) -> np.ndarray:
    tensor = torch.from_numpy(imagenet_tensor(Image.open(io.BytesIO(body))))
    return torch.softmax(vision(tensor), dim=1)[0].detach().numpy()


def test_an_image_classifier_subclass_runs_unchanged(setup):
    server, vision, _ = setup
    body = photo()
    response = server.predict("ts_vision", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    probabilities = expected_probabilities(vision, body)
    names = ["circle", "square", "stripe"]
    top2 = [names[i] for i in np.argsort(-probabilities)[:2]]
    assert list(answer) == top2  # topk = 2 from the subclass, labels from index_to_name.json
    for label in top2:
        assert answer[label] == pytest.approx(float(probabilities[names.index(label)]), abs=1e-4)


def test_the_builtin_name_in_a_torchserve_archive(setup):
    server, vision, _ = setup
    body = photo()
    answer = server.predict("ts_builtin", body).json()
    probabilities = expected_probabilities(vision, body)
    assert set(answer) == {"circle", "square", "stripe"}
    for index, label in enumerate(["circle", "square", "stripe"]):
        assert answer[label] == pytest.approx(float(probabilities[index]), abs=1e-4)


def test_a_base_handler_subclass_with_its_own_pre_and_postprocess(setup):
    server, _, rows_net = setup
    rows = np.random.default_rng(4).random((1, 16), dtype=np.float32)[0].tolist()
    response = server.predict("ts_rows", json.dumps(rows).encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    expected = int(rows_net(torch.tensor([rows])).argmax(dim=1)[0])
    assert response.json() == expected
    assert Path(server.describe("ts_rows")[0]["modelUrl"]).name == "ts_rows.mar"


def test_an_explanation_runs_the_handlers_explain_handle(setup):
    """TorchServe's ``/explanations/{m}[/{v}]``: BaseHandler.handle sees the ``explain`` header and hands the
    preprocessed rows, the first request's body and its target to the handler's ``get_insights``."""
    server, _, rows_net = setup
    rows = np.random.default_rng(5).random((1, 16), dtype=np.float32)[0].tolist()
    inputs = torch.tensor([rows], requires_grad=True)
    rows_net(inputs)[:, 0].sum().backward()
    expected = [[round(value, 6) for value in row] for row in (inputs.grad * inputs).tolist()]
    body, headers = json.dumps(rows).encode(), {"Content-Type": "application/json"}
    for path in ("/explanations/ts_rows", "/explanations/ts_rows/1.0"):
        answer = server.http.post(f"{server.inference_url}{path}", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json() == pytest.approx(expected[0], abs=1e-5)
    # The same model still predicts: the header marks only the explanation requests.
    predicted = server.predict("ts_rows", body, headers=headers)
    assert predicted.json() == int(rows_net(torch.tensor([rows])).argmax(dim=1)[0])
    # A handler that defines no get_insights says so.
    image = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(image, format="PNG")
    vision = server.http.post(f"{server.inference_url}/explanations/ts_vision", content=image.getvalue())
    assert vision.status_code == 500 and "get_insights" in vision.text, vision.text


def test_a_kserve_explanation_is_answered_as_explanations(setup, tmp_path: Path):
    """Behind KServe (``service_envelope=kserve``), ``:explain`` reaches ``explain_handle`` with one row per
    instance and is answered ``{"explanations": [...]}``, as TorchServe's envelope answers it; ``:predict`` still
    answers ``predictions``."""
    server, _, rows_net = setup
    store = server.args[server.args.index("--model-store") + 1]
    rows = np.random.default_rng(6).random((2, 16), dtype=np.float32).tolist()
    inputs = torch.tensor(rows, requires_grad=True)
    rows_net(inputs)[:, 0].sum().backward()
    expected = (inputs.grad * inputs).tolist()
    args = ["--model-store", store, "--models", "ts_rows=ts_rows.mar", "--service-envelope", "kserve"]
    with running_server(tmp_path, [*args, "--default-workers-per-model", "1"]) as kserve:
        document = {"instances": [{"body": row} for row in rows]}
        explained = kserve.http.post(f"{kserve.inference_url}/v1/models/ts_rows:explain", json=document)
        assert explained.status_code == 200, explained.text
        explanations = explained.json()["explanations"]  # one per instance
        assert len(explanations) == 2
        for row, wanted in zip(explanations, expected, strict=True):
            assert row == pytest.approx(wanted, abs=1e-5)
        predicted = kserve.http.post(f"{kserve.inference_url}/v1/models/ts_rows:predict", json=document)
        assert predicted.json() == {"predictions": rows_net(torch.tensor(rows)).argmax(dim=1).tolist()}
