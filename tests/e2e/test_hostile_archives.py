"""Hostile archives and archive hosts through the management API, against a real server: decompression bombs of
every format are stopped a few megabytes in (holes 8 and 9 of the hostile-clients issue), a host that drips its
bytes cannot stretch a download past ``download_timeout_s``, and an unregistered model's extraction leaves the
cache. Memory, workers and a bystander's requests are checked around each attack (``tests/e2e/hostile.py``).
"""

from __future__ import annotations

import io
import json
import tarfile
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.conftest import make_probe_archive
from tests.e2e.hostile import watched
from tests.e2e.test_tensor_handler import write_linear_archive
from tests.support import DmsServer, http_host, running_server

MANIFEST = json.dumps(
    {"runtime": "python", "model": {"modelName": "bomb", "modelVersion": "1.0", "handler": "h.py"}}
).encode()
LINEAR_ROW = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}
DOWNLOAD_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def dripping_host() -> Iterator[str]:
    """A loopback HTTP server whose /drip.mar promises 100 KB and sends a byte every half second."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(120):  # a minute at most
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.5)
            except OSError:
                pass  # the server gave up on it

        def log_message(self, *args: object) -> None:
            pass

    with http_host(Handler) as url:
        yield url


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, dripping_host: str):
    work = tmp_path_factory.mktemp("hostile-archives")
    store = work / "store"
    write_linear_archive(work, store, "initial_workers: 1\n")
    allowed = dripping_host.replace(".", r"\.") + r"/.*"
    args = ["--model-store", str(store), "--models", "linear=linear.mar", "--no-snapshot", "--allowed-urls", allowed]
    with running_server(work, args, env={"DMS_DOWNLOAD_TIMEOUT_S": str(DOWNLOAD_TIMEOUT_S)}) as server:
        yield server, store


def bystander(server: DmsServer):
    url = f"{server.inference_url}/v2/models/linear/infer"
    return lambda client: client.post(url, json=LINEAR_ROW)


def zeros(size: int) -> Iterator[bytes]:
    chunk = bytes(1 << 20)
    while size > 0:
        yield chunk[: min(size, len(chunk))]
        size -= len(chunk)


def tar_bomb(path: Path, mode: str, size: int) -> Path:
    """A tar archive (``mode`` "w:bz2", "w:gz", ...) holding a manifest and ``size`` zero bytes."""

    class Zeros(io.RawIOBase):
        def __init__(self) -> None:
            self.parts = zeros(size)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
            part = next(self.parts, b"")
            buffer[: len(part)] = part
            return len(part)

    with tarfile.open(path, mode) as tar:
        info = tarfile.TarInfo("MAR-INF/MANIFEST.json")
        info.size = len(MANIFEST)
        tar.addfile(info, io.BytesIO(MANIFEST))
        info = tarfile.TarInfo("zeros.bin")
        info.size = size
        tar.addfile(info, io.BufferedReader(Zeros(), 1 << 20))
    return path


def zip_of_small_members(path: Path, members: int, member_size: int) -> Path:
    """A zip of many members each under the per-member declared-size check (4 MiB), each ~1000:1."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("MAR-INF/MANIFEST.json", MANIFEST)
        for index in range(members):
            archive.writestr(f"part{index}.bin", bytes(member_size))
    return path


BOMBS = [
    ("bomb.tar.bz2", lambda p: tar_bomb(p, "w:bz2", 256 << 20)),
    ("bomb.tar.gz", lambda p: tar_bomb(p, "w:gz", 256 << 20)),
    ("bomb.tar.xz", lambda p: tar_bomb(p, "w:xz", 64 << 20)),
    ("bomb.mar", lambda p: zip_of_small_members(p, 128, 2 << 20)),
]


@pytest.mark.parametrize(("name", "build"), BOMBS, ids=[name for name, _ in BOMBS])
def test_bombs_of_every_format_stop_a_few_megabytes_in(setup, name: str, build):
    server, store = setup
    bomb = build(store / name)
    assert bomb.stat().st_size < 1 << 20
    cache = server.state_dir / "cache"
    with watched(server, bystander(server)):
        refused = server.manage("POST", "/models", params={"url": name})
    assert refused.status_code == 400, refused.text
    assert refused.json()["type"] == "ArchiveError"
    assert "a decompression bomb?" in refused.json()["message"], refused.json()["message"]
    assert not [p for p in cache.iterdir() if p.name.startswith(".extract-")], "a staging folder was left"


def test_a_download_that_drips_ends_at_download_timeout_s(setup, dripping_host: str):
    server, _ = setup
    with watched(server, bystander(server)):
        started = time.monotonic()
        refused = server.manage("POST", "/models", params={"url": f"{dripping_host}/drip.mar"})
        took = time.monotonic() - started
    assert refused.status_code == 400, refused.text
    assert f"download_timeout_s ({DOWNLOAD_TIMEOUT_S} s)" in refused.json()["message"]
    assert took < DOWNLOAD_TIMEOUT_S + 3, f"the download went on for {took:.1f} s"
    assert not any((server.state_dir / "downloads").rglob("*.mar"))


def test_an_unregistered_models_extraction_leaves_the_cache(setup):
    server, store = setup
    make_probe_archive(store, "probe", config="initial_workers: 1\n")
    cache = server.state_dir / "cache"
    before = {p.name for p in cache.iterdir()}
    assert server.manage("POST", "/models", params={"url": "probe-1.0.mar"}).status_code == 200
    extracted = {p.name for p in cache.iterdir()} - before
    assert len(extracted) == 1
    assert server.manage("DELETE", "/models/probe").status_code == 200
    assert {p.name for p in cache.iterdir()} == before
    assert server.manage("POST", "/models", params={"url": "probe-1.0.mar"}).status_code == 200  # extracted again
    assert server.predict("probe", {"echo": 1}).json()["echo"] == 1
    assert server.manage("DELETE", "/models/probe").status_code == 200
