"""The built-in ``tensor`` handler on a real ONNX model: JSON or .npy in, JSON out, shapes checked."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from dms.archive.writer import ArchiveSpec, write_archive
from tests.support import DmsServer, running_server

onnx = pytest.importorskip("onnx", reason="the onnx package ([onnx] extra) builds the test model")

WEIGHTS = np.arange(16 * 4, dtype=np.float32).reshape(16, 4) / 100
BIAS = np.array([1, 2, 3, 4], dtype=np.float32)


def linear_model(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(WEIGHTS, "w"), numpy_helper.from_array(BIAS, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def write_linear_archive(work: Path, store: Path, config: str) -> Path:
    """``linear`` 1.0 in ``store``: the Gemm model above behind the built-in tensor handler."""
    (work / "linear.yaml").write_text(config)
    spec = ArchiveSpec(
        model_name="linear",
        version="1.0",
        handler="tensor",
        serialized_file=linear_model(work / "linear.onnx"),
        config_file=work / "linear.yaml",
    )
    return write_archive(spec, store)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("tensor")
    archive = write_linear_archive(work, work / "store", "initial_workers: 1\nbatch_size: 16\n")
    with running_server(work, ["--models", f"linear={archive}", "--no-default-model"]) as running:
        yield running


def expected(rows: np.ndarray) -> np.ndarray:
    return rows @ WEIGHTS + BIAS


def test_json_rows_in_json_rows_out(server: DmsServer):
    rows = np.random.default_rng(0).random((3, 16), dtype=np.float32)
    wrapped = server.predict("linear", {"inputs": rows.tolist()})
    assert wrapped.status_code == 200, wrapped.text
    np.testing.assert_allclose(wrapped.json(), expected(rows), rtol=1e-5)
    plain = server.predict("linear", json.dumps(rows.tolist()).encode(), headers={"Content-Type": "application/json"})
    assert plain.status_code == 200, plain.text
    np.testing.assert_allclose(plain.json(), expected(rows), rtol=1e-5)


def test_a_single_row_without_batch_dimension_answers_a_single_row(server: DmsServer):
    row = np.ones(16, dtype=np.float32)
    response = server.predict("linear", json.dumps(row.tolist()).encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json(), expected(row[None])[0], rtol=1e-5)


def test_npy_body(server: DmsServer):
    rows = np.random.default_rng(1).random((2, 16)).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, rows)
    response = server.predict("linear", buffer.getvalue(), headers={"Content-Type": "application/x-npy"})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json(), expected(rows), rtol=1e-5)


def test_npz_body_with_named_arrays(server: DmsServer):
    rows = np.random.default_rng(5).random((2, 16)).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, x=rows)
    response = server.predict("linear", buffer.getvalue(), headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json(), expected(rows), rtol=1e-5)


def test_concurrent_requests_each_get_their_own_rows_back(server: DmsServer):
    rng = np.random.default_rng(2)
    requests = [rng.random((1 + i % 3, 16), dtype=np.float32) for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda rows: server.predict("linear", {"inputs": rows.tolist()}), requests))
    for rows, response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json(), expected(rows), rtol=1e-5)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": [[1.0, 2.0]]}, "has shape [1, 2]; the model expects [-1, 16]"),
        ({"inputs": [["a"] * 16]}, "is not a float32 tensor"),
        ({"inputs": {"z": [[0.0] * 16]}}, "input 'x' is missing"),
        ({"data": 1}, '"inputs" key'),
    ],
)
def test_bad_tensors_are_400_saying_what_was_expected(server: DmsServer, body: dict[str, object], message: str):
    response = server.predict("linear", body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
