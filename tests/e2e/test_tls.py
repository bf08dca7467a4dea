"""TLS on every port (#37), as TorchServe's https collection uses it: a real server started from a TorchServe
``config.properties`` with ``certificate_file``, ``private_key_file`` and ``enable_grpc_ssl=true``, a test
certificate made by openssl, and clients that check it: HTTPS on the inference, management and metrics ports,
gRPC over TLS (the Open Inference Protocol's and TorchServe's services, on DMS's HTTP/2 and on grpcio), and no
plain text anywhere."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from dms._generated import torchserve_inference_pb2 as ts
from tests.conftest import make_probe_archive
from tests.support import DmsServer, free_ports, running_server


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl (scripts/test.sh installs it), which is missing")
    work = tmp_path_factory.mktemp("tls")
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _tls_server(work: Path, cert: Path, key: Path, grpc_server: str) -> Iterator[tuple[DmsServer, str]]:
    store = work / "model_store"
    make_probe_archive(store, "probe")
    [grpc_management] = free_ports(1)
    config = work / "config.properties"
    config.write_text(
        f"model_store={store}\nload_models=probe-1.0.mar\ndisable_token_authorization=true\n"
        f"certificate_file={cert}\nprivate_key_file={key}\nenable_grpc_ssl=true\n"
        f"grpc_management_port={grpc_management}\n"
    )
    args = ["--ts-config", str(config), "--no-default-model", "--grpc-server", grpc_server]
    with running_server(work, args) as server:
        yield server, f"127.0.0.1:{grpc_management}"


@pytest.fixture(scope="module")
def server(certificate: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DmsServer, str]]:
    yield from _tls_server(tmp_path_factory.mktemp("tls-dms"), *certificate, "dms")


def _https(url: str) -> str:
    return url.replace("http://", "https://")


def test_every_http_port_serves_https_and_checks_out(server: tuple[DmsServer, str], certificate: tuple[Path, Path]):
    running, _ = server
    cert, _ = certificate
    assert "inference https://" in "\n".join(running.lines)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=60) as client:
        assert client.get(_https(running.inference_url) + "/ping").json() == {"status": "Healthy"}
        answer = client.post(_https(running.inference_url) + "/predictions/probe", json={"echo": "over tls"})
        assert answer.status_code == 200 and answer.json()["echo"] == "over tls"
        assert client.get(_https(running.management_url) + "/models").json()["models"][0]["modelName"] == "probe"
        assert client.options(_https(running.management_url) + "/").json()["openapi"].startswith("3.")
        assert "dms_requests_total" in client.get(_https(running.metrics_url) + "/metrics").text


def test_nothing_is_served_in_plain_text(server: tuple[DmsServer, str], certificate: tuple[Path, Path]):
    running, _ = server
    cert, _ = certificate
    for url in (running.inference_url, running.management_url, running.metrics_url):
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/ping", timeout=10)
    # Plain HTTP bytes on the TLS port: the connection is closed, unanswered, and the next client is served.
    host, port = running.inference_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as plain:
        plain.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answered = plain.recv(4096)
        except ConnectionResetError:
            answered = b""
        assert b"Healthy" not in answered
    with grpc.insecure_channel(running.grpc_address) as channel, pytest.raises(grpc.RpcError):
        _ping(channel, timeout=5)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=60) as client:
        assert client.get(_https(running.inference_url) + "/ping").status_code == 200


def _ping(channel: grpc.Channel, timeout: float = 30) -> str:
    call = channel.unary_unary(
        "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Ping",
        request_serializer=lambda _: b"",
        response_deserializer=ts.TorchServeHealthResponse.FromString,
    )
    health: str = call(None, timeout=timeout).health
    return health


def _grpc_over_tls(running: DmsServer, grpc_management: str, cert: Path) -> None:
    import tritonclient.grpc as triton

    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(running.grpc_address, credentials) as channel:
        assert '"Healthy"' in _ping(channel)
        predict = channel.unary_unary(
            "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions",
            request_serializer=ts.PredictionsRequest.SerializeToString,
            response_deserializer=ts.PredictionResponse.FromString,
        )
        answer = predict(ts.PredictionsRequest(model_name="probe", input={"data": b"x"}), timeout=60)
        assert b'"model":"probe"' in answer.prediction.replace(b" ", b"")
    with grpc.secure_channel(grpc_management, credentials) as channel:
        listing = channel.unary_unary(
            "/org.pytorch.serve.grpc.management.ManagementAPIsService/ListModels",
            request_serializer=lambda _: b"",
            response_deserializer=lambda raw: raw,
        )
        assert b"probe" in listing(None, timeout=30)
    client = triton.InferenceServerClient(running.grpc_address, ssl=True, root_certificates=str(cert))
    try:
        assert client.is_server_live()
    finally:
        client.close()


def test_grpc_over_tls_on_dms_http2(server: tuple[DmsServer, str], certificate: tuple[Path, Path]):
    _grpc_over_tls(*server, certificate[0])


def test_grpc_over_tls_on_grpcio(certificate: tuple[Path, Path], tmp_path: Path):
    for running, grpc_management in _tls_server(tmp_path, *certificate, "grpcio"):
        _grpc_over_tls(running, grpc_management, certificate[0])


def test_a_certificate_that_cannot_be_used_is_one_line(certificate: tuple[Path, Path], tmp_path: Path):
    cert, _ = certificate
    command = [
        *[sys.executable, "-m", "dms", "serve"],
        "--no-default-model",
        "--state-dir",
        str(tmp_path / "state"),
        "--tls-certificate-file",
        str(cert),
        "--tls-private-key-file",
        str(tmp_path / "missing-key.pem"),
    ]
    ports = free_ports(4)
    for flag, port in zip(
        ("--inference-address", "--management-address", "--metrics-address", "--grpc-address"), ports, strict=True
    ):
        command += [flag, f"127.0.0.1:{port}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode != 0
    assert f"error: {tmp_path / 'missing-key.pem'} does not exist" in done.stderr


def test_clients_that_never_finish_a_handshake_are_closed_after_10_s_and_hold_nobody_up(
    server: tuple[DmsServer, str], certificate: tuple[Path, Path]
):
    """Connections that open and send nothing: each is closed once its handshake has taken 10 s, and an honest
    client is served while they wait."""
    running, _ = server
    cert, _ = certificate
    host, port = running.inference_url.removeprefix("http://").split(":")
    silent = [socket.create_connection((host, int(port)), timeout=5) for _ in range(50)]
    try:
        started = time.monotonic()
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=60) as client:
            assert client.post(_https(running.inference_url) + "/predictions/probe", json={}).status_code == 200
        for sock in silent:
            sock.settimeout(max(0.1, started + 15 - time.monotonic()))
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
        assert 9 < time.monotonic() - started < 15
    finally:
        for sock in silent:
            sock.close()
