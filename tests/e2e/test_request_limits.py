"""Hostile request bodies meet a named limit and a JSON 4xx; the server keeps serving."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dms.archive.writer import ArchiveSpec, write_archive
from dms.server import default_model_archive
from tests.conftest import make_probe_archive
from tests.e2e.test_tensor_handler import linear_model
from tests.support import DmsServer, running_server

LIMITS = {
    "DMS_MAX_JSON_DEPTH": "8",
    "DMS_MAX_TENSOR_ELEMENTS": "64",
    "DMS_MAX_MULTIPART_PARTS": "3",
    "DMS_MAX_IMAGE_PIXELS": "1000000",
    "DMS_MAX_RESPONSE_SIZE_BYTES": "4096",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("limits")
    store = work / "store"
    make_probe_archive(store, "probe", config="initial_workers: 1\n")
    linear = write_archive(
        ArchiveSpec(
            model_name="linear", version="1.0", handler="tensor", serialized_file=linear_model(work / "l.onnx")
        ),
        store,
    )
    models = ["probe=probe-1.0.mar", f"linear={linear}", f"digits={default_model_archive()}"]
    with running_server(
        work, ["--model-store", str(store), "--models", *models, "--default-workers-per-model", "1"], env=LIMITS
    ) as running:
        yield running


def refused(response, status: int, limit: str) -> None:
    assert response.status_code == status, response.text
    assert limit in response.json()["message"]


def healthy(server: DmsServer) -> None:
    assert server.predict("probe", {"echo": "ok"}).json()["echo"] == "ok"


def test_json_nesting_depth(server: DmsServer):
    nested = b'{"a":' * 20 + b"1" + b"}" * 20
    refused(server.predict("probe", nested, headers={"Content-Type": "application/json"}), 400, "max_json_depth (8")
    healthy(server)


def test_tensor_elements(server: DmsServer):
    rows = np.zeros((5, 16), dtype=np.float32).tolist()  # 80 elements > 64
    refused(server.predict("linear", {"inputs": rows}), 413, "max_tensor_elements (64)")
    assert server.predict("linear", {"inputs": rows[:4]}).status_code == 200
    healthy(server)


def test_multipart_parts(server: DmsServer):
    files = {f"f{i}": (f"{i}.bin", b"x", "application/octet-stream") for i in range(5)}
    refused(server.predict("probe", files=files), 413, "max_multipart_parts (3)")
    healthy(server)


def test_image_pixels_decompression_bomb(server: DmsServer):
    buffer = io.BytesIO()
    Image.new("1", (5000, 5000)).save(buffer, format="PNG")  # 25 M pixels in a few KiB
    assert len(buffer.getvalue()) < 50_000
    refused(server.predict("digits", buffer.getvalue()), 413, "max_image_pixels (1000000)")
    healthy(server)


def test_answers_over_the_response_size_limit(server: DmsServer):
    refused(server.predict("probe", {"echo": "x" * 5000}), 500, "max_response_size_bytes (4096)")
    assert server.predict("probe", {"echo": "x" * 3000}).json()["echo"] == "x" * 3000
    healthy(server)


def test_pickle_payloads_are_refused_not_unpickled(server: DmsServer, tmp_path: Path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    body = pickle.dumps(Exploit())
    response = server.predict("linear", body, headers={"Content-Type": "application/python-pickle"})
    refused(response, 415, "unpickling request data can run arbitrary code")
    as_npy = server.predict("linear", body, headers={"Content-Type": "application/octet-stream"})
    assert as_npy.status_code == 400
    object_npy = io.BytesIO()
    np.save(object_npy, np.array([Exploit()], dtype=object), allow_pickle=True)
    refused(server.predict("linear", object_npy.getvalue()), 400, "could not read the .npy/.npz body")
    assert not marker.exists()
    healthy(server)
