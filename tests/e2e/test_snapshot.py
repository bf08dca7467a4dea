"""Restart with the same models: snapshots written on every change, restored at the next start."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import make_probe_archive
from tests.support import DmsServer, running_server


def state(server: DmsServer) -> dict[tuple[str, str], tuple[int, bool]]:
    """(name, version) -> (workers, is default), from the management API."""
    result = {}
    for entry in server.manage("GET", "/models").json()["models"]:
        for version in server.describe(entry["modelName"], "all"):
            result[(version["modelName"], version["modelVersion"])] = (len(version["workers"]), version["isDefault"])
    return result


def test_models_versions_defaults_and_workers_survive_a_restart(tmp_path: Path):
    store = tmp_path / "store"
    make_probe_archive(store, "probe", "1.0", config="initial_workers: 1\n")
    make_probe_archive(store, "probe", "2.0", config="initial_workers: 1\n")
    args = ["--model-store", str(store), "--no-default-model"]
    with running_server(tmp_path, args) as first:
        assert first.manage("POST", "/models", params={"url": "probe-1.0.mar"}).status_code == 200
        assert first.manage("POST", "/models", params={"url": "probe-2.0.mar", "batch_size": 3}).status_code == 200
        assert first.manage("PUT", "/models/probe/2.0/set-default").status_code == 200
        scaled = first.manage("PUT", "/models/probe/1.0", params={"min_worker": 2, "synchronous": "true"})
        assert scaled.status_code == 200
        before = state(first)
        snapshot = json.loads((first.state_dir / "snapshot.json").read_text())
    assert before == {("probe", "1.0"): (2, False), ("probe", "2.0"): (1, True)}
    assert {(m["name"], m["version"], m["workers"]) for m in snapshot["models"]} == {
        ("probe", "1.0", 2),
        ("probe", "2.0", 1),
    }

    with running_server(tmp_path, args) as second:
        assert state(second) == before
        assert second.describe("probe", "2.0")[0]["batchSize"] == 3
        assert second.predict("probe", {"echo": 1}).json()["version"] == "2.0"
        assert second.manage("DELETE", "/models/probe/1.0").status_code == 200

    with running_server(tmp_path, args) as third:
        assert state(third) == {("probe", "2.0"): (1, True)}

    with running_server(tmp_path, [*args[:2], "--no-snapshot"]) as clean:
        assert [m["modelName"] for m in clean.manage("GET", "/models").json()["models"]] == ["digits"]
