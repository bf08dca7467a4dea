"""The original DMS interface: ``deep-model-export`` → ``deep-model-server`` → multipart ``/{model}/predict``."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.e2e.test_user_flow import KITTEN_TOP5, SQUEEZENET_CONFIG
from tests.support import FIXTURES, DmsServer, free_ports, shared_path

BIN = Path(sys.executable).parent
SIGNATURE = {
    "inputs": [{"data_name": "input0", "data_shape": [0, 3, 224, 224]}],
    "input_type": "image/jpeg",
    "outputs": [{"data_name": "softmax", "data_shape": [0, 1000]}],
    "output_type": "application/json",
}


def export(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "deep-model-export"), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def squeezenet_folder(work: Path) -> Path:
    folder = work / "squeezenet"
    folder.mkdir()
    model = shared_path("models/squeezenet/squeezenet_v1.1.onnx")
    shutil.copy(model, folder / model.name)
    shutil.copy(model.parent / "synset.txt", folder / "synset.txt")
    (folder / "signature.json").write_text(json.dumps(SIGNATURE))
    (folder / "model-config.yaml").write_text(SQUEEZENET_CONFIG)
    return folder


def exported_vision_folder(work: Path):
    """A torch.export program of the tiny 3-class vision net, with its own signature and labels."""
    torch = pytest.importorskip("torch", reason="the [torch] extra (torch==2.13.0) is not installed")
    sys.path.insert(0, str(FIXTURES))
    from torch_vision_net import TinyVision

    torch.manual_seed(3)
    net = TinyVision().eval()
    folder = work / "tiny"
    folder.mkdir()
    example = torch.zeros(1, 3, 224, 224)
    torch.export.save(torch.export.export(net, (example,)), folder / "tiny.pt2")
    (folder / "synset.txt").write_text("n001 circle\nn002 square\nn003 stripe\n")
    (folder / "signature.json").write_text(json.dumps({**SIGNATURE, "inputs": [{"data_name": "picture"}]}))
    return folder, net


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("legacy")
    squeezenet = squeezenet_folder(work)
    tiny, net = exported_vision_folder(work)
    for name, folder in (("squeezenet", squeezenet), ("tiny", tiny)):
        done = export("--model-name", name, "--model-path", str(folder), cwd=work)
        assert done.returncode == 0, done.stderr
    server = DmsServer(work, [])
    inference_port = server.inference_url.rsplit(":", 1)[1]
    server.command = [str(BIN / "deep-model-server")]
    server.args = [
        *("--models", "squeezenet=squeezenet.model", "tiny=tiny.model"),
        *("--host", "127.0.0.1", "--port", inference_port, "--state-dir", str(server.state_dir)),
    ]
    server.env.update(
        DMS_MANAGEMENT_ADDRESS=server.management_url.removeprefix("http://"),
        DMS_METRICS_ADDRESS=server.metrics_url.removeprefix("http://"),
        DMS_GRPC_ADDRESS=server.grpc_address,
    )
    server.start()
    try:
        yield server, work, net
    finally:
        server.stop()


def test_the_archive_has_the_original_layout(legacy):
    _, work, _ = legacy
    with zipfile.ZipFile(work / "squeezenet.model") as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("MANIFEST.json"))
    assert {"MANIFEST.json", "signature.json", "synset.txt", "squeezenet_v1.1.onnx"} <= names
    assert manifest["Model"]["Model-Name"] == "squeezenet"
    assert manifest["Model"]["Parameters"] == "squeezenet_v1.1.onnx"
    assert manifest["Model"]["Model-Format"] == "ONNX"
    assert {"Model-Archive-Version", "License", "Model-Server", "Engine", "Created-By"} <= set(manifest)


def test_multipart_predict_answers_the_original_shape(legacy):
    server, _, _ = legacy
    kitten = shared_path("images/kitten.jpg").read_bytes()
    response = server.http.post(f"{server.inference_url}/squeezenet/predict", files={"input0": kitten})
    assert response.status_code == 200, response.text
    [top5] = response.json()["prediction"]
    assert [entry["class"] for entry in top5][:3] == [
        "n02124075 Egyptian cat",
        "n02123159 tiger cat",
        "n02123045 tabby, tabby cat",
    ]
    for entry, expected in zip(top5, KITTEN_TOP5.values(), strict=True):
        assert entry["probability"] == pytest.approx(expected, abs=2e-3)


def test_a_pytorch_legacy_archive_serves_with_its_own_field_name(legacy):
    torch = pytest.importorskip("torch")
    server, _, net = legacy
    kitten = shared_path("images/kitten_small.jpg").read_bytes()
    response = server.http.post(f"{server.inference_url}/tiny/predict", files={"picture": kitten})
    assert response.status_code == 200, response.text
    [top] = response.json()["prediction"]
    from tests.e2e.test_torchserve_handlers import imagenet_tensor

    tensor = torch.from_numpy(imagenet_tensor(Image.open(io.BytesIO(kitten))))
    expected = torch.softmax(net(tensor), dim=1)[0].detach().numpy()
    names = ["n001 circle", "n002 square", "n003 stripe"]
    assert [entry["class"] for entry in top] == [names[i] for i in np.argsort(-expected)]
    for entry in top:
        assert entry["probability"] == pytest.approx(float(expected[names.index(entry["class"])]), abs=1e-4)


def test_a_missing_form_field_is_a_400_naming_the_field(legacy):
    server, _, _ = legacy
    response = server.http.post(f"{server.inference_url}/squeezenet/predict", files={"image": b"x"})
    assert response.status_code == 400
    assert "'input0'" in response.json()["message"]
    assert server.http.post(f"{server.inference_url}/nosuch/predict", files={"input0": b"x"}).status_code == 404


def test_api_description_lists_the_legacy_endpoint(legacy):
    server, _, _ = legacy
    document = server.http.get(f"{server.inference_url}/api-description").json()
    operation = document["paths"]["/{model_name}/predict"]["post"]
    assert "multipart/form-data" in operation["requestBody"]["content"]


def mxnet_archive(path: Path) -> Path:
    manifest = {
        "Model-Archive-Version": 0.1,
        "License": "Apache 2.0",
        "Model-Server": 0.1,
        "Engine": {"MXNet": 1.0},
        "Model": {
            "Parameters": "resnet-18-0000.params",
            "Symbol": "resnet-18-symbol.json",
            "Signature": "signature.json",
            "Model-Format": "MXNet-Symbolic",
            "Model-Name": "resnet-18",
            "Service": "mxnet_vision_service.py",
        },
    }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("MANIFEST.json", json.dumps(manifest))
        archive.writestr("resnet-18-symbol.json", "{}")
        archive.writestr("resnet-18-0000.params", b"\0" * 16)
        archive.writestr("signature.json", json.dumps(SIGNATURE))
    return path


def test_an_mxnet_archive_gets_a_clear_retirement_error_and_the_server_stays_up(legacy, tmp_path):
    server, _, _ = legacy
    archive = mxnet_archive(tmp_path / "resnet-18.model")
    port = str(free_ports(1)[0])
    done = subprocess.run(
        [str(BIN / "deep-model-server"), "--models", f"old={archive}", "--port", port, "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "MXNet is retired" in done.stderr and "ONNX" in done.stderr
    assert server.http.get(f"{server.inference_url}/ping").json()["status"] == "Healthy"


def test_deep_model_export_refuses_mxnet_and_missing_signatures(tmp_path):
    folder = tmp_path / "mx"
    folder.mkdir()
    (folder / "resnet-18-symbol.json").write_text("{}")
    (folder / "resnet-18-0000.params").write_bytes(b"\0")
    (folder / "signature.json").write_text(json.dumps(SIGNATURE))
    done = export("--model-name", "resnet-18", "--model-path", str(folder), cwd=tmp_path)
    assert done.returncode != 0 and "MXNet is retired" in done.stderr
    (folder / "signature.json").unlink()
    done = export("--model-name", "resnet-18", "--model-path", str(folder), cwd=tmp_path)
    assert done.returncode != 0 and "signature.json" in done.stderr
    assert not list(tmp_path.glob("*.model"))
