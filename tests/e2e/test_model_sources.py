"""Where archives may come from: allowed URLs (redirects checked), the model store, ``--models all``."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.conftest import make_probe_archive
from tests.support import http_host, running_server


@pytest.fixture
def archive_host(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server with /probe.mar, a redirect to it, and a redirect elsewhere."""
    archive = make_probe_archive(tmp_path / "hosted", "remote", config="initial_workers: 1\n").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/probe.mar":
                self.send_response(200)
                self.send_header("Content-Length", str(len(archive)))
                self.end_headers()
                self.wfile.write(archive)
            elif self.path.startswith("/redirect"):
                target = "/probe.mar" if self.path == "/redirect-in.mar" else "/private/secret.mar"
                self.send_response(302)
                self.send_header("Location", target)
                self.end_headers()
            else:
                self.send_response(404)
                self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with http_host(Handler) as url:
        yield url


def test_allowed_urls_gate_remote_archives_and_their_redirects(archive_host: str, tmp_path: Path):
    allowed = archive_host.replace(".", r"\.") + r"/(probe|redirect-in|redirect-out)\.mar"
    with running_server(tmp_path, ["--no-default-model", "--allowed-urls", allowed]) as server:
        registered = server.manage("POST", "/models", params={"url": f"{archive_host}/probe.mar"})
        assert registered.status_code == 200, registered.text
        assert server.predict("remote", {"echo": "hi"}).json()["echo"] == "hi"
        server.manage("DELETE", "/models/remote")

        followed = server.manage("POST", "/models", params={"url": f"{archive_host}/redirect-in.mar"})
        assert followed.status_code == 200, followed.text
        server.manage("DELETE", "/models/remote")

        escaped = server.manage("POST", "/models", params={"url": f"{archive_host}/redirect-out.mar"})
        assert escaped.status_code == 403
        assert "private/secret.mar" in escaped.json()["message"]

        other = server.manage("POST", "/models", params={"url": f"{archive_host}/elsewhere.mar"})
        assert other.status_code == 403 and other.json()["type"] == "ForbiddenError"

    closed_port = archive_host.rsplit(":", 1)[0] + ":9"  # discard port: nothing listens there
    (tmp_path / "again").mkdir()
    with running_server(
        tmp_path / "again", ["--no-default-model", "--allowed-urls", r"http://127\.0\.0\.1:9/.*"]
    ) as server:
        unreachable = server.manage("POST", "/models", params={"url": f"{closed_port}/x.mar"})
        assert unreachable.status_code == 400 and "ConnectError" in unreachable.json()["message"]


def test_downloads_are_capped_in_size(archive_host: str, tmp_path: Path):
    allowed = archive_host.replace(".", r"\.") + r"/probe\.mar"
    with running_server(
        tmp_path, ["--no-default-model", "--allowed-urls", allowed], env={"DMS_MAX_DOWNLOAD_BYTES": "1000"}
    ) as server:
        refused = server.manage("POST", "/models", params={"url": f"{archive_host}/probe.mar"})
        assert refused.status_code == 400
        assert "max_download_bytes (1000 bytes)" in refused.json()["message"]
        assert not any((server.state_dir / "downloads").rglob("*.mar"))


def test_no_remote_url_is_allowed_by_default(archive_host: str, tmp_path: Path):
    with running_server(tmp_path, ["--no-default-model"]) as server:
        refused = server.manage("POST", "/models", params={"url": f"{archive_host}/probe.mar"})
        assert refused.status_code == 403
        assert "allowed_urls" in refused.json()["message"]


def test_models_all_serves_every_archive_in_the_store(tmp_path: Path):
    store = tmp_path / "store"
    for name in ("alpha", "beta"):
        make_probe_archive(store, name, config="initial_workers: 1\n")
    with running_server(tmp_path, ["--model-store", str(store), "--models", "all"]) as server:
        names = [m["modelName"] for m in server.manage("GET", "/models").json()["models"]]
        assert names == ["alpha", "beta"]
        assert server.predict("beta", {"echo": 2}).json()["model"] == "beta"
