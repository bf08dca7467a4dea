"""The first hour of a new operator, tried as they would: a busy port, a server that will not start under
``dms start``, models named on a server with a snapshot, ``dms token`` with no server, and curl's form label
on a body that is not a form. Each gets a plain answer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from dms.server import default_model_archive
from tests.conftest import make_probe_archive
from tests.support import DmsServer, free_ports, running_server

DIGIT = Path(default_model_archive()).parent / "samples" / "digit_3.png"


def dms(*args: str, cwd: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dms", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "DMS_ARCHIVE_CACHE_DIR": str(cwd / "cache")},
    )


def address_flags() -> tuple[list[str], str]:
    inference, management, metrics, grpc_port = free_ports(4)
    flags = [
        *("--inference-address", f"127.0.0.1:{inference}"),
        *("--management-address", f"127.0.0.1:{management}"),
        *("--metrics-address", f"127.0.0.1:{metrics}"),
        *("--grpc-address", f"127.0.0.1:{grpc_port}"),
    ]
    return flags, f"127.0.0.1:{inference}"


def test_a_busy_port_is_one_line_that_says_what_to_do(tmp_path: Path):
    flags, inference = address_flags()
    host, port = inference.split(":")
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((host, int(port)))
        taken.listen()
        served = dms("serve", *flags, "--state-dir", str(tmp_path / "a"), "--no-snapshot", cwd=tmp_path)
        started = dms("start", *flags, "--state-dir", str(tmp_path / "b"), "--no-snapshot", cwd=tmp_path)
    expected = f"error: {inference} is in use (another DMS? dms stop, or --inference-address)"
    assert served.returncode == 1
    assert served.stderr.strip().splitlines()[-1] == expected, served.stderr
    assert "Traceback" not in served.stderr and len(served.stderr.splitlines()) <= 3
    assert started.returncode != 0
    assert expected in started.stderr, started.stderr  # dms start says why too, not only where the log is


def test_models_named_at_start_are_served_without_the_last_runs(tmp_path: Path):
    store = tmp_path / "store"
    make_probe_archive(store, "probe", config="initial_workers: 1\n")
    base = ["--model-store", str(store)]
    with running_server(tmp_path, [*base, "--models", "probe=probe-1.0.mar"]) as first:
        assert (
            first.manage("POST", "/models", params={"url": "probe-1.0.mar", "model_name": "extra"}).status_code == 200
        )
    with running_server(tmp_path, [*base, "--models", "probe=probe-1.0.mar"]) as named:
        assert [m["modelName"] for m in named.manage("GET", "/models").json()["models"]] == ["probe"]
        assert any("not restoring" in line for line in named.log_lines)
    with running_server(tmp_path, base) as plain:  # nothing named: the last run's models come back
        assert [m["modelName"] for m in plain.manage("GET", "/models").json()["models"]] == ["probe"]
        assert any("restored 1 model versions" in line for line in plain.log_lines)


def test_dms_token_with_no_server_says_the_key_may_be_stale(tmp_path: Path):
    server = DmsServer(tmp_path, ["--no-snapshot"]).start()
    state = server.state_dir
    live = dms("token", "--state-dir", str(state), cwd=tmp_path)
    assert live.returncode == 0 and live.stdout.strip() == server.key() and not live.stderr
    server.stop()
    stale = dms("token", "--state-dir", str(state), cwd=tmp_path)
    assert "may be stale" in stale.stderr


def test_a_body_curl_labels_as_a_form_reaches_the_handler_as_it_came(tmp_path: Path):
    with running_server(tmp_path, ["--no-snapshot"]) as server:  # the bundled digits model
        answer = server.http.post(
            f"{server.inference_url}/predictions/digits",
            content=DIGIT.read_bytes(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},  # curl --data-binary @digit_3.png
        )
    assert answer.status_code == 200, answer.text
    assert max(answer.json(), key=answer.json().get) == "3"


def test_a_snapshot_still_finds_its_archives_after_the_store_and_the_install_move(tmp_path: Path):
    store = tmp_path / "store"
    make_probe_archive(store, "probe", config="initial_workers: 1\n")
    with running_server(tmp_path, ["--model-store", str(store), "--models", "probe=probe-1.0.mar"]) as first:
        snapshot_file = first.state_dir / "snapshot.json"
    snapshot = json.loads(snapshot_file.read_text())
    assert snapshot["models"][0]["relative"] == "store:probe-1.0.mar"
    snapshot["models"].append(  # the bundled model, recorded by an installation that has moved since
        {
            "name": "digits",
            "version": "1.0",
            "url": "digits.mar",
            "archive": "/nowhere/site-packages/dms/default_model/digits.mar",
            "workers": 1,
            "is_default": True,
            "relative": "package:default_model/digits.mar",
        }
    )
    snapshot_file.write_text(json.dumps(snapshot))
    moved = tmp_path / "moved-store"
    store.rename(moved)
    with running_server(tmp_path, ["--model-store", str(moved)]) as second:
        names = sorted(m["modelName"] for m in second.manage("GET", "/models").json()["models"])
        assert names == ["digits", "probe"], second.log()
        assert second.predict("probe", {"echo": 1}).json()["echo"] == 1
