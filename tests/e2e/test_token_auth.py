"""Token auth on a real server: on by default for management, optional for inference, rotatable."""

from __future__ import annotations

import io
import logging
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from dms._generated import inference_pb2 as pb
from dms.server import _warn_about_exposure, default_model_archive
from dms.settings import load_settings
from tests.support import DmsServer, running_server

SAMPLE = (default_model_archive().parent / "samples" / "digit_1.png").read_bytes()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with running_server(tmp_path_factory.mktemp("auth"), ["--enable-inference-token-auth"]) as running:
        yield running


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_management_needs_the_key(server: DmsServer):
    missing = httpx.get(f"{server.management_url}/models")
    assert missing.status_code == 401
    assert missing.json()["type"] == "UnauthorizedError"
    assert "key_file.json" in missing.json()["message"]
    wrong = httpx.get(f"{server.management_url}/models", headers=bearer("not-the-key"))
    assert wrong.status_code == 403 and wrong.json()["type"] == "ForbiddenError"
    not_bearer = httpx.get(f"{server.management_url}/models", headers={"Authorization": f"Basic {server.key()}"})
    assert not_bearer.status_code == 401
    inference_key = httpx.get(f"{server.management_url}/models", headers=bearer(server.key("inference")))
    assert inference_key.status_code == 403
    assert httpx.get(f"{server.management_url}/models", headers=bearer(server.key())).status_code == 200
    unregister = httpx.delete(f"{server.management_url}/models/digits")
    assert unregister.status_code == 401
    assert server.predict("digits", SAMPLE, headers=bearer(server.key("inference"))).status_code == 200


def test_the_key_file_is_readable_by_its_owner_only(server: DmsServer):
    mode = stat.S_IMODE(server.key_file.stat().st_mode)
    assert mode == 0o600


def test_inference_auth_when_enabled_keeps_health_open(server: DmsServer):
    assert server.predict("digits", SAMPLE).status_code == 401
    assert server.predict("digits", SAMPLE, headers=bearer(server.key())).status_code == 403
    answered = server.predict("digits", SAMPLE, headers=bearer(server.key("inference")))
    assert answered.status_code == 200 and next(iter(answered.json())) == "1"
    assert httpx.get(f"{server.inference_url}/ping").status_code == 200


def test_grpc_calls_on_one_channel_are_each_checked_with_their_own_key(server: DmsServer):
    """A channel sends the same headers call after call, and the server reads them once; a call whose key differs
    from the last one's is judged by its own."""
    image = np.asarray(Image.open(io.BytesIO(SAMPLE)).convert("L").resize((8, 8)), dtype=np.float32) / 16
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 8, 8])
    request.raw_input_contents.append(image.tobytes())
    inference, management = server.key("inference"), server.key()
    sent = [inference, inference, None, inference, management, "not-the-key", inference, inference]
    codes = []
    with grpc.insecure_channel(server.grpc_address) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for key in sent:
            metadata = [("authorization", f"Bearer {key}")] if key else []
            try:
                answer = pb.ModelInferResponse.FromString(infer(request.SerializeToString(), metadata=metadata))
                assert answer.model_name == "digits" and len(answer.raw_output_contents[0]) == 10 * 4
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
    ok, missing, wrong = grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
    assert codes == [ok, ok, missing, ok, wrong, wrong, ok, ok]


def test_keys_rotate_through_the_management_api(server: DmsServer):
    old = server.key("inference")
    rotated = server.manage("POST", "/token", params={"type": "inference"})
    assert rotated.status_code == 200
    new = rotated.json()["key"]
    assert new != old and server.key("inference") == new
    assert server.predict("digits", SAMPLE, headers=bearer(old)).status_code == 403
    assert server.predict("digits", SAMPLE, headers=bearer(new)).status_code == 200
    old_management = server.key()
    assert server.manage("POST", "/token").status_code == 200
    assert httpx.get(f"{server.management_url}/models", headers=bearer(old_management)).status_code == 403
    assert server.manage("GET", "/models").status_code == 200
    assert server.manage("POST", "/token", params={"type": "root"}).status_code == 400


def test_dms_token_prints_the_current_key(server: DmsServer):
    done = subprocess.run(
        [sys.executable, "-m", "dms", "token", "--state-dir", str(server.state_dir), "--type", "inference"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == server.key("inference")


def test_disabling_token_auth_is_possible_and_logged(tmp_path: Path):
    with running_server(tmp_path, ["--disable-token-auth"]) as server:
        assert httpx.get(f"{server.management_url}/models").status_code == 200
        assert not server.key_file.exists()
    assert "token auth is disabled" in server.log()


def test_binding_beyond_loopback_is_warned_about(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="dms.server"):
        _warn_about_exposure(load_settings(management_address="10.1.2.3:8081", metrics_address="[::1]:8082"))
    assert "management API listens on 10.1.2.3:8081" in caplog.text
    assert "metrics" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dms.server"):
        _warn_about_exposure(load_settings())
    assert caplog.text == ""
