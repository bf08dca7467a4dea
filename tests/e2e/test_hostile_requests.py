"""Hostile inference requests against a real server with default settings: each gets a clear error, no
worker dies, the server's memory stays where it was and other requests are answered all along
(``tests/e2e/hostile.py`` asserts the last three around every attack).
"""

from __future__ import annotations

import io
import json
import socket
import zipfile

import grpc
import httpx
import numpy as np
import pytest

from dms._generated import inference_pb2 as pb
from tests.e2e.conftest import write_echo_archive
from tests.e2e.hostile import watched
from tests.e2e.test_tensor_handler import write_linear_archive
from tests.support import DmsServer, running_server

HUGE = 1 << 40
LINEAR_ROW = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("hostile")
    store = work / "store"
    write_echo_archive(work, store)
    write_linear_archive(work, store, "initial_workers: 1\nbatch_size: 8\n")
    args = ["--model-store", str(store), "--models", "echo=echo.mar", "linear=linear.mar", "--no-snapshot"]
    with running_server(work, args) as running:
        yield running


def linear_infer(server: DmsServer):
    url = f"{server.inference_url}/v2/models/linear/infer"
    return lambda client: client.post(url, json=LINEAR_ROW)


def tensor(name: str, datatype: str, shape: list[int], data: list) -> dict:
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}


REST_ATTACKS = [
    # (model, body, status, what the message names)
    ("linear", tensor("x", "FP32", [0, HUGE, HUGE], []), 413, "max_tensor_elements (50000000)"),
    ("linear", tensor("x", "FP32", [HUGE, 16], []), 413, "max_tensor_elements"),
    ("linear", tensor("x", "FP32", [-1, 16], []), 400, "negative dimension"),
    ("echo", tensor("x", "BYTES", [HUGE], []), 413, "max_tensor_elements"),
    ("echo", tensor("x", "BYTES", [200_000_000], []), 413, "max_tensor_elements"),
    ("echo", tensor("x", "BYTES", [40_000_000], []), 400, "has 0 elements"),
    ("echo", tensor("x", "FP32", [0, HUGE, HUGE], []), 413, "max_tensor_elements"),
]


@pytest.mark.parametrize(("model", "body", "status", "named"), REST_ATTACKS)
def test_oip_rest_shapes_are_refused_before_allocation(server: DmsServer, model, body, status, named):
    with watched(server, linear_infer(server)):
        for _ in range(3):
            response = server.http.post(f"{server.inference_url}/v2/models/{model}/infer", json=body)
            assert response.status_code == status, response.text
            assert named in response.json()["error"]


def test_binary_bytes_tensor_shorter_than_its_shape_is_refused(server: DmsServer):
    header = json.dumps(
        {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [40_000_000], "parameters": {"binary_data_size": 8}}]}
    ).encode()
    with watched(server, linear_infer(server)):
        response = server.http.post(
            f"{server.inference_url}/v2/models/echo/infer",
            content=header + b"\0" * 8,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
    assert response.status_code == 400, response.text
    assert "too few for 40000000 BYTES elements" in response.json()["error"]


def test_kserve_v1_ragged_instances_to_a_custom_handler(server: DmsServer):
    with watched(server, linear_infer(server)):
        response = server.http.post(f"{server.inference_url}/v1/models/echo:predict", json={"instances": [[1, 2], [3]]})
    assert response.status_code == 400, response.text
    assert "do not form a tensor" in response.json()["error"]


def grpc_infer(server: DmsServer, request: pb.ModelInferRequest) -> grpc.RpcError | pb.ModelInferResponse:
    with grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        try:
            return call(request, timeout=60)
        except grpc.RpcError as exc:
            return exc


def grpc_typed(model: str, datatype: str, shape: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype=datatype, shape=shape)
    return request


def grpc_raw(model: str, datatype: str, shape: list[int], raw: bytes) -> pb.ModelInferRequest:
    request = grpc_typed(model, datatype, shape)
    request.raw_input_contents.append(raw)
    return request


GRPC_ATTACKS = [
    (grpc_typed("linear", "FP32", [0, HUGE, HUGE]), grpc.StatusCode.RESOURCE_EXHAUSTED, "max_tensor_elements"),
    (grpc_typed("echo", "BYTES", [HUGE]), grpc.StatusCode.RESOURCE_EXHAUSTED, "max_tensor_elements"),
    (grpc_typed("echo", "INT32", [30_000_000]), grpc.StatusCode.INVALID_ARGUMENT, "has 0 elements"),
    (grpc_raw("echo", "BYTES", [HUGE], b""), grpc.StatusCode.RESOURCE_EXHAUSTED, "max_tensor_elements"),
    (grpc_raw("echo", "BYTES", [40_000_000], b"\0" * 4), grpc.StatusCode.INVALID_ARGUMENT, "too few"),
    (grpc_raw("linear", "FP32", [0, HUGE, HUGE], b""), grpc.StatusCode.RESOURCE_EXHAUSTED, "max_tensor_elements"),
]


@pytest.mark.parametrize(("request_", "code", "named"), GRPC_ATTACKS)
def test_grpc_shapes_are_refused_before_allocation(server: DmsServer, request_, code, named):
    with watched(server, linear_infer(server)):
        for _ in range(3):
            answer = grpc_infer(server, request_)
            assert isinstance(answer, grpc.RpcError), answer
            assert answer.code() == code, answer.details()
            assert named in answer.details()


def npz_bomb(elements: int) -> bytes:
    """An .npz holding one float32 array of ``elements`` zeros, deflated (about 1 KB a million elements)."""
    buffer = io.BytesIO()
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (elements,)})
    chunk = bytes(1 << 20)
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("x.npy", "w", force_zip64=True) as member,
    ):
        member.write(header.getvalue())
        left = elements * 4
        while left:
            member.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
    return buffer.getvalue()


def test_npz_bomb_is_refused_from_its_headers(server: DmsServer):
    bomb = npz_bomb(100_000_000)  # 400 MB of float32 zeros in a body under the size limit
    assert len(bomb) < 1_000_000
    with watched(server, linear_infer(server)):
        response = server.predict("linear", bomb, headers={"Content-Type": "application/x-npz"})
    assert response.status_code == 413, response.text
    assert "max_tensor_elements" in response.json()["message"]


def test_npy_whose_header_claims_more_than_it_holds(server: DmsServer):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (40_000_000,)})
    with watched(server, linear_infer(server)):
        response = server.predict("linear", b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + b"\0" * 64)
    assert response.status_code == 400, response.text
    assert "needs 160000000" in response.json()["message"]


# -- request heads -------------------------------------------------------------------------------


def send_endless_header(url: str, limit_mb: int = 800) -> tuple[bytes, int]:
    """Send one request whose header never ends, until the server answers or stops reading; return its
    answer and how many bytes were sent."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Filler: ")
        chunk = b"a" * 65536
        sock.settimeout(0.001)
        answer = b""
        while sent < limit_mb << 20:
            try:
                sent += sock.send(chunk)
            except (BlockingIOError, TimeoutError):
                pass
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                data = sock.recv(65536)
                if data:
                    answer += data
                    break
            except (BlockingIOError, TimeoutError):
                continue
            except ConnectionResetError:
                break
        sock.settimeout(10)
        try:
            while data := sock.recv(65536):
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
    return answer, sent


def parse_answer(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.mark.parametrize("port", ["inference", "management", "metrics"])
def test_endless_header_gets_431_at_the_limit(server: DmsServer, port: str):
    url = {"inference": server.inference_url, "management": server.management_url, "metrics": server.metrics_url}
    with watched(server, linear_infer(server)):
        answer, sent = send_endless_header(url[port])
    status, body = parse_answer(answer)
    assert status == 431 and body["type"] == "HeadersTooLargeError", answer[:300]
    assert "max_header_bytes (65536 bytes)" in body["message"]
    assert sent < 64 << 20, f"{sent >> 20} MiB were taken before the refusal"  # socket buffers, not the 800 MB


@pytest.mark.parametrize("port", ["inference", "management"])
def test_too_many_headers_get_431(server: DmsServer, port: str):
    url = server.inference_url if port == "inference" else server.management_url
    headers = [(f"X-H{i}", "v") for i in range(150)]
    with watched(server, linear_infer(server)):
        response = httpx.get(f"{url}/ping" if port == "inference" else f"{url}/models", headers=headers)
    assert response.status_code == 431, response.text
    assert "max_header_count (100)" in response.json()["message"]


def test_the_lean_path_refuses_a_long_head_too(server: DmsServer):
    """/predictions is answered with no ASGI app (dms.rest.calls): its heads are held to the limit."""
    headers = {f"X-Big-{i}": "b" * 8000 for i in range(10)}
    with watched(server, linear_infer(server)):
        response = httpx.post(f"{server.inference_url}/predictions/linear", json=[0.5] * 16, headers=headers)
        normal = httpx.post(f"{server.inference_url}/predictions/linear", json=[[0.5] * 16])
    assert response.status_code == 431, response.text
    assert normal.status_code == 200, normal.text


def test_a_request_under_the_limits_is_served(server: DmsServer):
    headers = {f"X-Fine-{i}": "c" * 500 for i in range(90)}
    response = httpx.post(f"{server.inference_url}/predictions/linear", json=[[0.5] * 16], headers=headers)
    assert response.status_code == 200, response.text
