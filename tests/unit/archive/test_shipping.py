"""Model files packed for machines without the server's filesystem, unpacked once per machine."""

from __future__ import annotations

import io
import tarfile
import threading
from pathlib import Path

import pytest

from dms.archive.shipping import pack_model_dir, unpacked
from dms.errors import ArchiveError


def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "MAR-INF").mkdir(parents=True)
    (folder / "MAR-INF" / "MANIFEST.json").write_text("{}")
    (folder / "model.onnx").write_bytes(b"\x00weights" * 1000)
    (folder / ".dms-extracted").touch()
    (folder / "elsewhere").symlink_to("/etc/passwd")
    return folder


def test_a_pack_unpacks_to_the_same_files_and_leaves_links_and_markers_behind(tmp_path: Path):
    pack = pack_model_dir(model_dir(tmp_path))
    target = unpacked(pack.digest, lambda: pack.data, 10**7, tmp_path / "node")
    assert target.name == pack.digest
    assert (target / "model.onnx").read_bytes() == b"\x00weights" * 1000
    assert (target / "MAR-INF" / "MANIFEST.json").read_text() == "{}"
    assert not (target / "elsewhere").exists() and not (target / ".dms-extracted").exists()
    assert pack_model_dir(model_dir(tmp_path / "again")).digest == pack.digest  # named by content alone


def test_only_the_named_files_travel_for_a_bare_model(tmp_path: Path):
    pack = pack_model_dir(model_dir(tmp_path), only=["model.onnx"])
    target = unpacked(pack.digest, lambda: pack.data, 10**7, tmp_path / "node")
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith(".")) == ["model.onnx"]


def test_each_machine_fetches_a_pack_once_however_many_workers_ask_at_once(tmp_path: Path):
    pack = pack_model_dir(model_dir(tmp_path))
    fetched: list[int] = []

    def fetch() -> bytes:
        fetched.append(1)
        return pack.data

    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(unpacked(pack.digest, fetch, 10**7, tmp_path / "node")))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fetched) == 1 and len(set(results)) == 1 and len(results) == 8


def test_an_altered_pack_or_a_bad_name_is_refused(tmp_path: Path):
    pack = pack_model_dir(model_dir(tmp_path))
    with pytest.raises(ArchiveError, match="arrived altered"):
        unpacked(pack.digest, lambda: pack.data + b"x", 10**7, tmp_path / "node")
    with pytest.raises(ArchiveError, match="SHA-256"):
        unpacked("../../etc", lambda: pack.data, 10**7, tmp_path / "node")
    assert not (tmp_path / "node" / pack.digest).exists()


def test_a_pack_holding_a_link_or_too_many_bytes_is_refused(tmp_path: Path):
    import hashlib

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    data = buffer.getvalue()
    with pytest.raises(ArchiveError, match="link"):
        unpacked(hashlib.sha256(data).hexdigest(), lambda: data, 10**7, tmp_path / "node")
    pack = pack_model_dir(model_dir(tmp_path))
    with pytest.raises(ArchiveError, match="more than"):
        unpacked(pack.digest, lambda: pack.data, 100, tmp_path / "node")
