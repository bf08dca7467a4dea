"""The REST forms of the Open Inference Protocol and KServe v1, with plain HTTP and no client library."""

from __future__ import annotations

import base64
import struct

import httpx
import numpy as np
import pytest

from tests.e2e.test_tensor_handler import BIAS, WEIGHTS
from tests.support import DmsServer

ROWS = np.arange(32, dtype=np.float32).reshape(2, 16) / 10


@pytest.fixture
def server(oip_server: DmsServer) -> DmsServer:
    """The package's shared protocol server (tests/e2e/conftest.py)."""
    return oip_server


def infer(server: DmsServer, model: str, body: object, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.inference_url}/v2/models/{model}/infer", json=body, timeout=30, **kwargs)


@pytest.mark.parametrize("data", [ROWS.tolist(), ROWS.ravel().tolist()], ids=["nested", "flat"])
def test_json_inference_with_nested_or_flat_data_and_the_id_echoed(server: DmsServer, data):
    body = {"id": "my-id", "inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "data": data}]}
    response = infer(server, "linear", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("linear", "1.0", "my-id")
    [output] = answer["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("y", "FP32", [2, 4])
    np.testing.assert_allclose(np.array(output["data"]).reshape(2, 4), ROWS @ WEIGHTS + BIAS, rtol=1e-5)


def test_requested_outputs_only_and_binary_when_asked(server: DmsServer):
    body = {
        "inputs": [
            {"name": "x", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]},
            {"name": "z", "shape": [2], "datatype": "FP64", "data": [0.5, 1.5]},
        ],
        "outputs": [{"name": "out_z", "parameters": {"binary_data": True}}],
    }
    response = infer(server, "echo", body)
    assert response.status_code == 200, response.text
    header_length = int(response.headers["inference-header-content-length"])
    header = httpx.Response(200, content=response.content[:header_length]).json()
    [output] = header["outputs"]
    assert output["name"] == "out_z" and output["parameters"]["binary_data_size"] == 16
    np.testing.assert_array_equal(np.frombuffer(response.content[header_length:], "<f8"), [1.5, 2.5])


def test_binary_request_and_raw_body_form(server: DmsServer):
    header = {
        "inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "parameters": {"binary_data_size": ROWS.nbytes}}]
    }
    head = httpx.Request("POST", "http://x", json=header).read()
    response = httpx.post(
        f"{server.inference_url}/v2/models/linear/infer",
        content=head + ROWS.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        np.array(response.json()["outputs"][0]["data"]).reshape(2, 4), ROWS @ WEIGHTS + BIAS, rtol=1e-5
    )
    raw = httpx.post(
        f"{server.inference_url}/v2/models/linear/infer",
        content=ROWS.tobytes(),
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert raw.status_code == 200, raw.text
    assert raw.json()["outputs"][0]["shape"] == [2, 4]


def test_bytes_tensor_in_binary_form(server: DmsServer):
    elements = [b"ab", b"xyz"]
    payload = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    header = {
        "inputs": [{"name": "x", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(payload)}}]
    }
    head = httpx.Request("POST", "http://x", json=header).read()
    response = httpx.post(
        f"{server.inference_url}/v2/models/echo/infer",
        content=head + payload,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == ["ba", "zyx"]


@pytest.mark.parametrize(
    ("model", "inputs", "message"),
    [
        ("linear", [{"name": "x", "shape": [1, 16], "datatype": "FP99", "data": [0] * 16}], "unsupported datatype"),
        ("linear", [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0] * 15}], "has 15 elements"),
        ("linear", [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": [0] * 8}], "expects [-1, 16]"),
        ("linear", [{"name": "nope", "shape": [1, 16], "datatype": "FP32", "data": [0] * 16}], "input 'x' is missing"),
        ("linear", [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": ["a"] * 16}], "is not FP32"),
    ],
)
def test_bad_requests_are_400_with_an_error_field(server: DmsServer, model: str, inputs: list, message: str):
    response = infer(server, model, {"inputs": inputs})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert set(response.json()) == {"error"}


def test_unknown_model_and_bad_json_and_unknown_output(server: DmsServer):
    missing = infer(server, "no-such-model", {"inputs": []})
    assert missing.status_code == 404 and "no-such-model" in missing.json()["error"]
    assert httpx.get(f"{server.inference_url}/v2/models/no-such-model").status_code == 404
    garbage = httpx.post(f"{server.inference_url}/v2/models/linear/infer", content=b"{nope")
    assert garbage.status_code == 400 and "not valid JSON" in garbage.json()["error"]
    body = {
        "inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0] * 16}],
        "outputs": [{"name": "nothing"}],
    }
    unknown = infer(server, "linear", body)
    assert unknown.status_code == 400 and "unknown output 'nothing'" in unknown.json()["error"]


def test_health_metadata_and_statistics_over_plain_http(server: DmsServer):
    assert httpx.get(f"{server.inference_url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.inference_url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{server.inference_url}/v2/models/linear/versions/1.0/ready").json()["ready"] is True
    meta = httpx.get(f"{server.inference_url}/v2/models/echo").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]  # from the model config
    stats = httpx.get(f"{server.inference_url}/v2/models/stats").json()["model_stats"]
    assert {s["name"] for s in stats} >= {"linear", "echo"}


def test_kserve_v1(server: DmsServer):
    assert "linear" in httpx.get(f"{server.inference_url}/v1/models").json()["models"]
    assert httpx.get(f"{server.inference_url}/v1/models/linear").json() == {"name": "linear", "ready": True}
    predicted = httpx.post(f"{server.inference_url}/v1/models/linear:predict", json={"instances": ROWS.tolist()})
    assert predicted.status_code == 200, predicted.text
    np.testing.assert_allclose(predicted.json()["predictions"], ROWS @ WEIGHTS + BIAS, rtol=1e-5)
    named = httpx.post(f"{server.inference_url}/v1/models/linear:predict", json={"inputs": {"x": ROWS.tolist()}})
    np.testing.assert_allclose(named.json()["outputs"], ROWS @ WEIGHTS + BIAS, rtol=1e-5)
    b64 = {"instances": [{"b64": base64.b64encode(b"\x01\x02").decode()}]}
    echoed = httpx.post(f"{server.inference_url}/v1/models/echo:predict", json=b64)
    assert echoed.status_code == 200, echoed.text
    assert echoed.json() == {"predictions": [{"b64": base64.b64encode(b"\x02\x01").decode()}]}
    bad = httpx.post(f"{server.inference_url}/v1/models/linear:predict", json={"rows": []})
    assert bad.status_code == 400 and "instances" in bad.json()["error"]
    assert httpx.post(f"{server.inference_url}/v1/models/nope:predict", json={"instances": []}).status_code == 404
