"""The management API against real worker processes: register, scale, versions, unregister."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tests.conftest import make_probe_archive
from tests.support import DmsServer, running_server, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("management")
    store = work / "model_store"
    store.mkdir()
    make_probe_archive(store, "probe", "1.0")
    make_probe_archive(store, "probe", "2.0")
    for index in range(3):
        make_probe_archive(store, f"page{index}")
    with running_server(work, ["--model-store", str(store), "--no-default-model"]) as running:
        yield running


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE}


def test_register_scale_version_default_and_unregister(server: DmsServer):
    registered = server.manage("POST", "/models", params={"url": "probe-1.0.mar", "initial_workers": 1})
    assert registered.status_code == 200, registered.text
    assert registered.json()["status"] == 'Model "probe" Version: 1.0 registered with 1 initial workers'
    first_pids = server.worker_pids("probe")
    assert len(alive(first_pids)) == 1
    assert server.predict("probe", {"echo": 1}).json()["version"] == "1.0"

    scaled = server.manage("PUT", "/models/probe", params={"min_worker": 3, "synchronous": "true"})
    assert scaled.status_code == 200, scaled.text
    grown = server.worker_pids("probe")
    assert len(alive(grown)) == 3 and first_pids <= grown

    shrunk = server.manage("PUT", "/models/probe", params={"min_worker": 1, "synchronous": "true"})
    assert shrunk.status_code == 200
    wait_for(lambda: len(server.describe("probe")[0]["workers"]) == 1, what="scale down")
    remaining = server.worker_pids("probe")
    wait_for(lambda: alive(grown - remaining) == set(), what="retired workers to exit")

    second = server.manage("POST", "/models", params={"url": "probe-2.0.mar", "initial_workers": 1})
    assert second.status_code == 200, second.text
    versions = server.describe("probe", "all")
    assert {(v["modelVersion"], v["isDefault"]) for v in versions} == {("1.0", True), ("2.0", False)}
    assert server.predict("probe", {"echo": 1}).json()["version"] == "1.0"
    assert server.predict("probe/2.0", {"echo": 1}).json()["version"] == "2.0"

    made_default = server.manage("PUT", "/models/probe/2.0/set-default")
    assert made_default.status_code == 200, made_default.text
    assert server.predict("probe", {"echo": 1}).json()["version"] == "2.0"

    v1_pids = server.worker_pids("probe", "1.0")
    removed = server.manage("DELETE", "/models/probe/1.0")
    assert removed.status_code == 200, removed.text
    wait_for(lambda: alive(v1_pids) == set(), what="version 1.0 workers to exit")
    assert server.predict("probe/1.0", {"echo": 1}).status_code == 404
    assert server.predict("probe", {"echo": 1}).json()["version"] == "2.0"

    v2_pids = server.worker_pids("probe")
    assert server.manage("DELETE", "/models/probe").status_code == 200
    wait_for(lambda: alive(v2_pids) == set(), what="version 2.0 workers to exit")
    assert server.manage("GET", "/models/probe").status_code == 404


def test_registering_twice_is_a_conflict(server: DmsServer):
    assert server.manage("POST", "/models", params={"url": "page0-1.0.mar", "initial_workers": 0}).status_code == 200
    again = server.manage("POST", "/models", params={"url": "page0-1.0.mar", "initial_workers": 0})
    assert again.status_code == 409
    assert again.json()["type"] == "ModelAlreadyExistsError"
    assert server.manage("DELETE", "/models/page0").status_code == 200


def test_list_models_pages(server: DmsServer):
    for index in range(3):
        response = server.manage("POST", "/models", params={"url": f"page{index}-1.0.mar", "initial_workers": 0})
        assert response.status_code == 200, response.text
    first = server.manage("GET", "/models", params={"limit": 2}).json()
    assert [m["modelName"] for m in first["models"]] == ["page0", "page1"]
    second = server.manage("GET", "/models", params={"limit": 2, "next_page_token": first["nextPageToken"]}).json()
    assert [m["modelName"] for m in second["models"]] == ["page2"]
    assert "nextPageToken" not in second
    for index in range(3):
        server.manage("DELETE", f"/models/page{index}")


def test_asynchronous_registration_answers_202_and_workers_follow(server: DmsServer):
    response = server.manage(
        "POST", "/models", params={"url": "page1-1.0.mar", "initial_workers": 1, "synchronous": "false"}
    )
    assert response.status_code == 202
    wait_for(lambda: server.describe("page1")[0]["status"] == "READY", what="async workers")
    assert server.predict("page1", {"echo": 1}).status_code == 200
    server.manage("DELETE", "/models/page1")


@pytest.mark.parametrize(
    ("params", "status", "error_type"),
    [
        ({}, 400, "InputError"),
        ({"url": "missing.mar"}, 404, "ModelNotFoundError"),
        ({"url": "https://example.com/x.mar"}, 403, "ForbiddenError"),
        ({"url": "/etc/passwd"}, 403, "ForbiddenError"),
        ({"url": "page0-1.0.mar", "model_name": "../evil"}, 400, "InputError"),
        ({"url": "page0-1.0.mar", "batch_size": "many"}, 400, "InputError"),
    ],
)
def test_bad_registrations_are_refused_clearly(server: DmsServer, params: dict[str, str], status: int, error_type: str):
    response = server.manage("POST", "/models", params=params)
    assert response.status_code == status, response.text
    assert response.json()["type"] == error_type
    assert response.json()["code"] == status


def test_unknown_model_and_version_are_404(server: DmsServer):
    assert server.manage("GET", "/models/nothing").status_code == 404
    assert server.manage("PUT", "/models/nothing", params={"min_worker": 1}).status_code == 404
    assert server.manage("DELETE", "/models/nothing/9.9").status_code == 404
    assert server.manage("GET", "/no/such/path").json()["code"] == 404


def test_a_model_that_cannot_load_fails_visibly(server: DmsServer, tmp_path: Path):
    from dms.archive.writer import ArchiveSpec, write_archive
    from tests.support import FIXTURES

    store = Path(server.args[server.args.index("--model-store") + 1])
    write_archive(
        ArchiveSpec(model_name="broken", version="1.0", handler=str(FIXTURES / "failing_handler.py")), store, force=True
    )
    response = server.manage("POST", "/models", params={"url": "broken.mar", "initial_workers": 1})
    assert response.status_code == 503
    assert "broken on purpose" in response.json()["message"]
    assert server.manage("GET", "/models/broken").status_code == 404
    assert server.predict("probe", {}).status_code == 404  # nothing else changed
