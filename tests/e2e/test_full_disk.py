"""A server whose state folder's disk is full (a 1 MiB tmpfs in a mount namespace of its own, filled by the
test): each management change is made and recorded, or undone and answered 507 naming the file; keys are
never lost, and no temporary file is left behind. Once there is room again, the same changes succeed.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_probe_archive
from tests.e2e.hostile import watched
from tests.e2e.test_tensor_handler import write_linear_archive
from tests.support import DmsServer, wait_for

LINEAR_ROW = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}


def can_mount_tmpfs(work: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    target = work / "probe-mount"
    target.mkdir()
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(target))}"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("full-disk")
    if not can_mount_tmpfs(work):
        pytest.skip("needs `unshare -m` and a tmpfs mount (root, or a user namespace): not allowed here")
    store = work / "store"
    write_linear_archive(work, store, "initial_workers: 1\n")
    make_probe_archive(store, "probe", config="initial_workers: 1\n")
    running = DmsServer(work, ["--model-store", str(store), "--models", "linear=linear.mar"])
    running.env["DMS_ARCHIVE_CACHE_DIR"] = str(work / "cache")
    running.state_dir.mkdir(parents=True)
    serve = " ".join(shlex.quote(part) for part in [sys.executable, "-m", "dms", "serve"])
    mount = f"mount -t tmpfs -o size=1m tmpfs {shlex.quote(str(running.state_dir))}"
    running.command = ["unshare", "-m", "sh", "-c", f'{mount} && exec {serve} "$@"', "dms"]
    running.start()
    running.key_file = state_view(running) / "key_file.json"  # in the server's own mount namespace
    try:
        yield running
    finally:
        running.stop()


def state_view(server: DmsServer) -> Path:
    """The state folder as the server sees it (its mount namespace, through /proc)."""
    assert server.proc is not None
    return Path(f"/proc/{server.proc.pid}/root") / str(server.state_dir).lstrip("/")


@contextlib.contextmanager
def full_disk(server: DmsServer):
    filler = state_view(server) / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(bytes(64 * 1024))
            out.flush()
    try:
        yield
    finally:
        filler.unlink()


def stray_files(server: DmsServer) -> list[str]:
    return sorted(p.name for p in state_view(server).iterdir() if p.name.startswith("."))


def models(server: DmsServer) -> list[str]:
    return [m["modelName"] for m in server.manage("GET", "/models").json()["models"]]


def test_a_change_that_cannot_be_recorded_is_undone_and_answered_507(server: DmsServer):
    linear_workers = server.worker_pids("linear")
    old_key = server.key()
    url = f"{server.inference_url}/v2/models/linear/infer"
    with full_disk(server):
        with watched(server, lambda client: client.post(url, json=LINEAR_ROW)):
            refused_changes(server, linear_workers, old_key)
        # Scaling back may keep the new worker rather than the old one: outside the watch on workers.
        scaled = server.manage("PUT", "/models/linear", params={"min_worker": "2", "synchronous": "true"})
        assert scaled.status_code == 507, scaled.text
        wait_for(lambda: len(server.worker_pids("linear")) == 1, what="back to one worker")
        assert server.describe("linear")[0]["minWorkers"] == 1
        assert stray_files(server) == [], "temporary files were left behind"

    assert server.manage("POST", "/models", params={"url": "probe-1.0.mar"}).status_code == 200
    assert models(server) == ["linear", "probe"]
    assert server.manage("DELETE", "/models/probe").status_code == 200
    assert server.manage("POST", "/token", params={"type": "management"}).status_code == 200
    assert server.key() != old_key


def refused_changes(server: DmsServer, linear_workers: set[int], old_key: str) -> None:
    """Register, unregister and key rotation on a full disk: each 507, and nothing changed."""
    registered = server.manage("POST", "/models", params={"url": "probe-1.0.mar"})
    assert registered.status_code == 507, registered.text
    assert registered.json()["type"] == "InsufficientStorageError"
    assert "snapshot.json" in registered.json()["message"] and "the change was not made" in registered.json()["message"]
    assert models(server) == ["linear"]

    removed = server.manage("DELETE", "/models/linear")
    assert removed.status_code == 507, removed.text
    assert models(server) == ["linear"] and server.worker_pids("linear") == linear_workers
    answer = server.http.post(f"{server.inference_url}/v2/models/linear/infer", json=LINEAR_ROW)
    assert answer.status_code == 200, answer.text

    rotated = server.manage("POST", "/token", params={"type": "management"})
    assert rotated.status_code == 507, rotated.text
    assert "key_file.json" in rotated.json()["message"]
    assert json.loads(server.key_file.read_text())["management"]["key"] == old_key
    assert server.manage("GET", "/models").status_code == 200  # the old key still opens the API
    assert stray_files(server) == [], "temporary files were left behind"
