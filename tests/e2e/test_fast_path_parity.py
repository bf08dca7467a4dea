"""/predictions answers the same with the lean ASGI path (default) and through the Starlette route."""

from __future__ import annotations

from pathlib import Path

import pytest

from dms.server import default_model_archive
from tests.support import running_server

SAMPLE = (default_model_archive().parent / "samples" / "digit_7.png").read_bytes()


@pytest.mark.parametrize("fast", ["true", "false"])
def test_same_answers_either_way(tmp_path: Path, fast: str):
    env = {"DMS_PREDICTIONS_FAST_PATH": fast, "DMS_MAX_REQUEST_SIZE_BYTES": "5000"}
    with running_server(tmp_path, ["--default-workers-per-model", "1"], env=env) as server:
        ok = server.predict("digits", SAMPLE, headers={"X-Request-ID": "parity-1"})
        assert ok.status_code == 200 and next(iter(ok.json())) == "7"
        assert ok.headers["x-request-id"] == "parity-1" and ok.headers["content-type"] == "application/json"
        versioned = server.predict("digits/1.0", SAMPLE, params={"topk": "1"})
        assert versioned.status_code == 200
        missing = server.predict("nope", SAMPLE)
        assert missing.status_code == 404 and missing.json()["type"] == "ModelNotFoundError"
        assert missing.headers["x-request-id"]
        garbage = server.predict("digits", b"garbage")
        assert garbage.status_code == 400 and garbage.json()["type"] == "InputError"
        too_big = server.predict("digits", b"x" * 6000)
        assert too_big.status_code == 413 and "5000" in too_big.json()["message"]
        assert server.http.get(f"{server.inference_url}/predictions/digits").status_code == 405
