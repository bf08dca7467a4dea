"""Every error comes back as the JSON error body, and the server keeps serving afterwards."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from dms.archive.writer import ArchiveSpec, write_archive
from dms.server import default_model_archive
from tests.conftest import make_probe_archive
from tests.support import FIXTURES, DmsServer, running_server

MAX_BODY = 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("errors")
    store = work / "model_store"
    store.mkdir()
    make_probe_archive(store, "narrow", config="initial_workers: 1\nbatch_size: 1\njob_queue_size: 2\n")
    make_probe_archive(store, "slow", config="initial_workers: 1\nresponse_timeout_s: 1\n")
    models = ["narrow=narrow-1.0.mar", "slow=slow-1.0.mar", f"digits={default_model_archive()}"]
    env = {"DMS_MAX_REQUEST_SIZE_BYTES": str(MAX_BODY)}
    with running_server(work, ["--model-store", str(store), "--models", *models], env=env) as running:
        yield running


def assert_json_error(response: httpx.Response, status: int, error_type: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == status and body["type"] == error_type and body["message"]
    return body


def still_serving(server: DmsServer) -> None:
    sample = (default_model_archive().parent / "samples" / "digit_5.png").read_bytes()
    response = server.predict("digits", sample)
    assert response.status_code == 200 and next(iter(response.json())) == "5"


def test_full_queue_answers_503_with_retry_after(server: DmsServer):
    busy = ThreadPoolExecutor(1).submit(server.predict, "narrow", {"sleep": 1.5})
    server.wait_busy("narrow")
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda i: server.predict("narrow", {"echo": i}), range(6)))
    assert busy.result().status_code == 200
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 2 and codes.count(503) == 4, codes
    rejected = next(r for r in responses if r.status_code == 503)
    body = assert_json_error(rejected, 503, "QueueFullError")
    assert "job_queue_size" in str(body["message"])
    assert int(rejected.headers["retry-after"]) >= 1
    assert server.predict("narrow", {"echo": "after"}).status_code == 200
    still_serving(server)


def test_a_request_past_the_response_timeout_is_a_504_and_the_worker_is_replaced(server: DmsServer):
    [old_pid] = server.worker_pids("slow")
    body = assert_json_error(server.predict("slow", {"sleep": 30}), 504, "RequestTimeoutError")
    assert "slow" in str(body["message"]) and "1 s" in str(body["message"])
    recovered = server.predict("slow", {"echo": 1})
    assert recovered.status_code == 200, recovered.text
    assert recovered.json()["pid"] != old_pid
    still_serving(server)


def test_an_oversized_body_is_a_413(server: DmsServer):
    body = assert_json_error(server.predict("digits", b"x" * (MAX_BODY + 1)), 413, "PayloadTooLargeError")
    assert str(MAX_BODY) in str(body["message"])
    chunked = httpx.post(
        f"{server.inference_url}/predictions/digits", content=iter([b"x" * 3000, b"y" * 3000]), timeout=30
    )
    assert_json_error(chunked, 413, "PayloadTooLargeError")
    still_serving(server)


@pytest.mark.parametrize("path", ["/predictions/nope", "/predictions/digits/9.9"])
def test_an_unknown_model_or_version_is_a_404(server: DmsServer, path: str):
    assert_json_error(httpx.post(f"{server.inference_url}{path}", content=b"x"), 404, "ModelNotFoundError")
    still_serving(server)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"definitely not an image", "application/octet-stream"),
        (b"{not json", "application/json"),
        (b"\x89PNG\r\n\x1a\n broken", "image/png"),
        (b"--x\r\nbroken", "multipart/form-data; boundary=x"),
    ],
)
def test_a_garbage_body_is_a_400(server: DmsServer, body: bytes, content_type: str):
    response = server.predict("digits", body, headers={"Content-Type": content_type})
    assert_json_error(response, 400, "InputError")
    still_serving(server)


def test_an_unknown_route_or_method_is_a_json_error(server: DmsServer):
    assert_json_error(httpx.get(f"{server.inference_url}/nowhere"), 404, "ResourceNotFound")
    assert_json_error(httpx.get(f"{server.inference_url}/predictions/digits"), 405, "MethodNotAllowed")


def test_a_startup_model_that_cannot_load_is_visible_as_failed(tmp_path: Path):
    store = tmp_path / "store"
    write_archive(ArchiveSpec(model_name="broken", version="1.0", handler=str(FIXTURES / "failing_handler.py")), store)
    make_probe_archive(store, "fine", config="initial_workers: 1\n")
    env = {"DMS_RESTART_BACKOFF_MAX_S": "0.2"}
    with running_server(
        tmp_path,
        [
            "--model-store",
            str(store),
            "--models",
            "broken.mar",
            "fine=fine-1.0.mar",
            "--default-workers-per-model",
            "1",
        ],
        env=env,
    ) as server:
        [described] = server.describe("broken")
        assert described["status"] == "FAILED"
        assert "broken on purpose" in described["lastError"]
        metrics = httpx.get(f"{server.metrics_url}/metrics").text
        assert 'dms_model_failed{model="broken",version="1.0"} 1.0' in metrics
        assert 'dms_model_failed{model="fine",version="1.0"} 0.0' in metrics
        ping = httpx.get(f"{server.inference_url}/ping")
        assert ping.status_code == 500 and ping.json() == {"status": "Unhealthy"}
        assert httpx.get(f"{server.inference_url}/v2/health/ready").json() == {"ready": False}
        assert httpx.get(f"{server.inference_url}/v2/models/broken/ready").status_code == 400
        body = assert_json_error(server.predict("broken", b"x"), 503, "ModelUnavailableError")
        assert "broken on purpose" in str(body["message"])
        assert server.predict("fine", {"echo": 1}).status_code == 200
        log = server.log()
        assert log.count("broken on purpose") >= 3  # three tries, then it stopped
        retried = server.manage("PUT", "/models/broken", params={"min_worker": 1, "synchronous": "true"})
        assert retried.status_code == 500 and retried.json()["type"] == "WorkersFailedError"  # as TorchServe
        assert "broken on purpose" in retried.json()["message"]
        assert server.describe("broken")[0]["status"] == "FAILED"
