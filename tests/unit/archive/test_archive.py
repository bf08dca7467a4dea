"""Archive writing, manifest reading for all three archivers, and safe extraction."""

from __future__ import annotations

import io
import json
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from dms.archive.manifest import parse_manifest
from dms.archive.reader import open_archive
from dms.archive.writer import ArchiveSpec, write_archive
from dms.errors import ArchiveError, InputError

MANIFEST = json.dumps(
    {
        "runtime": "python",
        "model": {"modelName": "m", "modelVersion": "1.0", "handler": "h.py"},
        "archiverVersion": "0.12.0",
    }
)


def make_zip(path: Path, members: dict[str, bytes], links: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_written_archive_has_torchserve_manifest_and_files(tmp_path: Path, cache: Path):
    weights = tmp_path / "weights.onnx"
    weights.write_bytes(b"w")
    handler = tmp_path / "my_handler.py"
    handler.write_text("def handle(data, context):\n    return data\n")
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text("a")
    config = tmp_path / "model-config.yaml"
    config.write_text("batchSize: 4\nhandler:\n  topk: 2\n")
    spec = ArchiveSpec(
        model_name="m",
        version="2.1",
        handler=str(handler),
        serialized_file=weights,
        extra_files=[labels],
        config_file=config,
    )
    archive = write_archive(spec, tmp_path / "out")
    assert archive.name == "m.mar"
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("MAR-INF/MANIFEST.json"))
    assert {"weights.onnx", "my_handler.py", "labels/a.txt", "model-config.yaml"} <= names
    assert set(manifest) == {"createdOn", "runtime", "model", "archiverVersion"}
    assert manifest["model"] == {
        "modelName": "m",
        "modelVersion": "2.1",
        "handler": "my_handler.py",
        "serializedFile": "weights.onnx",
        "configFile": "model-config.yaml",
    }
    opened = open_archive(archive, cache, 10**9)
    assert opened.manifest.model_version == "2.1"
    assert opened.config.batch_size == 4 and opened.config.handler == {"topk": 2}
    with pytest.raises(ArchiveError, match="--force"):
        write_archive(spec, tmp_path / "out")
    assert write_archive(spec, tmp_path / "out", force=True) == archive


@pytest.mark.parametrize("name", ["../evil", "a b", "", "-x"])
def test_archive_refuses_bad_model_names(tmp_path: Path, name: str):
    with pytest.raises(InputError):
        write_archive(ArchiveSpec(model_name=name, version="1.0", handler="tensor"), tmp_path)


def test_manifest_origins():
    ts = parse_manifest(json.loads(MANIFEST))
    mms = parse_manifest(
        {"specificationVersion": "1.0", "runtime": "python", "model": {"modelName": "n", "handler": "service:handle"}}
    )
    assert (ts.origin, ts.model_version) == ("torchserve", "1.0")
    assert (mms.origin, mms.model_version, mms.handler) == ("mms", "1.0", "service:handle")
    with pytest.raises(InputError):
        parse_manifest({"model": {"modelName": "../x"}})
    with pytest.raises(ArchiveError):
        parse_manifest({"runtime": "python"})


def test_extraction_happens_once_per_archive_hash(tmp_path: Path, cache: Path):
    archive = make_zip(tmp_path / "a.mar", {"MAR-INF/MANIFEST.json": MANIFEST.encode(), "h.py": b"x"})
    first = open_archive(archive, cache, 10**6)
    marker = first.model_dir / "h.py"
    marker.write_bytes(b"touched")
    second = open_archive(archive, cache, 10**6)
    assert second.model_dir == first.model_dir and marker.read_bytes() == b"touched"


@pytest.mark.parametrize(
    ("members", "links", "message"),
    [
        ({"../escape.txt": b"x"}, (), r"\.\."),
        ({"/abs.txt": b"x"}, (), "absolute"),
        ({"h.py": b"x"}, ("link",), "link"),
    ],
)
def test_zip_extraction_refuses_unsafe_members(tmp_path: Path, cache: Path, members, links, message):
    archive = make_zip(tmp_path / "bad.mar", {"MAR-INF/MANIFEST.json": MANIFEST.encode(), **members}, links)
    with pytest.raises(ArchiveError, match=message):
        open_archive(archive, cache, 10**6)
    assert not (tmp_path / "escape.txt").exists()
    assert list(cache.iterdir()) == []  # the half-extracted staging folder is gone


def test_zip_extraction_refuses_duplicates(tmp_path: Path, cache: Path):
    archive = tmp_path / "dup.mar"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("MAR-INF/MANIFEST.json", MANIFEST)
        zf.writestr("h.py", "a")
        with pytest.warns(UserWarning):
            zf.writestr("h.py", "b")
    with pytest.raises(ArchiveError, match="twice"):
        open_archive(archive, cache, 10**6)


def test_zip_bombs_and_oversized_archives_are_refused(tmp_path: Path, cache: Path):
    bomb = make_zip(
        tmp_path / "bomb.mar", {"MAR-INF/MANIFEST.json": MANIFEST.encode(), "zeros.bin": bytes(50 * 1024 * 1024)}
    )
    with pytest.raises(ArchiveError, match="zip bomb"):
        open_archive(bomb, cache, 10**9)
    big = make_zip(tmp_path / "big.mar", {"MAR-INF/MANIFEST.json": MANIFEST.encode(), "data": b"x" * 5000})
    with pytest.raises(ArchiveError, match="more than 1000 bytes"):
        open_archive(big, cache, 1000)
    assert [p for p in cache.iterdir()] == []  # nothing half-extracted is left behind


def test_tar_links_are_refused(tmp_path: Path, cache: Path):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = MANIFEST.encode()
        info = tarfile.TarInfo("MAR-INF/MANIFEST.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("evil")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ArchiveError, match="link"):
        open_archive(archive, cache, 10**6)


def test_a_file_that_is_no_archive_is_refused(tmp_path: Path, cache: Path):
    junk = tmp_path / "junk.mar"
    junk.write_bytes(b"not an archive")
    with pytest.raises(ArchiveError, match="neither a zip"):
        open_archive(junk, cache, 10**6)
    empty = make_zip(tmp_path / "empty.mar", {"h.py": b""})
    with pytest.raises(ArchiveError, match=r"MANIFEST\.json is missing"):
        open_archive(empty, cache, 10**6)


def test_a_bad_model_config_is_refused_with_its_problem(tmp_path: Path, cache: Path):
    manifest = json.loads(MANIFEST)
    manifest["model"]["configFile"] = "c.yaml"
    archive = make_zip(
        tmp_path / "c.mar", {"MAR-INF/MANIFEST.json": json.dumps(manifest).encode(), "c.yaml": b"batchSize: -3\n"}
    )
    with pytest.raises(ArchiveError, match="batchSize: Input should be greater than or equal to 1"):
        open_archive(archive, cache, 10**6)
    unsafe = make_zip(
        tmp_path / "u.mar",
        {
            "MAR-INF/MANIFEST.json": json.dumps(manifest).encode(),
            "c.yaml": b"!!python/object/apply:os.system ['true']\n",
        },
    )
    with pytest.raises(ArchiveError, match="not valid YAML"):
        open_archive(unsafe, cache, 10**6)


def test_a_bare_model_file_or_folder_is_served_with_the_tensor_handler(tmp_path):
    from dms.archive.reader import open_archive

    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"onnx bytes")
    (folder / "README.md").write_text("not a model")
    for path in (folder, folder / "model.onnx"):
        opened = open_archive(path, tmp_path / "cache", 1 << 20)
        assert opened.model_dir == folder and opened.manifest.origin == "bare"
        assert (opened.manifest.handler, opened.manifest.serialized_file) == ("tensor", "model.onnx")
        assert opened.manifest.model_version == "1" and opened.config.single_input_any_name is True
    assert not (tmp_path / "cache").exists()  # nothing extracted: the files are used where they are
    (folder / "model.skops").write_bytes(b"")
    with pytest.raises(ArchiveError, match=r"several model files \(model.onnx, model.skops\)"):
        open_archive(folder, tmp_path / "cache", 1 << 20)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArchiveError, match=r"MANIFEST\.json is missing"):
        open_archive(empty, tmp_path / "cache", 1 << 20)
