"""Archives written by TorchServe's ``torch-model-archiver`` and MMS's ``model-archiver`` load and serve.

Both archivers install a top-level ``model_archiver`` package, so the test set-up installs each
into its own folder under ``.tools/`` (see scripts/test.sh).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dms.archive.writer import ArchiveSpec, write_archive
from tests.support import FIXTURES, REPO, DmsServer, running_server

TOOLS = Path(os.environ.get("DMS_TEST_TOOLS", REPO / ".tools"))


def tool_folder(tool: str) -> Path:
    """Where scripts/test.sh installed a peer archiver, or skip the test naming the missing folder."""
    folder = TOOLS / tool
    if not folder.is_dir():
        pytest.skip(f"needs {folder} (installed by scripts/test.sh), which is missing")
    return folder


def archiver(tool: str, *args: str, cwd: Path) -> None:
    folder = tool_folder(tool)
    command = folder / "bin" / ("torch-model-archiver" if tool == "torch-model-archiver" else "model-archiver")
    env = {**os.environ, "PYTHONPATH": str(folder)}
    done = subprocess.run(
        [sys.executable, str(command), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("peers")
    store = work / "model_store"
    store.mkdir()
    shutil.copy(FIXTURES / "probe_handler.py", work / "probe_handler.py")
    (work / "weights.json").write_text("{}")
    (work / "model-config.yaml").write_text("minWorkers: 1\nbatchSize: 4\nmaxBatchDelay: 20\nresponseTimeout: 30\n")
    common = ["--serialized-file", "weights.json", "--handler", "probe_handler.py", "--export-path", str(store)]
    archiver(
        "torch-model-archiver",
        "--model-name",
        "ts_zip",
        "--version",
        "2.0",
        *common,
        "--config-file",
        "model-config.yaml",
        cwd=work,
    )
    archiver(
        "torch-model-archiver",
        "--model-name",
        "ts_tgz",
        "--version",
        "2.0",
        *common,
        "--archive-format",
        "tgz",
        cwd=work,
    )
    archiver(
        "torch-model-archiver",
        "--model-name",
        "ts_folder",
        "--version",
        "2.0",
        *common,
        "--archive-format",
        "no-archive",
        cwd=work,
    )
    mms_model = work / "mms_model"
    mms_model.mkdir()
    shutil.copy(FIXTURES / "probe_handler.py", mms_model / "service.py")
    archiver(
        "mms-model-archiver",
        "--model-name",
        "mms_zip",
        "--model-path",
        str(mms_model),
        "--handler",
        "service:handle",
        "--runtime",
        "python",
        "--export-path",
        str(store),
        cwd=work,
    )
    for fmt in ("zip-store", "tgz", "no-archive"):
        spec = ArchiveSpec(
            model_name=f"dms_{fmt.replace('-', '_')}",
            version="3.0",
            handler=str(work / "probe_handler.py"),
            serialized_file=work / "weights.json",
        )
        write_archive(spec, store, fmt)  # type: ignore[arg-type]
    return store


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory):
    with running_server(
        tmp_path_factory.mktemp("peer-server"),
        ["--model-store", str(store), "--no-default-model", "--default-workers-per-model", "1"],
    ) as running:
        yield running


@pytest.mark.parametrize(
    ("url", "name", "version", "origin"),
    [
        ("ts_zip.mar", "ts_zip", "2.0", "torchserve"),
        ("ts_tgz.tar.gz", "ts_tgz", "2.0", "torchserve"),
        ("ts_folder", "ts_folder", "2.0", "torchserve"),
        ("mms_zip.mar", "mms_zip", "1.0", "mms"),
        ("dms_zip_store.mar", "dms_zip_store", "3.0", "dms"),
        ("dms_tgz.tar.gz", "dms_tgz", "3.0", "dms"),
        ("dms_no_archive", "dms_no_archive", "3.0", "dms"),
    ],
)
def test_archive_registers_and_serves(server: DmsServer, url: str, name: str, version: str, origin: str):
    registered = server.manage("POST", "/models", params={"url": url})
    assert registered.status_code == 200, registered.text
    [described] = server.describe(name)
    assert (described["modelVersion"], described["archiveFormat"]) == (version, origin)
    response = server.predict(name, {"echo": url})
    assert response.status_code == 200, response.text
    assert response.json()["echo"] == url and response.json()["model"] == name
    assert server.manage("DELETE", f"/models/{name}").status_code == 200


def test_torchserve_model_config_keys_are_understood(server: DmsServer):
    assert server.manage("POST", "/models", params={"url": "ts_zip.mar", "model_name": "ts_config"}).status_code == 200
    [described] = server.describe("ts_config")
    assert (
        described["minWorkers"],
        described["batchSize"],
        described["maxBatchDelay"],
        described["responseTimeout"],
    ) == (1, 4, 20, 30)
    server.manage("DELETE", "/models/ts_config")
