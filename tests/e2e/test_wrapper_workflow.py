"""The Studio.ML serving workflow: dms serve --wrapper/--model-dir, ModelPipe, --killafter, payload forms."""

from __future__ import annotations

import io
import pickle
import shutil
import time
from pathlib import Path

import msgspec
import numpy as np

from tests.e2e.test_tensor_handler import BIAS, WEIGHTS, linear_model
from tests.support import DmsServer, running_server, wait_for

INCREMENT = """
def create_model(modeldir):
    def model(arrays):
        return {name: value + 1 for name, value in arrays.items()}
    return model
"""

PIPE = """
import numpy as np
from dms.pipeline import ModelPipe


def create_model(modeldir):
    pipe = ModelPipe()
    pipe.add(lambda arrays: arrays["x"])
    pipe.add(lambda rows: rows * 2, batch_size=4, batcher=np.vstack)
    pipe.add(lambda row: {"y": row}, num_workers=2)
    return pipe
"""


def serve(tmp_path: Path, *args: str) -> DmsServer:
    return DmsServer(tmp_path, ["--no-snapshot", *args]).start()


def post(server: DmsServer, body: bytes, content_type: str):
    return server.predict("model", body, headers={"Content-Type": content_type})


def test_an_increment_by_one_wrapper_in_every_payload_form(tmp_path: Path):
    (tmp_path / "wrapper.py").write_text(INCREMENT)
    (tmp_path / "models").mkdir()
    with running_server(
        tmp_path, ["--wrapper", str(tmp_path / "wrapper.py"), "--model-dir", str(tmp_path / "models")]
    ) as server:
        as_json = server.predict("model", {"x": [1, 2], "y": [[0.5]]})
        assert as_json.status_code == 200, as_json.text
        assert as_json.json() == {"x": [2, 3], "y": [[1.5]]}

        buffer = io.BytesIO()
        np.savez(buffer, x=np.arange(3, dtype=np.int16))
        as_npz = post(server, buffer.getvalue(), "application/x-npz")
        assert as_npz.headers["content-type"] == "application/x-npz"
        with np.load(io.BytesIO(as_npz.content)) as answer:
            np.testing.assert_array_equal(answer["x"], np.array([1, 2, 3], dtype=np.int16))

        array = np.array([[1.5, 2.5]], dtype=np.float32)
        packed = msgspec.msgpack.encode(
            {b"x": {b"nd": True, b"type": array.dtype.str, b"shape": [1, 2], b"data": array.tobytes()}}
        )
        as_msgpack = post(server, packed, "application/msgpack")
        assert as_msgpack.status_code == 200, as_msgpack.text
        decoded = msgspec.msgpack.decode(as_msgpack.content)["x"]
        got = np.frombuffer(decoded[b"data"], dtype=decoded[b"type"]).reshape(decoded[b"shape"])
        np.testing.assert_array_equal(got, array + 1)

        refused = post(server, pickle.dumps({"x": np.ones(2)}), "application/python-pickle")
        assert refused.status_code == 415 and "--allow-pickle" in refused.json()["message"]
        assert post(server, b"[1, 2]", "application/json").status_code == 400


def test_allow_pickle_is_explicit_and_logged(tmp_path: Path):
    (tmp_path / "wrapper.py").write_text(INCREMENT)
    with running_server(
        tmp_path, ["--wrapper", str(tmp_path / "wrapper.py"), "--model-dir", str(tmp_path), "--allow-pickle"]
    ) as server:
        answered = post(server, pickle.dumps({"x": np.ones(2)}), "application/python-pickle")
        assert answered.status_code == 200
        assert pickle.loads(answered.content)["x"].tolist() == [2.0, 2.0]
    assert "--allow-pickle: pickled request bodies will be unpickled" in server.log()


def test_without_a_wrapper_the_newest_checkpoint_is_served_or_the_identity(tmp_path: Path):
    empty, first, second = tmp_path / "empty", tmp_path / "a", tmp_path / "b"
    for folder in (empty, first, second):
        folder.mkdir()
    with running_server(first, ["--model-dir", str(empty)]) as server:
        assert server.predict("model", {"x": [1, 2]}).json() == {"x": [1, 2]}
    assert "serving the identity model" in server.log()

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model")
    linear_model(folder / "old.onnx")
    shutil.copy(folder / "old.onnx", folder / "new.onnx")
    with running_server(second, ["--model-dir", str(folder)]) as server:
        rows = np.ones((2, 16), dtype=np.float32)
        answer = server.predict("model", {"x": rows.tolist()}).json()
        np.testing.assert_allclose(answer["y"], rows @ WEIGHTS + BIAS, rtol=1e-5)
    assert "newest checkpoint" in server.log() and "new.onnx" in server.log()


def test_a_wrapper_returning_a_model_pipe_with_a_batched_stage(tmp_path: Path):
    (tmp_path / "wrapper.py").write_text(PIPE)
    with running_server(tmp_path, ["--wrapper", str(tmp_path / "wrapper.py"), "--model-dir", str(tmp_path)]) as server:
        answer = server.predict("model", {"x": [[1.0, 2.0]]})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"y": [2.0, 4.0]}


def test_killafter_ends_an_idle_server_cleanly(tmp_path: Path):
    (tmp_path / "wrapper.py").write_text(INCREMENT)
    server = serve(
        tmp_path, "--wrapper", str(tmp_path / "wrapper.py"), "--model-dir", str(tmp_path), "--killafter", "3"
    )
    started = time.monotonic()
    assert server.predict("model", {"x": [1]}).json() == {"x": [2]}
    assert server.proc is not None
    wait_for(lambda: server.proc.poll() is not None, timeout_s=60, what="the server to stop by itself")
    assert server.proc.returncode == 0
    assert time.monotonic() - started >= 3
    assert "no request for 3 s (--killafter): stopping" in server.log()
    server.stop()


def test_host_and_port_set_the_inference_address(tmp_path: Path):
    (tmp_path / "wrapper.py").write_text(INCREMENT)
    probe = DmsServer(tmp_path, [])
    port = int(probe.inference_url.rsplit(":", 1)[1])
    args = [a for a in probe.args if a not in ("--inference-address", f"127.0.0.1:{port}")]
    server = DmsServer(tmp_path, [])
    server.args = [
        *args,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--wrapper",
        str(tmp_path / "wrapper.py"),
        "--model-dir",
        str(tmp_path),
        "--no-snapshot",
    ]
    server.inference_url = f"http://127.0.0.1:{port}"
    server.start()
    try:
        assert server.predict("model", {"x": [0]}).json() == {"x": [1]}
    finally:
        server.stop()
