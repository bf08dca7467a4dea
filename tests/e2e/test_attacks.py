"""Hostile archives sent through the management API: refused with 400, nothing written outside the cache.

The ShellTorch chain's other links (remote URLs, redirects, keys, pickle bodies) are in
test_model_sources, test_token_auth and test_request_limits.
"""

from __future__ import annotations

import io
import json
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.support import running_server

MANIFEST = json.dumps(
    {
        "runtime": "python",
        "model": {"modelName": "evil", "modelVersion": "1.0", "handler": "h.py"},
        "archiverVersion": "0.12.0",
    }
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("attacks")
    store = work / "store"
    store.mkdir()
    with running_server(work, ["--model-store", str(store), "--no-default-model"]) as server:
        yield server, store, work


def zip_archive(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("MAR-INF/MANIFEST.json", MANIFEST)
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def tar_with_link(path: Path, kind: bytes) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        data = MANIFEST.encode()
        info = tarfile.TarInfo("MAR-INF/MANIFEST.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("h.py")
        link.type = kind
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    return path


def files_outside(root: Path, allowed: set[Path]) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and not any(p.is_relative_to(a) for a in allowed)}


@pytest.mark.parametrize(
    ("name", "build", "message"),
    [
        ("zip_slip.mar", lambda p: zip_archive(p, {"../../escaped.py": b"x = 1"}), "climbs out"),
        ("absolute.mar", lambda p: zip_archive(p, {"/tmp/dms-absolute-escape.py": b"x"}), "absolute path"),
        ("zip_link.mar", lambda p: zip_archive(p, {}, {"h.py": "/etc/passwd"}), "link or special file"),
        ("tar_link.tar.gz", lambda p: tar_with_link(p, tarfile.SYMTYPE), "link or special file"),
        ("tar_hardlink.tar.gz", lambda p: tar_with_link(p, tarfile.LNKTYPE), "link or special file"),
        ("tar_device.tar.gz", lambda p: tar_with_link(p, tarfile.CHRTYPE), "link or special file"),
        ("bomb.mar", lambda p: zip_archive(p, {"zeros.bin": bytes(64 * 1024 * 1024)}), "zip bomb"),
        ("yaml.mar", lambda p: zip_archive_with_config(p), "not valid YAML"),
    ],
)
def test_hostile_archive_is_refused_and_writes_nothing_outside(setup, name: str, build, message: str):
    server, store, work = setup
    build(store / name)
    before = files_outside(work, {store, server.state_dir / "cache"})
    response = server.manage("POST", "/models", params={"url": name})
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "ArchiveError"
    assert message in response.json()["message"]
    assert files_outside(work, {store, server.state_dir / "cache"}) == before
    assert not Path("/tmp/dms-absolute-escape.py").exists()
    assert not (work / "pwned").exists()
    assert server.manage("GET", "/models").json()["models"] == []


def zip_archive_with_config(path: Path) -> Path:
    manifest = json.loads(MANIFEST)
    manifest["model"]["configFile"] = "c.yaml"
    marker = path.parent.parent / "pwned"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        zf.writestr("c.yaml", f"!!python/object/apply:os.system ['touch {marker}']\n")
    return path


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", ".hidden", "x" * 200])
def test_path_like_model_names_are_refused_before_touching_a_path(setup, name: str):
    server, _, _ = setup
    response = server.manage("POST", "/models", params={"url": "whatever.mar", "model_name": name})
    assert response.status_code == 400
    assert response.json()["type"] == "InputError"


@pytest.mark.parametrize("url", ["../../etc/passwd", "/etc/passwd", "file:///etc/passwd", "ftp://x/y.mar"])
def test_paths_outside_the_store_are_refused(setup, url: str):
    server, _, _ = setup
    response = server.manage("POST", "/models", params={"url": url})
    assert response.status_code == 403, response.text


@pytest.mark.parametrize(
    ("url", "message"),
    [("a\x00b.mar", "control character"), ("x" * 5000 + ".mar", "at most 4096"), ("a\nb.mar", "control character")],
    ids=["nul", "long", "newline"],
)
def test_unusable_register_urls_get_400(setup, url: str, message: str):
    server, _, _ = setup
    response = server.manage("POST", "/models", params={"url": url})
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
